"""Does distillation make the student better than the simplest alternative? Each shipped domain's default
recipe, run by kdagent, against plain TRL SFT on exactly the labelled examples the recipe had: the same
tasks, each taught its reference answer (the label, or the worked solution) once, in the evaluation's own
prompt, at the same learning rate, epochs, batch size and precision, TRL's defaults otherwise. All three
students (the base, plain SFT, kdagent's) are scored on the same held-out tasks, disjoint from every
training item, under the training phrasing and, for choice tasks, under a phrasing that no training
example used.

    .venv/bin/python benchmarks/distill_quality.py --budget medium --domain finance   # one domain, merged into the JSON
    .venv/bin/python benchmarks/distill_quality.py --budget small                      # every domain, a cut of each recipe

Writes `docs/results/distill_quality.json` (`--json`; with `--domain`, the domain's entry is merged into
the file) and the table in `docs/benchmarks.md` (`--markdown`) between `<!-- distill_quality -->` and
`<!-- /distill_quality -->`, generated from that JSON; stdout holds the JSON of this run. Every score comes
with its n, a bootstrap 95% interval and, for choice tasks, macro-F1, balanced accuracy and the histogram
of predicted labels. The data comes from the shared data folder (`--data`, default ../shared/data beside
the repository); a domain whose files are absent is skipped with a message.
"""

import argparse
import contextlib
import datetime
import json
import os
import shlex
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from distill_quality_tables import commit, machine, markdown, summary, write_markdown  # benchmarks/ is on sys.path

from kdagent.terminal import configure

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
DEFAULT_JSON = REPO / "docs" / "results" / "distill_quality.json"

# domain -> (recipe file, the data it needs, {entry in the JSON: task-id prefix of its held-out items, "" for all})
DOMAINS = {
    "finance": ("recipes/finance.yaml", ["financial_phrasebank"], {"finance": ""}),
    # 500 gold labels, the other sentences unlabelled: plain SFT gets the 500 (the only tasks with a reference)
    "finance_500_labels": (
        "recipes/finance_500_labels.yaml",
        ["financial_phrasebank"],
        {"finance_500_labels": ""},
    ),
    # every label of the training split: plain SFT gets them all for two epochs (SFT_ARM), the reference
    "finance_all_labels": (
        "recipes/finance_all_labels.yaml",
        ["financial_phrasebank"],
        {"finance_all_labels": ""},
    ),
    "medicine": ("recipes/medicine.yaml", ["pubmedqa"], {"medicine": ""}),
    "law": ("recipes/law.yaml", ["legalbench_early", "sara_statutes"], {"law": ""}),
    "math": ("recipes/math_tool_use.yaml", ["gsm8k", "svamp"], {"math_svamp": "svamp-", "math_gsm8k": "gsm8k-"}),
}
# domain -> plain SFT settings that differ from the recipe's: with every label the user's alternative is SFT on
# them all for two epochs, whatever the recipe does to train faster
SFT_ARM = {"finance_all_labels": {"epochs": 2}}
# domains that a budget without --domain skips: at the small budget's 48 labels, "every label" is `finance` again
MEDIUM_ONLY = {"finance_all_labels"}
# domain -> {entry: domain options}: held-out tasks of a kind the recipe never trains on, scored the same way
UNSEEN_TASKS = {
    "law": {
        "law_unseen_tasks": {
            "tasks": ["CUAD_Non-Disparagement", "CUAD_Third_Party_Beneficiary", "personal_jurisdiction", "diversity_6"]
        }
    }
}
# budget -> overrides (dotted paths, as `kdagent run --set` takes them). Medium is each recipe as shipped.
BUDGETS = {
    "small": {
        "domain.seed_tasks": 48,
        "domain.eval_tasks": 60,
        "loop.rounds": 1,
        "update.epochs": 1,
        "evaluation.skill_tasks": 0,
    },
    "medium": {"evaluation.skill_tasks": 0},
}
ALWAYS = {"evaluation.unseen_phrasing": True}


def scores(rows: list[dict], resamples: int) -> dict:
    """n, accuracy and (choice tasks) macro-F1, balanced accuracy and the predicted labels' histogram, with
    bootstrap 95% intervals, of evaluation predictions."""
    from kdagent.evaluate.runner import choice_scores, intervals

    out: dict = {"n": len(rows), "accuracy": round(sum(bool(r["correct"]) for r in rows) / max(len(rows), 1), 4)}
    choice = [r for r in rows if r["kind"] == "choice"]
    if choice:
        out.update(choice_scores(choice))
    elif rows:
        out["histogram"] = dict(
            Counter(str(r["predicted"]) for r in rows).most_common(5)
        )  # the commonest numeric answers
    if rows:
        out["ci"] = intervals(rows, resamples)
    return out


