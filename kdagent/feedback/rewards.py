"""Rewards for the updaters that sample from the student (grpo, rloo): TRL-style reward functions built from
the skill's verifier, blended with the teacher as judge."""

from kdagent.feedback.judge import DEFAULT_RUBRIC, judge_replies
from kdagent.records import Generation


def skill_reward(
    skill,
    tasks: dict,
    round_: int,
    judge=None,
    weight: float = 0.0,
    rubric: str | None = None,
    seed: int = 0,
    attempts: int = 3,
    score: str = "expected",
    label: str = "reward",
):
    """A TRL reward function `reward(prompts, completions, task_id, **kwargs)`: the skill's verifier score of
    each completion against its task (`tasks` by id), blended with the judge's score/10 by `weight` when a
    `judge` is given (an object whose `get()` returns the teacher). A judge output that stays malformed
    counts as 0; `label` starts the ids of the judged replies. The function's `close()` frees the judge."""
    calls = [0]

    def reward(prompts, completions, task_id, **kwargs) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        scores = [float(skill.verify(tasks[tid], text).score) for text, tid in zip(texts, task_id)]
        if judge is None or weight == 0:
            return scores
        calls[0] += 1
        items = [
            (
                tasks[tid],
                Generation(
                    id=f"{label}-{calls[0]}-{i}",
                    task_id=tid,
                    round=round_,
                    sample=i,
                    teacher="student",
                    skill=skill.name,
                    messages=[],
                    text=text,
                ),
            )
            for i, (text, tid) in enumerate(zip(texts, task_id))
        ]
        verdicts = judge_replies(
            judge.get(), items, rubric or DEFAULT_RUBRIC, seed=seed + calls[0], max_attempts=attempts, score=score
        )
        return [(1 - weight) * s + weight * (0.0 if v.failed else v.score) for s, v in zip(scores, verdicts)]

    reward.__name__ = f"{skill.name}_verifier" + ("_and_judge" if judge is not None and weight > 0 else "")
    reward.close = judge.close if judge is not None else (lambda: None)
    return reward
