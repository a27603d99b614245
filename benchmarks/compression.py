"""Does compression keep what a domain-tuned teacher knows? On one domain (`--domain`: finance, the default, or
law), one shrunk student shape (a copy of the teacher with `--layers` of its decoder layers, made by kdagent's
shrink) trained four ways on exactly the same curated examples, each scored on the same held-out items as the
teacher:

- SFT alone (`update.method: sft`);
- distilled from the teacher's logit cache (`distill_cached`), once for each loss in `--losses`;
- distilled on-policy (`distill`, TRL's DistillationTrainer: the student samples, the teacher scores), unless
  `--no-on-policy`.

    .venv/bin/python benchmarks/compression.py --markdown docs/benchmarks.md            # the measurement
    .venv/bin/python benchmarks/compression.py --losses skew_kl forward_kl tvd --layers 20
    .venv/bin/python benchmarks/compression.py --quick --teacher smollm2-135m-instruct --json /tmp/c.json
    .venv/bin/python benchmarks/compression.py --tables-only --markdown docs/benchmarks.md
    .venv/bin/python benchmarks/compression.py --domain law --teacher runs/law/student --markdown docs/benchmarks.md

Every arm runs through kdagent itself (`kdagent run recipes/compress_<domain>.yaml`, each in its own process). One
preparing run (`update.method: none`) makes the tasks, the teacher's answers and the curated `sft.jsonl` once and
scores the untrained shrunk student; each arm starts from a copy of that run directory and resumes it with its
own `update.method`, so only the update and the evaluation run again and every arm trains on the same examples.
The teacher's logit cache is built once beforehand (content-addressed, kdagent/update/logit_cache.py), so each
cached arm trains with no teacher in memory, as it would with a cache another student left.

Per arm: macro-F1 with its bootstrap 95% interval, n, accuracy and the predicted labels' histogram; the update
stage's seconds and peak RSS (from the arm's `metrics.json`, measured by kdagent.memory in that process);
train tokens/s (the examples' tokens, prompt and completion, times the epochs, over the update's seconds less
the cache lookup); parameters and disk size; and tokens/s of greedy generation on the same held-out prompts,
every reply forced to `--speed-new-tokens` tokens so each model does the same work, measured in this process
against the teacher's (all models loaded side by side, measured in turn, `--speed-repeats` times, the best of
each). The targets of issue 26 are checked as booleans.

Writes `docs/results/compression.json` for finance, `docs/results/compression_<domain>.json` for another domain
(`--json`) and, with `--markdown`, the table between `<!-- compression -->` and `<!-- /compression -->`
(`<!-- compression-<domain> -->` for another domain), generated from that JSON; stdout holds the JSON.
"""

import argparse
import datetime
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from compression_tables import markdown, paired, summarise  # the sibling modules (benchmarks/ is on sys.path)
from distill_quality_tables import commit, machine, write_markdown

from kdagent.terminal import configure

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
# domain -> the shared-data folders its recipe reads
DOMAINS = {"finance": ["financial_phrasebank"], "law": ["legalbench_early", "sara_statutes"]}


def recipe_file(domain: str) -> Path:
    return REPO / "recipes" / f"compress_{domain}.yaml"


def default_json(domain: str) -> Path:
    return REPO / "docs" / "results" / ("compression.json" if domain == "finance" else f"compression_{domain}.json")


def table_marker(domain: str) -> str:
    """The markers of the domain's table in docs/benchmarks.md: `<!-- compression -->` for finance."""
    return "compression" if domain == "finance" else f"compression-{domain}"


LOSSES = ("forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl", "tvd")
# --quick: a smoke test (a handful of training examples, about 30 held-out items, one epoch, a tiny shrink)
QUICK = {
    "domain.seed_tasks": 6,
    "domain.eval_tasks": 30,
    "update.epochs": 1,
    "evaluation.unseen_phrasing": False,
    "retrieval.enabled": False,
    "skills.0.options.phrasings": 1,
}
QUICK_LAYERS = 4
# the on-policy arm: every completion sampled from the student (lmbda 1), as long as a label answer needs
LOSS = "update.options.distill_cached.loss"
ON_POLICY = {"update.distill.lmbda": 1.0, "update.distill.max_completion_length": 16}
# files of the preparing run that an arm must not inherit: its own update and evaluation write them
ARM_OWN = ("student", "student-*", "eval-predictions*.jsonl", "metrics.json", "update*.json", ".student.partial")


