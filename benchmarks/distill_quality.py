"""Does distillation make the student better? Fixed-budget kdagent runs on real data, each compared in the
same run with a baseline: TRL's SFTTrainer on the same raw teacher samples (every generation the kdagent
run drew, as the teacher wrote it), with no feedback, no curation and no loop, at the same learning rate,
epochs, batch size and precision (bf16 autocast on a GPU and on CPUs with bf16 instructions, as kdagent's
updaters train), TRL's defaults otherwise, evaluated on the same held-out tasks with the same prompts.

    .venv/bin/python benchmarks/distill_quality.py --budget small            # 11-21 min on 2 CPU cores (all five)
    .venv/bin/python benchmarks/distill_quality.py --budget full --only law  # for a GPU
    .venv/bin/python benchmarks/distill_quality.py --only math-cot --markdown docs/benchmarks.md

Prints one JSON object: for each benchmark the student's score before, after each round and for the
baseline, with the counts and seconds. `--markdown FILE` also writes the table into FILE between the
markers `<!-- distill_quality -->` and `<!-- /distill_quality -->` (with the command, machine and date).
The data comes from the shared data folder (`--data`, default ../shared/data beside the repository); a
benchmark whose files are absent is skipped with a message.
"""

import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"

# name -> (recipe file, overrides every budget shares, the data it needs)
BENCHMARKS = {
    "math-cot": ("recipes/math_cot.yaml", {}, ["gsm8k", "svamp"]),
    "math-tool_use": ("recipes/math_tool_use.yaml", {}, ["gsm8k", "svamp"]),
    "medicine": ("recipes/medicine.yaml", {}, ["pubmedqa"]),
    "law": ("recipes/law.yaml", {}, ["legalbench_early", "sara_statutes"]),
    "finance": ("recipes/finance.yaml", {}, ["financial_phrasebank"]),
}
# budget -> overrides (dotted paths, as `kdagent run --set` takes them). The scores are the domain's held-out
# benchmarks, so the skills' own held-out sets are not scored (evaluation.skill_tasks=0).
BUDGETS = {
    "small": {"domain.seed_tasks": 16, "domain.eval_tasks": 30, "loop.rounds": 1, "update.epochs": 1, "evaluation.skill_tasks": 0},
    "full": {"domain.seed_tasks": 400, "domain.eval_tasks": 300, "loop.rounds": 2, "teacher.batch_size": 64,
             "evaluation.batch_size": 64, "evaluation.skill_tasks": 0},
}


def _score(entry: dict) -> dict:
    keep = ("n", "accuracy", "macro_f1")
    out = {k: entry[k] for k in keep if k in entry}
    if "without_tools" in entry:
        out["without_tools"] = entry["without_tools"]["accuracy"]
    return out


def _generations(run_dir: Path, rounds: int) -> tuple[list, dict]:
    """Every generation of the run's rounds, and the tasks they answer (by id)."""
    from kdagent.jsonl import read_jsonl
    from kdagent.records import Generation, Task

    generations, tasks = [], {}
    for r in range(1, rounds + 1):
        folder = run_dir / f"round-{r:02d}"
        if (folder / "generations.jsonl").exists():
            generations += read_jsonl(folder / "generations.jsonl", Generation)
            tasks.update({t.id: t for t in read_jsonl(folder / "tasks.jsonl", Task)})
    return generations, tasks


