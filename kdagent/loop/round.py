"""One round, top to bottom: tasks -> expand -> ground -> elicit -> feedback -> curate -> update -> evaluate.

Each stage writes its records (JSONL) and its drop counts (`<stage>.counts.json`) into the round's folder;
with resume, a stage whose records exist is read back instead of recomputed. The teacher is loaded the
first time a stage needs it and freed before training.
"""

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from kdagent.curate.balance import balance_examples, label_counts
from kdagent.errors import UserError
from kdagent.jsonl import read_jsonl, write_jsonl
from kdagent.loop import feedback as feedback_stage
from kdagent.loop import stages
from kdagent.loop.update import run_methods
from kdagent.memory import gpu_peak_mb, peak_rss_mb, reset_peak_rss
from kdagent.records import Feedback, Generation, GroundedTask, PreferencePair, SFTExample, Task
from kdagent.teachers.lazy import LazyTeacher


@dataclass
class Context:
    recipe: object
    rd: object  # RunDir
    plugins: object
    domain: object
    skill: object
    eval_tasks: list[Task]
    store: object  # ChromaStore or None
    embedder: object  # Embedder or None
    resume: bool
    evaluate: object  # callable(model_path, out_path, desc) -> summary
    skill_eval_tasks: list[Task] = field(default_factory=list)  # the skills' own held-out sets, kept out of training too

    def eval_texts(self) -> list[str]:
        return eval_texts(self.eval_tasks + self.skill_eval_tasks)


def eval_texts(tasks: list[Task]) -> list[str]:
    """Every text of the evaluation items, for decontamination."""
    texts = []
    for t in tasks:
        texts += [t.prompt, t.answer] + ([t.context] if t.context else [])
    return texts


def _stage(ctx: Context, round_dir: Path, name: str, model, compute) -> tuple[list, dict]:
    """Records and drop counts of a stage: read back on resume, else computed and written (counts first,
    then the records, whose file marks the stage finished)."""
    path, counts_path = round_dir / f"{name}.jsonl", round_dir / f"{name}.counts.json"
    if ctx.resume and path.exists():
        return read_jsonl(path, model), (ctx.rd.read_json(counts_path) or {})
    records, counts = compute()
    partial = counts.pop("_partial", None)  # a stage's work-in-progress files, removed once it is finished
    ctx.rd.write_json(counts_path, counts)
    write_jsonl(path, records)
    for leftover in [partial] if isinstance(partial, str) else partial or []:
        Path(leftover).unlink(missing_ok=True)
    return records, counts


def local_teacher_path(recipe, student: Path) -> Path | None:
    """The folder of a built-in local teacher (its context length is known before it loads), else None."""
    if recipe.teacher.kind == "self":
        return student
    if recipe.teacher.kind == "hf" and recipe.teacher.model:
        from kdagent.models import resolve_model

        return resolve_model(recipe.teacher.model)
    return None


def failed_tasks(round_dir: Path) -> list[Task]:
    """Training tasks of a finished round that have a reference answer and that no sample solved."""
    tasks = read_jsonl(round_dir / "tasks.jsonl", Task)
    solved = {f.task_id for f in read_jsonl(round_dir / "feedback.jsonl", Feedback) if f.passed}
    return [t for t in tasks if t.answer and t.id not in solved]


def failed_eval_tasks(ctx: "Context", round_: int, student: Path) -> list[Task]:
    """The domain's held-out tasks that `student`, the student round `round_` starts from, got wrong in its last
    evaluation: the predictions of the latest earlier round that trained it, else the baseline's (the run's
    first student, or a round that kept it)."""
    key = Path(student).resolve()
    found = [ctx.rd.round_dir(k) / "eval-predictions.jsonl" for k in range(round_ - 1, 0, -1)
             if (ctx.rd.round_dir(k) / "student").resolve() == key]
    path = next((p for p in found if p.exists()), ctx.rd.path / "baseline-predictions.jsonl")
    wrong = {row["id"] for row in read_jsonl(path) if not row["correct"]}
    return [t for t in ctx.eval_tasks if t.id in wrong]


def seed_tasks(recipe, plugins, domain, eval_items: list[str], round_: int) -> tuple[list[Task], dict]:
    """The domain's seed tasks for a round, transformed by the plugins and decontaminated against the
    evaluation items; none left is a UserError that counts what each filter dropped. The runner calls it
    for round 1 before any model loads, so an empty or fully filtered dataset fails fast."""
    from kdagent.curate import contaminated_ids

    try:
        seeds = domain.seed_tasks(recipe.domain.seed_tasks, recipe.seed * 1000 + round_)
    except ValueError as exc:
        raise UserError(f"domain.seed_tasks: {exc}") from None
    seeds = [plugins.transform_task(task, recipe) for task in seeds]
    counts: dict = {"seed_tasks": len(seeds), "expanded": 0}
    bad = contaminated_ids({t.id: f"{t.prompt}\n{t.context or ''}" for t in seeds}, eval_items, n=recipe.curation.decontam_ngram)
    seeds = [t for t in seeds if t.id not in bad]
    counts["dropped"] = {"contaminated_task": len(bad)}
    if not seeds:
        raise UserError(f"domain {recipe.domain.name}: no seed tasks left for round {round_} (the domain gave {counts['seed_tasks']}; "
                        f"dropped: contaminated_task {len(bad)}, as sharing a {recipe.curation.decontam_ngram}-gram with an evaluation item)")
    return seeds, counts