def by_source(rows: list[dict], sources: dict[str, str]) -> dict:
    """Scores per source (a LegalBench task, a dataset) of choice predictions, and the mean balanced accuracy."""
    from kdagent.evaluate.runner import choice_scores

    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(sources.get(r["id"], "?"), []).append(r)
    if len(groups) < 2 or any(r["kind"] != "choice" for r in rows):
        return {}
    parts = {}
    for k, v in sorted(groups.items()):
        scored = choice_scores(v)
        parts[k] = {
            "n": len(v),
            "accuracy": round(sum(bool(r["correct"]) for r in v) / len(v), 4),
            "balanced_accuracy": scored["balanced_accuracy"],
            "histogram": scored["histogram"],
        }
    return {
        "by_source": parts,
        "mean_balanced_accuracy": round(sum(p["balanced_accuracy"] for p in parts.values()) / len(parts), 4),
    }


def predictions(path: Path, prefix: str) -> list[dict]:
    from kdagent.jsonl import read_jsonl

    return [r for r in read_jsonl(path) if r["id"].startswith(prefix)] if path.exists() else []


def labelled_sft(
    recipe, run_dir: Path, skill, work: Path, epochs: int | None = None, reuse: bool = False
) -> tuple[Path, dict]:
    """Plain TRL SFT, the user's alternative: every task the kdagent run trained on (all rounds) that has a
    reference, taught that reference once (`skill.reference_trajectory`: the label, or the worked solution
    with its tool calls) in the evaluation's own prompt; no sampling, checking, balancing or rephrasing.
    `epochs` replaces the recipe's (SFT_ARM). With `reuse`, a student that `work` already holds, trained on
    the same examples with the same settings (`training.json`), is taken as it is (its entry says `reused`)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from kdagent.jsonl import read_jsonl
    from kdagent.models import resolve_model
    from kdagent.records import Task, stable_id
    from kdagent.update.common import cpu_bf16

    tasks: dict[str, Task] = {}
    for folder in sorted(run_dir.glob("round-*")):
        tasks.update(
            {t.id: t for t in read_jsonl(folder / "tasks.jsonl", Task)} if (folder / "tasks.jsonl").exists() else {}
        )
    rows = []
    for task in tasks.values():
        reference = skill.reference_trajectory(task) if task.answer else None
        if reference:
            rows.append({"prompt": skill.messages(task), "completion": reference})
    base = resolve_model(recipe.student.model)
    epochs = epochs or recipe.update.epochs
    settings = [str(base), epochs, recipe.update.learning_rate, recipe.update.batch_size, recipe.student.max_length]
    key = stable_id(json.dumps([rows, settings], sort_keys=True, default=str))
    out, saved = work / "student", work / "training.json"
    if reuse and saved.exists() and out.exists() and json.loads(saved.read_text()).get("key") == key:
        return out, {
            **{k: v for k, v in json.loads(saved.read_text()).items() if k not in ("key", "seconds")},
            "reused": True,
        }
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    cuda = torch.cuda.is_available()
    args = SFTConfig(
        output_dir=str(work / "trainer"),
        learning_rate=recipe.update.learning_rate,
        num_train_epochs=epochs,
        per_device_train_batch_size=recipe.update.batch_size,
        max_length=recipe.student.max_length,
        report_to=[],
        save_strategy="no",
        logging_steps=10,
        seed=recipe.seed,
        bf16=cuda or cpu_bf16(),
        use_cpu=not cuda,
    )  # kdagent's precision
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    started = time.time()
    result = trainer.train()
    seconds = round(time.time() - started, 1)
    trainer.model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    labels = Counter(t.answer for t in tasks.values() if t.kind == "choice" and t.answer)
    training = {
        "examples": len(rows),
        "steps": trainer.state.global_step,
        "train_loss": round(result.training_loss, 4),
        "train_seconds": seconds,
        "epochs": epochs,
        **({"labels": dict(sorted(labels.items()))} if labels else {}),
    }
    saved.write_text(json.dumps({**training, "key": key}))
    return out, training


def run_domain(
    name: str, budget: str, data: Path, work: Path, extra: list[str], resamples: int, resume: bool = False
) -> dict:
    """Every JSON entry of one domain (math gives two: SVAMP and GSM8K test). With `resume`, a kdagent run
    that a kill left in `work` continues where it stopped (its seconds then count only the part run here)."""
    from kdagent.evaluate.held_out import _evaluate, _fitting_eval_tasks, _load_eval_tasks
    from kdagent.loop.runner import run_recipe
    from kdagent.models import resolve_model
    from kdagent.plugins import build_plugins
    from kdagent.recipe_io import load_recipe

    recipe_file, needs, entries = DOMAINS[name]
    missing = [d for d in needs if not (data / d).exists()]
    if missing:
        return {entry: {"skipped": f"data folder {data / missing[0]} is absent"} for entry in entries}
    overrides = {**BUDGETS[budget], **ALWAYS, "evaluation.bootstrap": resamples}
    sets = [f"{k}={json.dumps(v) if isinstance(v, bool) else v}" for k, v in overrides.items()] + [
        f"domain.options.data_dir={data}",
        *extra,
    ]
    recipe = load_recipe(REPO / recipe_file, sets)
    plugins = build_plugins()
    run_dir = work / "run"
    resumed = resume and (run_dir / "recipe.yaml").exists()
    started = time.time()
    metrics = run_recipe(recipe, run_dir, plugins, resume=resumed)
    kd_seconds = round(time.time() - started, 1)

    domain = plugins.instantiate("domains", recipe.domain.name, "domain.options", recipe.domain.options)
    skill = plugins.instantiate("skills", recipe.skills[0].name, "skills[0].options", recipe.skills[0].options)
    started = time.time()
    sft_student, training = labelled_sft(recipe, run_dir, skill, work / "sft", **SFT_ARM.get(name, {}), reuse=resume)
    eval_tasks, _ = _fitting_eval_tasks(
        recipe, skill, _load_eval_tasks(recipe, domain, []), resolve_model(recipe.student.model)
    )  # as the run's
    unseen = work / "sft-predictions.unseen.jsonl"
    scored = (work / "sft-predictions.jsonl").exists() and (unseen.exists() or not recipe.evaluation.unseen_phrasing)
    if not (training.get("reused") and scored):
        _evaluate(sft_student, eval_tasks, skill, {}, recipe, work / "sft-predictions.jsonl", "plain SFT: evaluate")
    sft_seconds = round(time.time() - started, 1)
    saved = work / "sft" / "training.json"
    if training.get("reused"):  # the seconds of the run that trained and scored it
        sft_seconds = json.loads(saved.read_text()).get("seconds", sft_seconds)
    elif saved.exists():
        saved.write_text(json.dumps({**json.loads(saved.read_text()), "seconds": sft_seconds}))

    rounds = metrics["rounds"]
    kept = [e for e in rounds if e.get("gate", {}).get("passed", True)]
    last = kept[-1]["round"] if kept else None  # the student kdagent hands over: the last round the gate kept
    files = {
        "base": run_dir / "baseline-predictions.jsonl",
        "sft": work / "sft-predictions.jsonl",
        "kdagent": (run_dir / f"round-{last:02d}" / "eval-predictions.jsonl")
        if last
        else run_dir / "baseline-predictions.jsonl",
    }
    sources = {t.id: str(getattr(t, "source", "") or "") for t in eval_tasks}
    out = {}
    for entry, options in UNSEEN_TASKS.get(name, {}).items():  # tasks of kinds never trained on, held-out items only
        other = plugins.instantiate(
            "domains", recipe.domain.name, "domain.options", {**recipe.domain.options, **options}
        )
        tasks, _ = _fitting_eval_tasks(
            recipe, skill, other.eval_tasks(recipe.domain.eval_tasks), resolve_model(recipe.student.model)
        )
        plain = recipe.model_copy(
            update={"evaluation": recipe.evaluation.model_copy(update={"unseen_phrasing": False})}
        )
        result = {"recipe": recipe_file, "kdagent_round": last, "tasks": options}
        for who in files:
            model = {"base": resolve_model(recipe.student.model), "sft": sft_student}.get(who) or (
                run_dir / f"round-{last:02d}" / "student" if last else resolve_model(recipe.student.model)
            )
            _evaluate(model, tasks, skill, {}, plain, work / f"{entry}-{who}.jsonl", f"{entry}: {who}")
            rows = predictions(work / f"{entry}-{who}.jsonl", "")
            result[who] = {
                **scores(rows, resamples),
                **by_source(rows, {t.id: str(getattr(t, "source", "")) for t in tasks}),
            }
        result["n"], result["metric"] = result["base"]["n"], "balanced_accuracy"
        out[entry] = result
    for entry, prefix in entries.items():
        result: dict = {"recipe": recipe_file, "kdagent_round": last}
        for who, path in files.items():
            rows = predictions(path, prefix)
            result[who] = {**scores(rows, resamples), **by_source(rows, sources)}
            unseen = predictions(path.with_name(f"{path.stem}.unseen.jsonl"), prefix)
            if unseen:
                result[f"{who}_unseen_phrasing"] = scores(unseen, resamples)
        result["n"] = result["base"]["n"]
        result["metric"] = "macro_f1" if "macro_f1" in result["base"] else "accuracy"
        result["rounds"] = [
            {
                "round": e["round"],
                "kept": e.get("gate", {}).get("passed", True),
                "sft_examples": e["counts"].get("sft_examples"),
                **{
                    k: scores(
                        predictions(run_dir / f"round-{e['round']:02d}" / "eval-predictions.jsonl", prefix), 0
                    ).get(k)
                    for k in ("accuracy", "macro_f1", "histogram")
                },
            }
            for e in rounds
        ]
        result["sft"].update(training)
        if result["metric"] == "macro_f1" and not prefix:  # the same items: a paired interval, not two apart
            from compression_tables import paired  # benchmarks/ is on sys.path

            result["kdagent_minus_sft"] = paired(files["kdagent"], files["sft"], resamples)
        if "unseen_phrasing" in (metrics["baseline"] or {}) and result.get("kdagent_unseen_phrasing"):
            m = result["metric"]
            result["gain"] = {
                "training_phrasing": round(result["kdagent"][m] - result["base"][m], 4),
                "unseen_phrasing": round(result["kdagent_unseen_phrasing"][m] - result["base_unseen_phrasing"][m], 4),
            }
        result["seconds"] = {
            **({"resumed": True} if resumed else {}),  # kdagent's seconds count only this process's part
            "kdagent": kd_seconds,
            "kdagent_update": round(sum(e["seconds"].get("update", 0) for e in rounds), 1),
            "sft": sft_seconds,
            "sft_train": training["train_seconds"],
        }
        result["seconds"]["update_over_sft_train"] = round(
            result["seconds"]["kdagent_update"] / max(training["train_seconds"], 1e-9), 3
        )
        out[entry] = result
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="small")
    parser.add_argument(
        "--domain",
        action="append",
        choices=sorted(DOMAINS),
        help="run only these domains (repeatable); their entries are merged into --json",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument(
        "--work", type=Path, default=None, help="keep the run directories here (default: a temporary folder)"
    )
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="a further recipe override for every domain (as kdagent run --set takes it)",
    )
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue a killed kdagent run left under --work (the entry's seconds then say `resumed`), and take a plain SFT "
        "student it holds that was trained on the same examples with the same settings (`sft.reused`)",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="the results file (merged by domain entry)")
    parser.add_argument("--markdown", type=Path, default=None, help="write the table into this Markdown file")
    parser.add_argument(
        "--readme",
        type=Path,
        default=None,
        help="write the summary table into this file between <!-- results --> markers",
    )
    parser.add_argument(
        "--tables-only", action="store_true", help="run nothing: write --markdown and --readme from the --json file"
    )
    args = parser.parse_args(argv)
    configure()  # as `kdagent run` does: bars only on a terminal, none in a log file
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if not args.data.is_dir():
        print(f"distill_quality: data folder {args.data} is absent; nothing to run", file=sys.stderr)
        return 2
    if args.tables_only:
        results = json.loads(args.json.read_text())
        if args.markdown:
            write_markdown(args.markdown, markdown(results))
        if args.readme:
            write_markdown(args.readme, summary(results), "results")
        return 0
    names = args.domain or [d for d in DOMAINS if args.budget == "medium" or d not in MEDIUM_ONLY]
    command = (
        "python benchmarks/distill_quality.py "
        + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    ).strip()
    previous = json.loads(args.json.read_text()) if args.json.exists() else {}
    if previous.get("budget") not in (None, args.budget):
        previous = {}  # entries of another budget are not merged
    results = {
        "benchmark": "distill_quality",
        "commit": commit(),
        "machine": machine(),
        "date": datetime.date.today().isoformat(),
        "budget": args.budget,
        "command": command,
        "domains": dict(previous.get("domains", {})),
    }
    this_run = {}
    with tempfile.TemporaryDirectory(prefix="kdagent-bench-") as tmp:
        root = args.work or Path(tmp)
        for name in names:
            print(f"[distill_quality] {name} ({args.budget})", file=sys.stderr, flush=True)
            with contextlib.redirect_stdout(sys.stderr):  # the Trainer's log lines: stdout holds only the JSON
                entries = run_domain(
                    name, args.budget, args.data.resolve(), root / name, args.sets, args.bootstrap, args.resume
                )
            for result in entries.values():
                result["command"], result["commit"], result["date"] = command, results["commit"], results["date"]
            this_run.update(entries)
            results["domains"].update(entries)
            args.json.parent.mkdir(
                parents=True, exist_ok=True
            )  # after each domain, so an interrupted run keeps the finished ones
            args.json.write_text(json.dumps(results, indent=1) + "\n")
            if args.markdown:
                write_markdown(args.markdown, markdown(results))
            if args.readme:
                write_markdown(args.readme, summary(results), "results")
    print(json.dumps({**results, "domains": this_run}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
