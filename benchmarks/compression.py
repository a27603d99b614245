"""Does compression keep what a domain-tuned teacher knows? On the finance domain, one shrunk student shape (a copy
of the teacher with `--layers` of its decoder layers, made by kdagent's shrink) trained four ways on exactly the
same curated examples, each scored on the same held-out sentences as the teacher:

- SFT alone (`update.method: sft`);
- distilled from the teacher's logit cache (`distill_cached`), once for each loss in `--losses`;
- distilled on-policy (`distill`, TRL's DistillationTrainer: the student samples, the teacher scores), unless
  `--no-on-policy`.

    .venv/bin/python benchmarks/compression.py --markdown docs/benchmarks.md            # the measurement
    .venv/bin/python benchmarks/compression.py --losses skew_kl forward_kl tvd --layers 20
    .venv/bin/python benchmarks/compression.py --quick --teacher smollm2-135m-instruct --json /tmp/c.json
    .venv/bin/python benchmarks/compression.py --tables-only --markdown docs/benchmarks.md

Every arm runs through kdagent itself (`kdagent run recipes/compress_finance.yaml`, each in its own process). One
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

Writes `docs/results/compression.json` (`--json`) and, with `--markdown`, the table between
`<!-- compression -->` and `<!-- /compression -->`, generated from that JSON; stdout holds the JSON.
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

from distill_quality import (  # the sibling benchmark's helpers (benchmarks/ is on sys.path)
    commit,
    machine,
    write_markdown,
)

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "compress_finance.yaml"
DEFAULT_DATA = REPO.parent / "shared" / "data"
DEFAULT_JSON = REPO / "docs" / "results" / "compression.json"
DEFAULT_TEACHER = "runs/finance/student"
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
TARGETS = {
    "f1_vs_teacher": 0.9,  # the distilled student keeps at least this share of the teacher's macro-F1
    "f1_over_sft": 0.03,  # and beats SFT alone by this much
    "speedup": 1.7,  # its greedy tokens/s against the teacher's
    "peak_rss_vs_sft": 1.1,  # training from the cache: peak memory within 10% of SFT's
    "train_speed_vs_sft": 0.8,  # and at least 80% of its train tokens/s
    "bytes_per_token_at_k32": 400,
}


def _log(message: str) -> None:
    print(f"[compression] {message}", file=sys.stderr, flush=True)


def _value(v) -> str:
    return json.dumps(v) if isinstance(v, bool) else str(v)


def set_args(overrides: dict) -> list[str]:
    """Recipe overrides as `kdagent run --set` takes them."""
    return [f"{k}={_value(v)}" for k, v in overrides.items()]


def kdagent_run(run_dir: Path, sets: list[str], resume: bool) -> dict:
    """`kdagent run` of the compression recipe in its own process (its log on our stderr); the run's metrics."""
    command = [sys.executable, "-c", "import sys; from kdagent.cli import main; sys.exit(main())", "run", str(RECIPE)]
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
    recipe = load_recipe(RECIPE, sets)

    prepared = work / "prepare"
    _log(f"preparing: tasks, the teacher's answers and the curated examples once ({prepared})")
    if not (prepared / "metrics.json").exists() or not json.loads((prepared / "metrics.json").read_text())["rounds"]:
        kdagent_run(prepared, sets + ["update.method=none"], resume=prepared.exists())
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
                arm_dir(prepared, run_dir, load_recipe(RECIPE, arm_sets))
            _log(f"arm {name}: {' '.join(set_args(overrides))}")
            kdagent_run(run_dir, arm_sets, resume=True)
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


SUMMARY_KEYS = ("macro_f1", "ci", "accuracy", "n", "params", "disk_mb", "tokens_per_s")
STUDENT_KEYS = ("train_tokens_per_s", "peak_rss_mb", "train_seconds")


