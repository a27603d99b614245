"""Self-consistency: for tasks without a trusted reference, the answer most samples agree on stands in
for one, and the replies that reach it pass (Wang et al., 2023)."""

from collections import Counter
from collections.abc import Callable

from kdagent.records import Feedback, Generation, Task

AnswerParser = Callable[[str], str | None]


def _key(answer: str) -> str:
    return " ".join(answer.split()).casefold()


def majority_vote(answers: list[str | None]) -> tuple[str | None, float]:
    """(the answer most samples give, its share of ALL samples, None ones included).

    None (no parseable answer) never wins. Answers are compared ignoring case and spacing; the winner is
    returned as first written. A tie for first place is no majority: (None, the tied share). No answer
    at all: (None, 0.0)."""
    counts: Counter = Counter()
    first: dict[str, str] = {}
    for a in answers:
        if a is None or not a.strip():
            continue
        k = _key(a)
        counts[k] += 1
        first.setdefault(k, a.strip())
    if not counts:
        return None, 0.0
    ranked = counts.most_common(2)
    share = ranked[0][1] / len(answers)
    if len(ranked) > 1 and ranked[1][1] == ranked[0][1]:
        return None, share
    return first[ranked[0][0]], share


def answer_parser(skill, task: Task) -> AnswerParser:
    """How to read a reply's final answer: the skill's `final_answer(text, kind)` (as `cot` has)."""
    final_answer = getattr(skill, "final_answer", None)
    if final_answer is None:
        raise ValueError(
            f"skill {getattr(skill, 'name', skill)!r} has no final_answer(); pass parse= to consistency_feedback"
        )
    return lambda text: final_answer(text, task.kind)[0]


def consistency_feedback(
    skill, task: Task, generations: list[Generation], parse: AnswerParser | None = None, min_share: float = 0.5
) -> list[Feedback]:
    """One Feedback per generation of `task`: passed when its answer agrees with the majority answer and
    that answer holds at least `min_share` of all samples (one lone parsed answer among many is not
    agreement); scored with the majority's share. With no such majority, none pass."""
    if any(g.task_id != task.id for g in generations):
        raise ValueError(f"consistency_feedback: every generation must belong to task {task.id}")
    parse = parse or answer_parser(skill, task)
    answers = [parse(g.text) for g in generations]
    majority, share = majority_vote(answers)
    n = len(generations)
    out = []
    for gen, answer in zip(generations, answers):
        agrees = majority is not None and answer is not None and _key(answer) == _key(majority) and share >= min_share
        if majority is None:
            reason = "no majority answer among the samples"
        elif share < min_share:
            reason = f"the most common answer {majority!r} holds only {round(share * n)}/{n} samples"
        elif answer is None:
            reason = "no final answer parsed"
        elif agrees:
            reason = f"agrees with the majority answer {majority!r} ({round(share * n)}/{n})"
        else:
            reason = f"disagrees with the majority answer {majority!r} ({round(share * n)}/{n})"
        out.append(
            Feedback(
                generation_id=gen.id,
                task_id=gen.task_id,
                verifier="self-consistency",
                passed=agrees,
                score=share if agrees else 0.0,
                predicted=answer,
                reason=reason,
            )
        )
    return out


def self_consistency(
    skill,
    tasks: dict[str, Task],
    generations: list[Generation],
    parse: AnswerParser | None = None,
    min_share: float = 0.5,
    parser: Callable[[Task], AnswerParser] | None = None,
) -> list[Feedback]:
    """`consistency_feedback` over many tasks (the shape of `kdagent.feedback.verifiers.check_with_skill`), in the
    generations' order; `parser(task)`, where given, reads the answers of that task's replies."""
    by_task: dict[str, list[Generation]] = {}
    for g in generations:
        by_task.setdefault(g.task_id, []).append(g)
    verdicts: dict[str, Feedback] = {}
    for task_id, gens in by_task.items():
        task = tasks[task_id]
        for f in consistency_feedback(skill, task, gens, parser(task) if parser else parse, min_share):
            verdicts[f.generation_id] = f
    return [verdicts[g.id] for g in generations]


def vote_precision(tasks: dict[str, Task], verdicts: list[Feedback], min_share: float) -> dict[str, tuple[int, int]]:
    """How often the teacher's confident votes were right, by label: {label: (right, votes)} over the choice
    tasks that have a reference answer, where a task's vote is the majority of its samples' answers
    (`Feedback.predicted`) holding at least `min_share` of them, compared with the reference answer."""
    by_task: dict[str, list[str | None]] = {}
    for f in verdicts:
        task = tasks.get(f.task_id)
        if task is not None and task.kind == "choice" and task.answer:
            by_task.setdefault(f.task_id, []).append(f.predicted)
    tally: dict[str, list[int]] = {}
    for task_id, answers in by_task.items():
        vote, share = majority_vote(answers)
        if vote is not None and share >= min_share:
            right_votes = tally.setdefault(_key(vote), [0, 0])
            right_votes[0] += _key(vote) == _key(tasks[task_id].answer)
            right_votes[1] += 1
    return {label: (right, votes) for label, (right, votes) in sorted(tally.items())}


def trusted_label(precision: dict[str, tuple[int, int]], label: str, min_share: float) -> tuple[bool, str]:
    """(whether a voted `label` may stand in for a reference, why): its confident votes on gold-labelled tasks
    were right at least `min_share` of the time, add-one smoothed ((right + 1) / (votes + 2)), so that a
    label voted confidently only once or twice cannot pass on luck; a label never voted there cannot pass."""
    right, votes = precision.get(_key(label), (0, 0))
    ok = votes > 0 and (right + 1) / (votes + 2) >= min_share
    return ok, f"the teacher's confident votes for {label!r} were right on {right}/{votes} gold-labelled tasks"