def _log(message: str) -> None:
    print(f"[compression] {message}", file=sys.stderr, flush=True)


def _value(v) -> str:
    return json.dumps(v) if isinstance(v, bool) else str(v)


def set_args(overrides: dict) -> list[str]:
    """Recipe overrides as `kdagent run --set` takes them."""
    return [f"{k}={_value(v)}" for k, v in overrides.items()]


def kdagent_run(recipe: Path, run_dir: Path, sets: list[str], resume: bool) -> dict:
    """`kdagent run` of the compression recipe in its own process (its log on our stderr); the run's metrics."""
    command = [sys.executable, "-c", "import sys; from kdagent.cli import main; sys.exit(main())", "run", str(recipe)]
    command += [x for s in sets for x in ("--set", s)] + ["--run-dir", str(run_dir)] + (["--resume"] if resume else [])
    done = subprocess.run(command, cwd=REPO, stdout=sys.stderr, stderr=sys.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"kdagent run exited {done.returncode}: {shlex.join(command)}")
    return json.loads((run_dir / "metrics.json").read_text())


def arm_dir(prepared: Path, dest: Path, recipe) -> Path:
    """A copy of the preparing run up to its curated records, with the arm's recipe, ready for `--resume`: the
    baseline, tasks, teacher answers, feedback and sft.jsonl are read back, the update and evaluation run."""
    from kdagent.recipe_io import recipe_to_yaml

    shutil.copytree(prepared, dest, ignore=shutil.ignore_patterns(".lock"))
    for folder in sorted(dest.glob("round-*")):
        for pattern in ARM_OWN:
            for path in folder.glob(pattern):
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    metrics = json.loads((dest / "metrics.json").read_text())
    (dest / "metrics.json").write_text(json.dumps({"baseline": metrics["baseline"], "rounds": []}, indent=2))
    (dest / "recipe.yaml").write_text(recipe_to_yaml(recipe))
    return dest


def scores(path: Path, resamples: int) -> dict:
    """n, accuracy, macro-F1 with its bootstrap 95% interval (`ci`), balanced accuracy and the label histograms;
    the same under the evaluation's reserved phrasing (`unseen_phrasing`) where those predictions exist."""
    from kdagent.evaluate.runner import choice_scores, intervals
    from kdagent.jsonl import read_jsonl

    rows = list(read_jsonl(path))
    out = {"n": len(rows), "accuracy": round(sum(bool(r["correct"]) for r in rows) / max(len(rows), 1), 4)}
    choice = [r for r in rows if r["kind"] == "choice"]
    if choice:
        out.update(choice_scores(choice))
    if rows:
        ci = intervals(rows, resamples)
        out["ci"] = ci.get("macro_f1", ci["accuracy"])
        out["accuracy_ci"] = ci["accuracy"]
    unseen = path.with_name(f"{path.stem}.unseen.jsonl")
    if unseen.exists():
        out["unseen_phrasing"] = scores(unseen, resamples)
    return out


def model_size(path: Path) -> dict:
    from kdagent.memory import param_count

    files = [p for p in Path(path).iterdir() if p.is_file()]
    return {
        "params": param_count(path),
        "disk_mb": round(sum(p.stat().st_size for p in files if p.suffix == ".safetensors") / 2**20, 1),
    }


def held_out(recipe, student: Path):
    """The run's skill and held-out tasks, chosen as `kdagent run` chooses them (the same items, the same order)."""
    from kdagent.evaluate.held_out import fitting_sets, held_out_sets
    from kdagent.plugins import build_plugins

    plugins = build_plugins()
    domain = plugins.instantiate("domains", recipe.domain.name, "domain.options", recipe.domain.options)
    skill = plugins.instantiate("skills", recipe.skills[0].name, "skills[0].options", recipe.skills[0].options)
    tasks, skill_sets = held_out_sets(recipe, plugins, domain, skill, [])
    tasks, _, _ = fitting_sets(recipe, skill, tasks, skill_sets, student)
    return skill, tasks


def curated_sequences(recipe, prepared: Path, student: Path) -> list:
    """The preparing run's curated examples as `distill_cached` tokenizes them ((token ids, completion start))."""
    from transformers import AutoTokenizer

    from kdagent.jsonl import read_jsonl
    from kdagent.records import SFTExample
    from kdagent.update.logit_cache import tokenize_examples

    examples = [e for f in sorted(prepared.glob("round-*/sft.jsonl")) for e in read_jsonl(f, SFTExample)]
    return tokenize_examples(
        AutoTokenizer.from_pretrained(student), [(e.prompt, e.completion) for e in examples], recipe.student.max_length
    )


