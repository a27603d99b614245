"""The feedback stage: check every sample with the recipe's verifier (a registered `Verifier`), then, if asked,
drop passing samples that paste a retrieved passage back or that their citations do not support."""

from collections import Counter

from kdagent.feedback.faithfulness import overlap_check
from kdagent.feedback.judge import DEFAULT_RUBRIC, judge_with_stats
from kdagent.feedback.verifiers import VerifyJob
from kdagent.records import Feedback, Generation, GroundedTask, Task, stable_id
from kdagent.resume import chunked, partial_files
from kdagent.skill import format_passages

FAITHFULNESS_RUBRIC = (
    "Faithfulness: the reply must be supported by the passages it cites as [n]. Pass it only if every claim in "
    "the reply is stated in a cited passage; fail it if it cites nothing or adds facts the passages do not hold."
)


def _judge(
    ctx, teacher, tasks: dict[str, Task], gens: list[Generation], rubric: str, round_: int, counts: Counter, name: str
) -> list[Feedback]:
    """The teacher as judge, `4 x teacher.batch_size` replies at a time, each chunk with a seed of its own,
    saved as it finishes (`feedback.<name>.partial.jsonl`, its judging costs in `.partial.json`), so a resumed run
    judges only the chunks left and gets the verdicts and costs of an uninterrupted run."""
    r = ctx.recipe

    def run_chunk(c: int, part: list[Generation]) -> tuple[list[Feedback], dict]:
        seed = int(stable_id(r.seed, round_, name, c), 16) % 2**31
        feedback, stats = judge_with_stats(
            teacher.get(),
            [(tasks[g.task_id], g) for g in part],
            rubric,
            seed=seed,
            max_attempts=r.feedback.judge_attempts,
            score=r.feedback.judge_score,
        )
        return feedback, stats.as_dict()

    verdicts, costs = chunked(
        ctx.rd.round_dir(round_) / f"feedback.{name}.partial.jsonl",
        Feedback,
        gens,
        4 * r.teacher.batch_size,
        run_chunk,
        item_key=lambda g: g.id,
        record_keys=lambda f: (f.generation_id, 0),
        resume=ctx.resume,
    )
    for chunk in costs.values():
        for key, value in chunk.items():
            if isinstance(value, (int, float)):
                counts[f"judge_{key}"] += value
    return [verdicts[g.id][0] for g in gens]


def run(
    ctx, round_: int, tasks: dict[str, Task], grounded: list[GroundedTask], generations: list[Generation], teacher
) -> tuple[list[Feedback], dict]:
    cfg = ctx.recipe.feedback
    rubric = cfg.rubric or getattr(ctx.domain, "rubric", None) or DEFAULT_RUBRIC
    counts: Counter = Counter()
    dropped: Counter = Counter()
    verdicts: dict[str, Feedback] = {}

    job = VerifyJob(
        ctx.recipe,
        ctx.skill,
        ctx.domain,
        tasks,
        round_,
        teacher,
        rubric,
        judge=lambda shown, gens, rubric, name: _judge(ctx, teacher, shown, gens, rubric, round_, counts, name),
        checked=verdicts,  # filled group by group: the referenced samples' verdicts come first
    )
    verifier = ctx.plugins.verifiers[cfg.verifier].obj
    groups = [(verifier, generations)]
    if verifier.needs_reference:  # the samples of tasks without a reference answer go to feedback.unreferenced
        other = None if cfg.unreferenced == "drop" else ctx.plugins.verifiers[cfg.unreferenced].obj
        groups = [
            (verifier, [g for g in generations if tasks[g.task_id].answer]),
            (other, [g for g in generations if not tasks[g.task_id].answer]),
        ]
    for how, gens in groups:
        if not gens:
            continue
        if how is None:
            results = [
                Feedback(
                    generation_id=g.id,
                    task_id=g.task_id,
                    verifier="none",
                    passed=False,
                    score=0.0,
                    reason="no reference answer",
                )
                for g in gens
            ]
            dropped["no_reference"] += len(gens)
        else:
            results = how.verify(job, gens)
        verdicts.update((f.generation_id, f) for f in results)

    if cfg.reject_copies:  # a passing sample that pastes a passage back is reference material, not an answer
        from kdagent.feedback.copying import copied_span

        passages = {g.task.id: [p.text for p in g.passages] for g in grounded}
        for g in generations:
            if verdicts[g.id].passed and passages.get(g.task_id):
                task = tasks[g.task_id]
                span = copied_span(
                    g.text, passages[g.task_id], f"{task.prompt}\n{task.context or ''}", cfg.reject_copies
                )
                if span:
                    verdicts[g.id] = verdicts[g.id].model_copy(
                        update={"passed": False, "reason": f"copies a retrieved passage: {span!r}"}
                    )
                    dropped["copied_passage"] += 1
    if cfg.faithfulness != "off":
        passages = {g.task.id: g.passages for g in grounded}
        grounded_passed = [g for g in generations if verdicts[g.id].passed and passages.get(g.task_id)]
        if cfg.faithfulness == "overlap":
            for g in grounded_passed:
                ok, reason, _ = overlap_check(g.text, passages[g.task_id], cfg.min_overlap)
                if not ok:
                    verdicts[g.id] = verdicts[g.id].model_copy(
                        update={"passed": False, "reason": f"unfaithful: {reason}"}
                    )
                    dropped["unfaithful"] += 1
        else:
            # the judge sees the passages the reply could cite, as the task's context
            shown = {
                tid: tasks[tid].model_copy(update={"context": format_passages(ps)})
                for tid, ps in passages.items()
                if ps
            }
            checks = _judge(ctx, teacher, shown, grounded_passed, FAITHFULNESS_RUBRIC, round_, counts, "faithfulness")
            for g, check in zip(grounded_passed, checks):
                if not check.passed:
                    verdicts[g.id] = verdicts[g.id].model_copy(
                        update={"passed": False, "reason": f"unfaithful: {check.reason}", "raw": check.raw}
                    )
                    dropped["unfaithful"] += 1
    out = [verdicts[g.id] for g in generations]
    partials = [
        f
        for n in ("judge", "faithfulness")
        for f in partial_files(ctx.rd.round_dir(round_) / f"feedback.{n}.partial.jsonl")
    ]
    return out, {"dropped": dict(dropped), **({"judge": dict(counts)} if counts else {}), "_partial": partials}


def sample_labels(tasks: dict[str, Task], feedback: list[Feedback]) -> dict[str, dict[str, int]]:
    """The labels the teacher's samples of choice tasks named (`samples`) and those of the samples that passed
    (`passed`), sorted: a teacher that answers one label everywhere shows here before training does."""
    named = [(f.predicted, f.passed) for f in feedback if tasks[f.task_id].kind == "choice" and f.predicted]
    if not named:
        return {}
    return {
        "samples": dict(sorted(Counter(p for p, _ in named).items())),
        "passed": dict(sorted(Counter(p for p, ok in named if ok).items())),
    }
