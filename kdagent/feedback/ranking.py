"""Preference pairs from scored samples: per task, the best-scored reply against the worst-scored one."""

from collections import Counter
from collections.abc import Callable

from kdagent.records import Feedback, Generation, Message, PreferencePair, Provenance, Task, stable_id


def rank_pairs(
    task: Task,
    prompt_messages: list[Message],
    generations: list[Generation],
    feedbacks: list[Feedback],
    round_: int,
    skill_name: str,
    domain: str,
    min_margin: float = 0.0,
    completion: Callable[[str], str] | None = None,
    counts: Counter | None = None,
) -> list[PreferencePair]:
    """At most one pair for `task`: chosen = highest score, rejected = lowest, margin = their difference.

    Only the task's generations that have a real verdict take part: a failed check (`failed=True`, e.g.
    a judge whose output stayed malformed) says nothing about the reply, and an empty reply is a failed
    request, not an answer; both are left out before ranking. No pair when fewer than two remain, when
    the margin is <= `min_margin`, or when the two texts are the same. Ties in score go to the earlier
    sample, so the result is deterministic. `completion` turns a reply into the text the student learns
    (pass `lambda t: skill.completion(task, t)` to match the SFT examples); default: the reply, stripped.
    `counts`, if given, is incremented with why pairs were skipped and how many were made."""
    counts = counts if counts is not None else Counter()
    completion = completion or (lambda text: text.strip())
    verdicts = {f.generation_id: f for f in feedbacks}
    candidates = []
    for gen in generations:
        verdict = verdicts.get(gen.id)
        if gen.task_id != task.id or verdict is None:
            continue
        if verdict.failed:
            counts["pair_failed_check"] += 1
            continue
        text = completion(gen.text)
        if not text.strip():
            counts["pair_empty_reply"] += 1
            continue
        candidates.append((gen, verdict, text))
    if len(candidates) < 2:
        counts["pair_too_few_samples"] += 1
        return []
    candidates.sort(key=lambda c: (-c[1].score, c[0].sample, c[0].id))
    (best, best_fb, chosen), (worst, worst_fb, rejected) = candidates[0], candidates[-1]
    margin = best_fb.score - worst_fb.score
    if margin <= min_margin:
        counts["pair_small_margin"] += 1
        return []
    if chosen.strip() == rejected.strip():
        counts["pair_identical_texts"] += 1
        return []
    counts["pairs"] += 1
    return [
        PreferencePair(
            id=stable_id(round_, task.id, best.id, worst.id, chosen, rejected),
            prompt=[dict(m) for m in prompt_messages],
            chosen=[{"role": "assistant", "content": chosen}],
            rejected=[{"role": "assistant", "content": rejected}],
            margin=margin,
            provenance=Provenance(
                round=round_,
                teacher=best.teacher,
                skill=skill_name,
                domain=domain,
                task_id=task.id,
                generation_id=best.id,
                passage_ids=list(best.passage_ids),
                feedback={
                    "chosen": best_fb.model_dump(exclude={"task_id"}),
                    "rejected": worst_fb.model_dump(exclude={"task_id"}),
                },
            ),
        )
    ]