def summarise(measured: dict) -> dict:
    """The issue's keys: `teacher`, `sft`, `kd` (the best distilled arm by macro-F1), `cache`, and the targets."""
    arms = measured["arms"]
    pick = lambda a, keys: {k: a.get(k) for k in keys}  # noqa: E731
    out = {"teacher": pick(arms["teacher"], SUMMARY_KEYS), "sft": pick(arms["sft"], SUMMARY_KEYS + STUDENT_KEYS)}
    distilled = {k: a for k, a in arms.items() if k.startswith("kd_")}
    best = max(distilled, key=lambda k: arms[k]["macro_f1"]) if distilled else None
    out["kd"] = {"arm": best, **pick(arms[best], SUMMARY_KEYS + STUDENT_KEYS)} if best else None
    cache = measured["cache"]
    out["cache"] = {"k": cache["k"], "bytes_per_token": cache["bytes_per_token"]} if cache else None
    targets: dict = {}
    if best:
        t, s, kd = out["teacher"], out["sft"], out["kd"]
        targets["kd_keeps_90pct_teacher_f1"] = kd["macro_f1"] >= TARGETS["f1_vs_teacher"] * t["macro_f1"]
        targets["kd_beats_sft_by_3_points"] = kd["macro_f1"] - s["macro_f1"] >= TARGETS["f1_over_sft"]
        targets["kd_1_7x_teacher_tokens_per_s"] = kd["tokens_per_s"] >= TARGETS["speedup"] * t["tokens_per_s"]
        cached = [a for k, a in distilled.items() if a["method"] == "distill_cached"]
        if cached and s.get("peak_rss_mb") and s.get("train_tokens_per_s"):
            targets["cached_peak_rss_within_10pct_of_sft"] = all(
                a["peak_rss_mb"] <= TARGETS["peak_rss_vs_sft"] * s["peak_rss_mb"] for a in cached
            )
            targets["cached_train_tokens_per_s_80pct_of_sft"] = all(
                a["train_tokens_per_s"] >= TARGETS["train_speed_vs_sft"] * s["train_tokens_per_s"] for a in cached
            )
    if cache:
        targets["cache_400_bytes_per_token_at_k32"] = (
            cache["bytes_per_token"] <= TARGETS["bytes_per_token_at_k32"] if cache["k"] == 32 else None
        )
    out["targets"] = targets
    return out


def _f1(a: dict) -> str:
    low, high = a["ci"]
    return f"{a['macro_f1']:.3f} [{low:.3f}, {high:.3f}]"


def markdown(results: dict) -> str:
    """The table of docs/benchmarks.md, from the JSON."""
    arms = results["arms"]
    teacher_tps = arms["teacher"].get("tokens_per_s")
    cache = results.get("cache")
    lines = [
        f"Run: `{results['command']}` (commit {results['commit']}, {results['date']}). Machine: {results['machine']}. "
        f"Teacher `{results['teacher_model']}` ({results['teacher_layers']} layers); student: {results['layers']} of "
        f"its layers (kdagent's shrink), {results['epochs']:g} epoch(s) on the same curated examples for every arm.",
        "",
        "Macro-F1 [bootstrap 95% interval] on n held-out sentences; tokens/s: greedy generation on the same "
        "held-out prompts; train s, tokens/s and peak RSS: the update stage of each arm's own `kdagent run`.",
        "",
        "| arm | n | macro-F1 | acc | params (M) | disk MiB | gen tokens/s (x teacher) | train s | train tokens/s | peak RSS MiB | predicted labels |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, a in arms.items():
        tps = a.get("tokens_per_s")
        speed = f"{tps:.1f}" + (f" ({tps / teacher_tps:.2f}x)" if name != "teacher" else "") if tps else ""
        label = name + (" (best)" if results.get("kd") and results["kd"]["arm"] == name else "")
        hist = ", ".join(f"{k} {v}" for k, v in a.get("histogram", {}).items())
        lines.append(
            f"| {label} | {a['n']} | {_f1(a)} | {a['accuracy']:.3f} | {a['params'] / 1e6:.1f} | {a['disk_mb']:.0f} | "
            f"{speed} | {a.get('train_seconds', '')} | {a.get('train_tokens_per_s', '')} | {a.get('peak_rss_mb', '')} | {hist} |"
        )
    if cache:
        lines += [
            "",
            f"Logit cache: k = {cache['k']}, {cache['bytes_per_token']} bytes per completion token, "
            f"{cache['completion_tokens']} completion tokens, "
            + (
                "found already built (this --work's earlier run)."
                if cache.get("hit")
                else f"built in {cache['seconds']} s."
            ),
        ]
    if results.get("targets"):
        lines += [
            "",
            "Targets: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in results["targets"].items()) + ".",
        ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--teacher", default=DEFAULT_TEACHER, help="the domain-tuned teacher: a local model folder or an alias"
    )
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
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="the results file")
    parser.add_argument("--markdown", type=Path, default=None, help="write the table into this Markdown file")
    parser.add_argument("--tables-only", action="store_true", help="run nothing: write --markdown from the --json file")
    args = parser.parse_args(argv)
    if args.tables_only:
        if args.markdown:
            write_markdown(args.markdown, markdown(json.loads(args.json.read_text())), "compression", "Compression")
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from kdagent.errors import UserError

    if not args.data.is_dir() or not (args.data / "financial_phrasebank").exists():
        print(f"compression: the finance data in {args.data} is absent; nothing to run", file=sys.stderr)
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
        "domain": "finance",
        "recipe": str(RECIPE.relative_to(REPO)),
        "teacher_model": args.teacher,
        **summarise(measured),
        **measured,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    if args.markdown:
        write_markdown(args.markdown, markdown(results), "compression", "Compression")
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
