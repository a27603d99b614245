"""The feedback stage: check every sample with the recipe's verifier, then, if asked, drop grounded
answers that their citations do not support."""

from collections import Counter

from kdagent.feedback import DEFAULT_RUBRIC, judge_with_stats, self_consistency
from kdagent.feedback.faithfulness import overlap_check
from kdagent.loop import stages
from kdagent.records import Feedback, Generation, GroundedTask, Task
from kdagent.skill import format_passages

FAITHFULNESS_RUBRIC = (
    "Faithfulness: the reply must be supported by the passages it cites as [n]. Pass it only if every claim in "
    "the reply is stated in a cited passage; fail it if it cites nothing or adds facts the passages do not hold."
)


def _parse_for_consistency(skill):
    if hasattr(skill, "final_answer"):
        return None  # self_consistency uses skill.final_answer
    return lambda text, kind="": " ".join(text.lower().split())[:200] or None


def _judge(ctx, teacher, tasks: dict[str, Task], gens: list[Generation], rubric: str, round_: int, counts: Counter) -> list[Feedback]:
    feedback, stats = judge_with_stats(teacher.get(), [(tasks[g.task_id], g) for g in gens], rubric, seed=ctx.recipe.seed * 1000 + round_, max_attempts=ctx.recipe.feedback.judge_attempts)
    for key, value in stats.as_dict().items():
        if isinstance(value, (int, float)):
            counts[f"judge_{key}"] += value
    return feedback


def run(ctx, round_: int, tasks: dict[str, Task], grounded: list[GroundedTask], generations: list[Generation], teacher) -> tuple[list[Feedback], dict]:
    cfg = ctx.recipe.feedback
    rubric = cfg.rubric or getattr(ctx.domain, "rubric", None) or DEFAULT_RUBRIC
    counts: Counter = Counter()
    dropped: Counter = Counter()
    verdicts: dict[str, Feedback] = {}

    def consistency(gens):
        return self_consistency(ctx.skill, tasks, gens, parse=_parse_for_consistency(ctx.skill))

    if cfg.verifier == "judge":
        chosen = {"judge": generations}
    elif cfg.verifier == "self_consistency":
        chosen = {"consistency": generations}
    else:
        with_ref = [g for g in generations if tasks[g.task_id].answer]
        without = [g for g in generations if not tasks[g.task_id].answer]
        chosen = {"reference": with_ref, {"self_consistency": "consistency", "judge": "judge", "drop": "drop"}[cfg.unreferenced]: without}
    for how, gens in chosen.items():
        if not gens:
            continue
        if how == "reference":
            results = stages.judge(ctx.skill, tasks, gens)
        elif how == "consistency":
            results = consistency(gens)
        elif how == "judge":
            results = _judge(ctx, teacher, tasks, gens, rubric, round_, counts)
        else:
            results = [Feedback(generation_id=g.id, task_id=g.task_id, verifier="none", passed=False, score=0.0, reason="no reference answer") for g in gens]
            dropped["no_reference"] += len(gens)
        verdicts.update((f.generation_id, f) for f in results)

    if cfg.faithfulness != "off":
        passages = {g.task.id: g.passages for g in grounded}
        grounded_passed = [g for g in generations if verdicts[g.id].passed and passages.get(g.task_id)]
        if cfg.faithfulness == "overlap":
            for g in grounded_passed:
                ok, reason, _ = overlap_check(g.text, passages[g.task_id], cfg.min_overlap)
                if not ok:
                    verdicts[g.id] = verdicts[g.id].model_copy(update={"passed": False, "reason": f"unfaithful: {reason}"})
                    dropped["unfaithful"] += 1
        else:
            # the judge sees the passages the reply could cite, as the task's context
            shown = {tid: tasks[tid].model_copy(update={"context": format_passages(ps)}) for tid, ps in passages.items() if ps}
            checks = _judge(ctx, teacher, shown, grounded_passed, FAITHFULNESS_RUBRIC, round_, counts)
            for g, check in zip(grounded_passed, checks):
                if not check.passed:
                    verdicts[g.id] = verdicts[g.id].model_copy(update={"passed": False, "reason": f"unfaithful: {check.reason}", "raw": check.raw})
                    dropped["unfaithful"] += 1
    out = [verdicts[g.id] for g in generations]
    return out, {"dropped": dict(dropped), **({"judge": dict(counts)} if counts else {})}