def baseline_sft(recipe, generations: list, tasks_by_id: dict, skill, work: Path) -> tuple[Path, dict]:
    """TRL SFT on every raw teacher sample: the prompt the student sees (the skill's, without passages)
    and the teacher's reply (its trajectory, with tools) as written, unchecked and uncurated."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from kdagent.models import resolve_model
    from kdagent.update.common import cpu_bf16

    rows = []
    for g in generations:
        if not g.text.strip() and not g.trajectory:
            continue  # nothing to learn from an empty reply
        completion = g.trajectory or [{"role": "assistant", "content": g.text}]
        rows.append({"prompt": skill.messages(tasks_by_id[g.task_id]), "completion": completion})
    base = resolve_model(recipe.student.model)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    cuda = torch.cuda.is_available()
    args = SFTConfig(output_dir=str(work / "trainer"), learning_rate=recipe.update.learning_rate,
                     num_train_epochs=recipe.update.epochs, per_device_train_batch_size=recipe.update.batch_size,
                     max_length=recipe.student.max_length, report_to=[], save_strategy="no", logging_steps=1,
                     seed=recipe.seed, bf16=cuda or cpu_bf16(), use_cpu=not cuda)  # kdagent's precision
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    result = trainer.train()
    out = work / "student"
    trainer.model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out, {"examples": len(rows), "steps": trainer.state.global_step, "train_loss": round(result.training_loss, 4)}


def run_one(name: str, budget: str, data: Path, work: Path, extra: list[str]) -> dict:
    from kdagent.loop.runner import _evaluate, _fitting_eval_tasks, _load_eval_tasks, run_recipe
    from kdagent.models import resolve_model
    from kdagent.plugins import build_plugins
    from kdagent.recipe import load_recipe

    recipe_file, fixed, needs = BENCHMARKS[name]
    missing = [d for d in needs if not (data / d).exists()]
    if missing:
        return {"skipped": f"data folder {data / missing[0]} is absent"}
    sets = [f"{k}={v}" for k, v in {**fixed, **BUDGETS[budget]}.items()] + [f"domain.options.data_dir={data}", *extra]
    recipe = load_recipe(REPO / recipe_file, sets)
    plugins = build_plugins()
    started = time.time()
    metrics = run_recipe(recipe, work / "run", plugins)
    kd_seconds = round(time.time() - started, 1)

    domain = plugins.instantiate("domains", recipe.domain.name, "domain.options", recipe.domain.options)
    skill = plugins.instantiate("skills", recipe.skills[0].name, "skills[0].options", recipe.skills[0].options)
    generations, tasks_by_id = _generations(work / "run", recipe.loop.rounds)
    started = time.time()
    student, training = baseline_sft(recipe, generations, tasks_by_id, skill, work / "baseline")
    eval_tasks, _ = _fitting_eval_tasks(recipe, skill, _load_eval_tasks(recipe, domain, []), resolve_model(recipe.student.model))  # as the run's
    score = _evaluate(student, eval_tasks, skill, {}, recipe, work / "baseline-predictions.jsonl", "baseline SFT: evaluate")
    rounds = metrics["rounds"]
    return {
        "recipe": recipe_file, "domain": recipe.domain.name, "skill": recipe.skills[0].name, "teacher": recipe.teacher.kind,
        "before": _score(metrics["baseline"]),
        "rounds": [{"round": e["round"], **_score(e["eval"]), "kept": e.get("gate", {}).get("passed", True),
                    "sft_examples": e["counts"].get("sft_examples"), "generations": e["counts"].get("generations")} for e in rounds],
        "after": _score(next((e["eval"] for e in reversed(rounds) if e.get("gate", {}).get("passed", True)), metrics["baseline"])),
        "baseline_trl_sft": {**_score(score), **training},
        "seconds": {"kdagent": kd_seconds, "baseline": round(time.time() - started, 1)},
    }


def markdown(results: dict, command: str, machine: str) -> str:
    lines = [f"Command: `{command}`  ", f"Machine: {machine}  ", f"Date: {datetime.date.today().isoformat()}", "",
             "| benchmark | recipe | held-out n | before | kdagent after (per round) | TRL SFT on raw samples | kdagent s | baseline s |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        if "skipped" in r:
            lines.append(f"| {name} | skipped: {r['skipped']} | | | | | | |")
            continue

        def fmt(s):
            text = f"{s['accuracy']:.3f}"
            return text + (f" (no tools {s['without_tools']:.3f})" if "without_tools" in s else "")

        per_round = ", ".join(fmt(e) + ("" if e["kept"] else " gated") for e in r["rounds"])
        lines.append(f"| {name} | `{r['recipe']}` | {r['before']['n']} | {fmt(r['before'])} | {fmt(r['after'])} ({per_round}) | "
                     f"{fmt(r['baseline_trl_sft'])} | {r['seconds']['kdagent']} | {r['seconds']['baseline']} |")
    return "\n".join(lines)


def write_markdown(path: Path, table: str) -> None:
    start, end = "<!-- distill_quality -->", "<!-- /distill_quality -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{start}\n{table}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n## Distillation quality\n\n" + block + "\n"
    path.write_text(text)


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    cpu = platform.processor() or "CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} CPU cores, {cpu} (torch {torch.__version__})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="small")
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS), help="run only these (repeatable)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--work", type=Path, default=None, help="keep the run directories here (default: a temporary folder)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="PATH=VALUE",
                        help="a further recipe override for every benchmark (as kdagent run --set takes it)")
    parser.add_argument("--markdown", type=Path, default=None, help="write the table into this Markdown file")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if not args.data.is_dir():
        print(f"distill_quality: data folder {args.data} is absent; nothing to run", file=sys.stderr)
        return 2
    names = args.only or list(BENCHMARKS)
    command = ("python benchmarks/distill_quality.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))).strip()
    results = {}
    with tempfile.TemporaryDirectory(prefix="kdagent-bench-") as tmp:
        root = args.work or Path(tmp)
        for name in names:
            print(f"[distill_quality] {name} ({args.budget})", file=sys.stderr, flush=True)
            with contextlib.redirect_stdout(sys.stderr):  # the Trainer's log lines: stdout holds only the JSON
                results[name] = run_one(name, args.budget, args.data.resolve(), root / name, args.sets)
            print(json.dumps({name: results[name]}), file=sys.stderr, flush=True)
            if args.markdown:  # after each benchmark, so an interrupted run keeps the finished rows
                write_markdown(args.markdown, markdown(results, command, machine()))
    out = {"benchmark": "distill_quality", "budget": args.budget, "machine": machine(), "date": datetime.date.today().isoformat(),
           "command": command, "results": results}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