def build_teacher_cache(recipe, sequences: list, teacher: Path, student: Path) -> dict:
    """The teacher's logit cache over the curated `sequences`, keyed as `distill_cached` keys it (so every cached
    arm finds it), and what it costs."""
    from kdagent.memory import peak_rss_mb, reset_peak_rss
    from kdagent.update.distill_cached import DistillCachedOptions
    from kdagent.update.logit_cache import build_cache

    options = DistillCachedOptions(**recipe.update.options.get("distill_cached", {}))
    reset_peak_rss()
    started = time.time()
    cache = build_cache(
        teacher,
        student,
        sequences,
        options.top_k,
        Path(options.cache_dir),
        chunk_size=options.chunk_size,
        batch_size=options.teacher_batch_size,
    )
    manifest = cache.manifest()
    return {
        "k": options.top_k,
        "bytes_per_token": manifest["bytes_per_token"],
        "completion_tokens": manifest["completion_tokens"],
        "sequences": len(sequences),
        "hit": cache.hit,  # found complete: `seconds` is then the lookup, not the build
        "seconds": round(time.time() - started, 1),
        "peak_rss_mb": peak_rss_mb(),
    }


def generation_speed(models: dict[str, Path], prompts: list, batch_size: int, new_tokens: int, repeats: int) -> dict:
    """Greedy tokens/s of each model on the same prompts, every reply exactly `new_tokens` long (end-of-sequence
    suppressed until then, so each model does the same work whatever it answers): transformers' `generate`, left
    padded, in batches of `batch_size`. All models are loaded side by side and measured in turn, the order
    rotating each round, the best of `repeats` rounds kept."""
    import torch

    from kdagent.generation.engine import load_causal_lm, pick_device

    device = pick_device()
    loaded = {name: load_causal_lm(path, device) for name, path in models.items()}
    tokenizer = next(iter(loaded.values()))[1]  # one vocabulary: the students are cut from the teacher
    tokenizer.padding_side = "left"
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    texts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
    batches = [
        tokenizer(texts[i : i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        for i in range(0, len(texts), batch_size)
    ]

    def timed(model, tokens: int, parts) -> dict:
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        new = 0
        with torch.no_grad():
            for batch in parts:
                out = model.generate(
                    **batch, do_sample=False, max_new_tokens=tokens, min_new_tokens=tokens, pad_token_id=pad
                )
                new += (out.shape[1] - batch["input_ids"].shape[1]) * out.shape[0]
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        return {"seconds": round(seconds, 2), "new_tokens": new, "tokens_per_s": round(new / seconds, 1)}

    for model, _ in loaded.values():  # warm-up: the first calls allocate and pick kernels
        timed(model, 2, batches[:1])
    runs: dict[str, list] = {name: [] for name in loaded}
    names = list(loaded)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            runs[name].append(timed(loaded[name][0], new_tokens, batches))
    return {name: max(measured, key=lambda m: m["tokens_per_s"]) for name, measured in runs.items()}


def arms_to_run(losses: list[str], on_policy: bool) -> dict[str, dict]:
    """Arm name -> its recipe overrides."""
    arms = {"sft": {"update.method": "sft"}}
    for loss in losses:
        arms[f"kd_{loss}"] = {"update.method": "distill_cached", LOSS: loss}
    if on_policy:
        arms["kd_on_policy"] = {"update.method": "distill", **ON_POLICY}
    return arms


def run_benchmark(args, work: Path) -> dict:
    from kdagent.models import resolve_model
    from kdagent.models.shrink import shrink
    from kdagent.recipe_io import load_recipe

    teacher = resolve_model(args.teacher)
    layers = args.layers if args.layers is not None else (QUICK_LAYERS if args.quick else 15)
    student = work / f"student-{layers}l"
    if not student.is_dir():
        _log(f"shrinking {teacher} to {layers} layers: {student}")
        shrink(teacher, student, layers)
    common = {
        "student.model": student,
        "teacher.model": teacher,
        "domain.options.data_dir": args.data.resolve(),
        "evaluation.bootstrap": args.bootstrap,
        "update.options.distill_cached.cache_dir": work / "logit-cache",
        **(QUICK if args.quick else {}),
    }
    sets = set_args(common) + args.sets
    recipe_path = recipe_file(args.domain)
    recipe = load_recipe(recipe_path, sets)

    prepared = work / "prepare"
    _log(f"preparing: tasks, the teacher's answers and the curated examples once ({prepared})")
    if not (prepared / "metrics.json").exists() or not json.loads((prepared / "metrics.json").read_text())["rounds"]:
        kdagent_run(recipe_path, prepared, sets + ["update.method=none"], resume=prepared.exists())
    sequences = curated_sequences(recipe, prepared, student)
    cache = build_teacher_cache(recipe, sequences, teacher, student) if args.losses else None
    if cache:
        _log(f"teacher cache: {cache['bytes_per_token']} bytes a token at k = {cache['k']}, {cache['seconds']} s")

    skill, tasks = held_out(recipe, student)
    _log(f"teacher: evaluating {teacher} on the {len(tasks)} held-out tasks")
    from kdagent.evaluate.held_out import evaluate_sets

    teacher_file = work / "teacher-predictions.jsonl"
    if not teacher_file.exists():
        evaluate_sets(teacher, tasks, skill, {}, recipe, teacher_file, "teacher: evaluate")
    arms: dict[str, dict] = {
        "teacher": {"model": str(teacher), **scores(teacher_file, args.bootstrap), **model_size(teacher)},
        "shrunk_untrained": {
            "model": str(student),
            **scores(prepared / "baseline-predictions.jsonl", args.bootstrap),
            **model_size(student),
        },
    }
    epochs = recipe.update.epochs
    train_tokens = sum(len(ids) for ids, _ in sequences) * epochs  # prompt and completion tokens, every epoch
    for name, overrides in arms_to_run(args.losses, not args.no_on_policy).items():
        run_dir = work / name
        arm_sets = sets + set_args(overrides)
        if not (run_dir / "metrics.json").exists() or not json.loads((run_dir / "metrics.json").read_text())["rounds"]:
            if not run_dir.exists():
                arm_dir(prepared, run_dir, load_recipe(recipe_path, arm_sets))
            _log(f"arm {name}: {' '.join(set_args(overrides))}")
            kdagent_run(recipe_path, run_dir, arm_sets, resume=True)
        entry = json.loads((run_dir / "metrics.json").read_text())["rounds"][0]
        report = entry["update"]
        update_s = entry["seconds"]["update"]
        lookup_s = report.get("cache", {}).get("seconds", 0.0)  # a cache hit: hashing the teacher and the data
        train_s = max(update_s - lookup_s, 1e-9)
        result = {
            "method": overrides["update.method"],
            **({"loss": overrides[LOSS]} if LOSS in overrides else {}),
            "model": str(run_dir / "round-01" / "student"),
            **scores(run_dir / "round-01" / "eval-predictions.jsonl", args.bootstrap),
            **model_size(run_dir / "round-01" / "student"),
            "examples": report.get("examples"),
            "steps": report.get("steps"),
            "train_loss": report.get("train_loss"),
            "update_seconds": update_s,
            "train_seconds": round(train_s, 1),
            "peak_rss_mb": entry["peak_rss_mb"]["update"],
            "gate_passed": entry.get("gate", {}).get("passed", True),  # the loop's gate; scored here either way
        }
        result["train_tokens"] = train_tokens
        result["train_tokens_per_s"] = round(train_tokens / train_s, 1)
        if "cache" in report:
            result["cache_hit"] = report["cache"]["hit"]
        if name == "kd_on_policy":
            result["trainer"], result["lmbda"] = report.get("trainer"), report.get("lmbda")
        arms[name] = result

    predictions = lambda name: work / name / "round-01" / "eval-predictions.jsonl"  # noqa: E731
    for name in [n for n in arms if n.startswith("kd_")]:  # the same items: paired intervals, not two apart
        arms[name]["minus_sft"] = paired(predictions(name), predictions("sft"), args.bootstrap)
        arms[name]["share_of_teacher"] = paired(predictions(name), teacher_file, args.bootstrap, ratio=True)

    prompts = [skill.messages(t) for t in tasks[: args.speed_prompts]]
    _log(f"greedy generation speed on {len(prompts)} held-out prompts, {args.speed_new_tokens} new tokens each")
    speed = generation_speed(
        {name: Path(a["model"]) for name, a in arms.items() if name != "shrunk_untrained"},
        prompts,
        recipe.evaluation.batch_size,
        args.speed_new_tokens,
        args.speed_repeats,
    )
    for name, measured in speed.items():
        arms[name]["tokens_per_s"] = measured["tokens_per_s"]
        arms[name]["generation"] = measured
        if name != "teacher":
            arms[name]["speedup"] = round(measured["tokens_per_s"] / speed["teacher"]["tokens_per_s"], 2)
    return {
        "layers": layers,
        "teacher_layers": json.loads((student / "kdagent-shrink.json").read_text())["source_layers"],
        "epochs": epochs,
        "cache": cache,
        "arms": arms,
        "speed": {"prompts": len(prompts), "max_new_tokens": args.speed_new_tokens, "repeats": args.speed_repeats},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--teacher",
        default=None,
        help="the domain-tuned teacher: a local model folder or an alias (default runs/<domain>/student)",
    )
    parser.add_argument("--domain", choices=sorted(DOMAINS), default="finance", help="recipes/compress_<domain>.yaml")
    parser.add_argument("--layers", type=int, default=None, help="decoder layers the student keeps (default 15)")
    parser.add_argument(
        "--losses",
        nargs="*",
        choices=LOSSES,
        default=["skew_kl"],
        help="one distill_cached arm for each of these losses (none: no cached arm)",
    )
    parser.add_argument("--no-on-policy", action="store_true", help="leave out the on-policy (`distill`) arm")
    parser.add_argument("--quick", action="store_true", help="a smoke test: a handful of examples, ~30 held out")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--work", type=Path, default=None, help="keep the run directories here (default: temporary)")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="a further recipe override for every arm (as kdagent run --set takes it)",
    )
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    parser.add_argument("--speed-prompts", type=int, default=None, help="held-out prompts timed (default 64; 8 quick)")
    parser.add_argument("--speed-new-tokens", type=int, default=32, help="new tokens at most per greedy reply")
    parser.add_argument("--speed-repeats", type=int, default=None, help="timed rounds, best kept (default 3; 1 quick)")
    parser.add_argument(
        "--json", type=Path, default=None, help="the results file (default docs/results/compression[_<domain>].json)"
    )
    parser.add_argument("--markdown", type=Path, default=None, help="write the table into this Markdown file")
    parser.add_argument("--tables-only", action="store_true", help="run nothing: write --markdown from the --json file")
    args = parser.parse_args(argv)
    configure()  # as `kdagent run` does: bars only on a terminal, none in a log file
    args.json = args.json or default_json(args.domain)
    args.teacher = args.teacher or f"runs/{args.domain}/student"
    title = "Compression" + ("" if args.domain == "finance" else f" ({args.domain})")
    if args.tables_only:
        if args.markdown:
            write_markdown(args.markdown, markdown(json.loads(args.json.read_text())), table_marker(args.domain), title)
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from kdagent.errors import UserError

    if not args.data.is_dir() or not all((args.data / d).exists() for d in DOMAINS[args.domain]):
        print(f"compression: the {args.domain} data in {args.data} is absent; nothing to run", file=sys.stderr)
        return 2
    teacher_path = Path(args.teacher)
    if not teacher_path.is_absolute() and (REPO / teacher_path).exists():
        args.teacher = str(REPO / teacher_path)
    args.speed_prompts = args.speed_prompts or (8 if args.quick else 64)
    args.speed_repeats = args.speed_repeats or (1 if args.quick else 3)
    command = (
        "python benchmarks/compression.py "
        + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    ).strip()
    with tempfile.TemporaryDirectory(prefix="kdagent-compression-") as tmp:
        work = (args.work or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        try:
            measured = run_benchmark(args, work)
        except UserError as exc:  # a teacher, data folder or override that is wrong: one line
            print(f"compression: {exc}", file=sys.stderr)
            return 2
    results = {
        "benchmark": "compression",
        "commit": commit(),
        "machine": machine(),
        "date": datetime.date.today().isoformat(),
        "command": command,
        "quick": args.quick,
        "domain": args.domain,
        "recipe": str(recipe_file(args.domain).relative_to(REPO)),
        "teacher_model": args.teacher,
        **summarise(measured),
        **measured,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    if args.markdown:
        write_markdown(args.markdown, markdown(results), table_marker(args.domain), title)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