def make_tasks(ctx: Context, round_: int, teacher: LazyTeacher) -> tuple[list[Task], dict]:
    """The round's seed tasks and, with synthesis.expansion, new tasks expanded from them, or from mined
    failures (loop.failure_mining). Failed held-out tasks only seed the expansion: they are never trained on,
    and expanded tasks too close to a held-out item are dropped (novelty against the evaluation sets)."""
    r = ctx.recipe
    seeds, counts = seed_tasks(r, ctx.plugins, ctx.domain, ctx.eval_texts(), round_)
    tasks = list(seeds)
    parents = seeds
    if r.loop.failure_mining != "off" and round_ > 1:
        if r.loop.failure_mining == "evaluation":
            failed = failed_eval_tasks(ctx, round_, teacher.student)
        else:
            failed = failed_tasks(ctx.rd.round_dir(round_ - 1))
        counts["mined_failures"], counts["mined_from"] = len(failed), r.loop.failure_mining
        parents = failed or seeds
    if r.synthesis.expansion is not None:
        from kdagent.synth.expand import expand_tasks

        from kdagent.retrieval.store import ChromaStore

        x = r.synthesis.expansion
        # every task of every round so far, in a collection of the run's Chroma store
        index = ChromaStore(ctx.rd.path / "chroma", collection=f"{r.domain.name}-tasks", embedder=ctx.embedder, server=r.retrieval.server)
        for earlier in range(1, round_):  # idempotent, so a crash before tasks.jsonl is written changes nothing
            index.add_texts([t.prompt for t in read_jsonl(ctx.rd.round_dir(earlier) / "tasks.jsonl", Task)], source=f"round-{earlier:02d}")
        index.add_texts([t.prompt for t in seeds], source=f"round-{round_:02d}/seed")
        new, expand_counts = expand_tasks(
            teacher.get(), parents, ctx.embedder, x.n_new, r.seed * 1000 + round_, method=x.method, domain=r.domain.name,
            existing=[t.prompt for t in ctx.eval_tasks + ctx.skill_eval_tasks], threshold=x.novelty_threshold, index=index,
        )
        index.release()
        tasks += [ctx.plugins.transform_task(task, r) for task in new]
        counts["expanded"], counts["expansion"] = len(new), expand_counts
    counts["labels"] = label_counts(tasks)  # reference answers of the choice tasks
    return tasks, counts


def sample_labels(tasks: dict[str, Task], feedback: list[Feedback]) -> dict[str, dict[str, int]]:
    """The labels the teacher's samples of choice tasks named (`samples`) and those of the samples that passed
    (`passed`), sorted: a teacher that answers one label everywhere shows here before training does."""
    named = [(f.predicted, f.passed) for f in feedback if tasks[f.task_id].kind == "choice" and f.predicted]
    if not named:
        return {}
    return {"samples": dict(sorted(Counter(p for p, _ in named).items())), "passed": dict(sorted(Counter(p for p, ok in named if ok).items()))}


