"""One round, top to bottom: tasks -> expand -> ground -> elicit -> feedback -> curate -> update -> evaluate.

Each stage writes its records (JSONL) and its drop counts (`<stage>.counts.json`) into the round's folder;
with resume, a stage whose records exist is read back instead of recomputed. The teacher is loaded the
first time a stage needs it and freed before training.
"""

import gc
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from kdagent.errors import UserError
from kdagent.jsonl import read_jsonl, write_jsonl
from kdagent.loop import feedback as feedback_stage
from kdagent.loop import stages
from kdagent.loop.update import run_methods
from kdagent.records import Feedback, Generation, GroundedTask, PreferencePair, SFTExample, Task


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

    def eval_texts(self) -> list[str]:
        texts = []
        for t in self.eval_tasks:
            texts += [t.prompt, t.answer] + ([t.context] if t.context else [])
        return texts


class LazyTeacher:
    def __init__(self, plugins, config, student: Path):
        self.plugins, self.config, self.student, self.teacher = plugins, config, student, None

    def get(self):
        if self.teacher is None:
            self.teacher = self.plugins.create_teacher(self.config, self.student)
        return self.teacher

    def failures(self) -> list[str]:
        return list(getattr(self.teacher, "failures", []) or [])

    def close(self) -> None:
        if self.teacher is not None:
            self.teacher.close()
            self.teacher = None
            gc.collect()


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


def failed_tasks(round_dir: Path) -> list[Task]:
    """Training tasks of a finished round that have a reference answer and that no sample solved."""
    tasks = read_jsonl(round_dir / "tasks.jsonl", Task)
    solved = {f.task_id for f in read_jsonl(round_dir / "feedback.jsonl", Feedback) if f.passed}
    return [t for t in tasks if t.answer and t.id not in solved]


def make_tasks(ctx: Context, round_: int, teacher: LazyTeacher) -> tuple[list[Task], dict]:
    r = ctx.recipe
    try:
        seeds = ctx.domain.seed_tasks(r.domain.seed_tasks, r.seed * 1000 + round_)
    except ValueError as exc:
        raise UserError(f"domain.seed_tasks: {exc}") from None
    seeds = [ctx.plugins.transform_task(task, r) for task in seeds]
    counts: dict = {"seed_tasks": len(seeds), "expanded": 0}
    from kdagent.curate import contaminated_ids

    bad = contaminated_ids({t.id: f"{t.prompt}\n{t.context or ''}" for t in seeds}, ctx.eval_texts(), n=r.curation.decontam_ngram)
    seeds = [t for t in seeds if t.id not in bad]
    counts["dropped"] = {"contaminated_task": len(bad)}
    if not seeds:
        raise UserError(f"round {round_}: no seed tasks left (domain gave {counts['seed_tasks']}, contaminated {len(bad)})")
    tasks = list(seeds)
    parents = seeds
    if r.loop.failure_mining and round_ > 1:
        failed = failed_tasks(ctx.rd.round_dir(round_ - 1))
        counts["mined_failures"] = len(failed)
        parents = failed or seeds
    if r.synthesis.expansion is not None:
        from kdagent.synth.expand import expand_tasks

        from kdagent.retrieval.store import ChromaStore

        x = r.synthesis.expansion
        # every task of every round so far, in a collection of the run's Chroma store
        index = ChromaStore(ctx.rd.path / "chroma", collection=f"{r.domain.name}-tasks", embedder=ctx.embedder)
        for earlier in range(1, round_):  # idempotent, so a crash before tasks.jsonl is written changes nothing
            index.add_texts([t.prompt for t in read_jsonl(ctx.rd.round_dir(earlier) / "tasks.jsonl", Task)], source=f"round-{earlier:02d}")
        index.add_texts([t.prompt for t in seeds], source=f"round-{round_:02d}/seed")
        new, expand_counts = expand_tasks(
            teacher.get(), parents, ctx.embedder, x.n_new, r.seed * 1000 + round_, method=x.method, domain=r.domain.name,
            existing=[t.prompt for t in ctx.eval_tasks], threshold=x.novelty_threshold, index=index,
        )
        index.release()
        tasks += [ctx.plugins.transform_task(task, r) for task in new]
        counts["expanded"], counts["expansion"] = len(new), expand_counts
    return tasks, counts


def run_round(ctx: Context, round_: int, student: Path) -> tuple[dict, Path]:
    r, rd, skill = ctx.recipe, ctx.rd, ctx.skill
    round_dir = rd.round_dir(round_)
    teacher = LazyTeacher(ctx.plugins, r.teacher, student)
    seconds: dict[str, float] = {}
    clock = time.time()

    def lap(name: str) -> None:
        nonlocal clock
        seconds[name] = round(time.time() - clock, 1)
        clock = time.time()

    tasks, task_counts = _stage(ctx, round_dir, "tasks", Task, lambda: make_tasks(ctx, round_, teacher))
    lap("tasks")
    grounded, _ = _stage(ctx, round_dir, "grounded", GroundedTask, lambda: (stages.ground(tasks, ctx.store, r.retrieval.top_k), {}))
    lap("ground")

    def elicit():
        settings = r.teacher.model_dump(mode="json")
        partial = round_dir / "generations.partial.jsonl"
        before = len(teacher.failures())  # expansion may have used the teacher already
        gens = stages.elicit(teacher.get, skill, grounded, round_, r.seed, settings, partial, chunk=4 * r.teacher.batch_size)
        failures = teacher.failures()[before:]
        return gens, {"teacher_failures": len(failures), "errors": failures[:20], "_partial": str(partial)}

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
        kept, dropped = stages.filter_examples(examples, ctx.eval_texts(), r.curation)
        return kept, {"reference_fallback": fallback, "dropped": {**counts, **dropped}}

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
    for part in (task_counts, feedback_counts, curate_counts):
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
            "dropped": dict(sorted(dropped.items())),
            **({"pairs_dropped": pair_counts.get("dropped", {}), "ranking": pair_counts.get("ranking", {})} if pair_counts else {}),
            **({"mined_failures": task_counts["mined_failures"]} if "mined_failures" in task_counts else {}),
            **({"expansion": task_counts["expansion"]} if "expansion" in task_counts else {}),
            **({"judge": feedback_counts["judge"]} if "judge" in feedback_counts else {}),
        },
        "update": update,
        "seconds": seconds,
    }
    return entry, student
