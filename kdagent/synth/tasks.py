"""The round's tasks: the domain's seed tasks, decontaminated, with tasks expanded from them (or from mined
failures), and each grounded in the passages retrieved for it."""

from pathlib import Path

from kdagent.curate import contaminated_ids, label_counts
from kdagent.errors import UserError
from kdagent.jsonl import read_jsonl
from kdagent.records import Feedback, GroundedTask, Task


def eval_texts(tasks: list[Task]) -> list[str]:
    """Every text of the evaluation items, for decontamination."""
    texts = []
    for t in tasks:
        texts += [t.prompt, t.answer] + ([t.context] if t.context else [])
    return texts


def failed_tasks(round_dir: Path) -> list[Task]:
    """Training tasks of a finished round that have a reference answer and that no sample solved."""
    tasks = read_jsonl(round_dir / "tasks.jsonl", Task)
    solved = {f.task_id for f in read_jsonl(round_dir / "feedback.jsonl", Feedback) if f.passed}
    return [t for t in tasks if t.answer and t.id not in solved]


def failed_eval_tasks(ctx, round_: int, student: Path) -> list[Task]:
    """The domain's held-out tasks that `student`, the student round `round_` starts from, got wrong in its last
    evaluation: the predictions of the latest earlier round that trained it, else the baseline's (the run's
    first student, or a round that kept it)."""
    key = Path(student).resolve()
    found = [
        ctx.rd.round_dir(k) / "eval-predictions.jsonl"
        for k in range(round_ - 1, 0, -1)
        if (ctx.rd.round_dir(k) / "student").resolve() == key
    ]
    path = next((p for p in found if p.exists()), ctx.rd.path / "baseline-predictions.jsonl")
    wrong = {row["id"] for row in read_jsonl(path) if not row["correct"]}
    return [t for t in ctx.eval_tasks if t.id in wrong]


def seed_tasks(recipe, plugins, domain, eval_items: list[str], round_: int) -> tuple[list[Task], dict]:
    """The domain's seed tasks for a round, transformed by the plugins and decontaminated against the
    evaluation items; none left is a UserError that counts what each filter dropped. The runner calls it
    for round 1 before any model loads, so an empty or fully filtered dataset fails fast."""
    try:
        seeds = domain.seed_tasks(recipe.domain.seed_tasks, recipe.seed * 1000 + round_)
    except ValueError as exc:
        raise UserError(f"domain.seed_tasks: {exc}") from None
    seeds = [plugins.transform_task(task, recipe) for task in seeds]
    counts: dict = {"seed_tasks": len(seeds), "expanded": 0}
    bad = contaminated_ids(
        {t.id: f"{t.prompt}\n{t.context or ''}" for t in seeds}, eval_items, n=recipe.curation.decontam_ngram
    )
    seeds = [t for t in seeds if t.id not in bad]
    counts["dropped"] = {"contaminated_task": len(bad)}
    if not seeds:
        raise UserError(
            f"domain {recipe.domain.name}: no seed tasks left for round {round_} (the domain gave {counts['seed_tasks']}; "
            f"dropped: contaminated_task {len(bad)}, as sharing a {recipe.curation.decontam_ngram}-gram with an evaluation item)"
        )
    return seeds, counts


def make_tasks(ctx, round_: int, teacher) -> tuple[list[Task], dict]:
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

        x = r.synthesis.expansion
        # every task of every round so far, in a collection of the run's store
        index = ctx.plugins.create_store(
            r.retrieval, ctx.rd.path / "chroma", collection=f"{r.domain.name}-tasks", embedder=ctx.embedder
        )
        for earlier in range(1, round_):  # idempotent, so a crash before tasks.jsonl is written changes nothing
            index.add_texts(
                [t.prompt for t in read_jsonl(ctx.rd.round_dir(earlier) / "tasks.jsonl", Task)],
                source=f"round-{earlier:02d}",
            )
        index.add_texts([t.prompt for t in seeds], source=f"round-{round_:02d}/seed")
        new, expand_counts = expand_tasks(
            teacher.get(),
            parents,
            ctx.embedder,
            x.n_new,
            r.seed * 1000 + round_,
            method=x.method,
            domain=r.domain.name,
            existing=[t.prompt for t in ctx.eval_tasks + ctx.skill_eval_tasks],
            threshold=x.novelty_threshold,
            index=index,
        )
        index.release()
        tasks += [ctx.plugins.transform_task(task, r) for task in new]
        counts["expanded"], counts["expansion"] = len(new), expand_counts
    counts["labels"] = label_counts(tasks)  # reference answers of the choice tasks
    return tasks, counts


def ground(tasks: list[Task], store, top_k: int) -> list[GroundedTask]:
    """Attach the top-k passages to each task (none when retrieval is off)."""
    if store is None:
        return [GroundedTask(task=t) for t in tasks]
    hits = store.query([t.prompt for t in tasks], top_k)
    return [GroundedTask(task=t, passages=p) for t, p in zip(tasks, hits)]