def run_round(ctx: Context, round_: int, student: Path) -> tuple[dict, Path]:
    r, rd, skill = ctx.recipe, ctx.rd, ctx.skill
    round_dir = rd.round_dir(round_)
    teacher = LazyTeacher(ctx.plugins, r.teacher, student)
    seconds: dict[str, float] = {}
    clock = time.time()

    peak_rss: dict[str, float] = {}  # each stage's own peak where the high-water mark can be reset (Linux)
    peak_gpu: dict[str, float] = {}
    reset_peak_rss()
    gpu_peak_mb()  # resets the GPU's counter too

    def lap(name: str) -> None:
        nonlocal clock
        seconds[name] = round(time.time() - clock, 1)
        peak_rss[name] = peak_rss_mb()
        reset_peak_rss()
        gpu = gpu_peak_mb()
        if gpu is not None:
            peak_gpu[name] = gpu
        clock = time.time()

    tasks, task_counts = _stage(ctx, round_dir, "tasks", Task, lambda: make_tasks(ctx, round_, teacher))
    lap("tasks")
    grounded, _ = _stage(ctx, round_dir, "grounded", GroundedTask, lambda: (stages.ground(tasks, ctx.store, r.retrieval.top_k), {}))
    lap("ground")

    def elicit():
        settings = r.teacher.model_dump(mode="json")
        partial = round_dir / "generations.partial.jsonl"
        before = len(teacher.failures())  # expansion may have used the teacher already
        from kdagent.tools.sandbox import ISOLATION_COUNTS

        calls = Counter(ISOLATION_COUNTS)
        fitting, too_long = stages.fitting_prompts(skill, grounded, local_teacher_path(r, student), r.teacher.max_new_tokens)
        gens = stages.elicit(teacher.get, skill, fitting, round_, r.seed, settings, partial, chunk=4 * r.teacher.batch_size)
        failures = teacher.failures()[before:]
        counts = {"teacher_failures": len(failures), "errors": failures[:20], "_partial": str(partial)}
        isolation = dict(ISOLATION_COUNTS - calls)  # the python tool's calls by isolation: kernel, none (opted in), refused
        counts |= {"python_tool_isolation": isolation} if isolation else {}
        return gens, counts | ({"dropped": {"prompt_too_long": too_long}} if too_long else {})

    generations, elicit_counts = _stage(ctx, round_dir, "generations", Generation, elicit)
    lap("elicit")
    by_id = {task.id: task for task in tasks}
    feedback, feedback_counts = _stage(
        ctx, round_dir, "feedback", Feedback, lambda: feedback_stage.run(ctx, round_, by_id, grounded, generations, teacher)
    )
    teacher.close()
    lap("feedback")

    def curate():
        examples, counts = stages.curate(skill, r, ctx.plugins, round_, grounded, generations, feedback)
        fallback = counts.pop("reference_fallback", 0)
        auxiliary = counts.pop("auxiliary", 0)
        kept, dropped = stages.filter_examples(examples, ctx.eval_texts(), r.curation)
        kept, lengths = stages.limit_length(kept, student, r.student.max_length, r.curation.too_long)
        dropped.update({k: v for k, v in lengths.items() if k in ("too_long", "prompt_too_long")})
        extra = {"truncated_to_max_length": lengths["truncated"]} if "truncated" in lengths else {}
        # after the filters, which would take the repeated copies of 'upsample' for duplicates
        kept, labels = balance_examples(kept, by_id, r.curation.balance, r.seed * 1000 + round_)
        return kept, {"reference_fallback": fallback, **({"auxiliary_examples": auxiliary} if auxiliary else {}), **extra, "dropped": {**counts, **dropped}, "labels": labels}

    examples, curate_counts = _stage(ctx, round_dir, "sft", SFTExample, curate)
    pairs, pair_counts = [], {}
    if r.feedback.preferences:
        pairs, pair_counts = _stage(
            ctx, round_dir, "preferences", PreferencePair,
            lambda: stages.preference_pairs(skill, r, ctx.plugins, round_, grounded, generations, feedback, ctx.eval_texts()),
        )
    lap("curate")

    student, update = run_methods(ctx, round_, round_dir, student, examples, pairs, tasks)
    lap("update")

    evaluation = ctx.evaluate(student, round_dir / "eval-predictions.jsonl", f"round {round_}: evaluate")
    lap("evaluate")
    dropped = Counter()
    for part in (task_counts, elicit_counts, feedback_counts, curate_counts):
        dropped.update(part.get("dropped", {}))
    entry = {
        "round": round_,
        "student": str(student),
        "eval": evaluation,
        "counts": {
            "tasks": len(tasks),
            "expanded": task_counts.get("expanded", 0),
            "generations": len(generations),
            "teacher_failures": elicit_counts.get("teacher_failures", 0),
            "passed": sum(f.passed for f in feedback),
            "failed_checks": sum(f.failed for f in feedback),
            "sft_examples": len(examples),
            "preference_pairs": len(pairs),
            "labels": {"tasks": label_counts(tasks), **sample_labels(by_id, feedback), "sft": curate_counts.get("labels", {})},
            "dropped": dict(sorted(dropped.items())),
            **({"pairs_dropped": pair_counts.get("dropped", {}), "ranking": pair_counts.get("ranking", {})} if pair_counts else {}),
            **({"mined_failures": task_counts["mined_failures"]} if "mined_failures" in task_counts else {}),
            **({"expansion": task_counts["expansion"]} if "expansion" in task_counts else {}),
            **({"judge": feedback_counts["judge"]} if "judge" in feedback_counts else {}),
            **({"python_tool_isolation": elicit_counts["python_tool_isolation"]} if "python_tool_isolation" in elicit_counts else {}),
        },
        "update": update,
        "seconds": seconds,
        "peak_rss_mb": peak_rss,
        **({"peak_gpu_allocated_mb": peak_gpu} if peak_gpu else {}),
    }
    return entry, student
