"""Verifiers: how the feedback stage checks the teacher's samples, named by `feedback.verifier`.

A verifier is registered through the hook `kdagent_register_verifiers` (`register(name, verifier)`); the
built-in `reference`, `judge` and `self_consistency` below register the same way. A verifier that needs a
reference answer (`needs_reference`) checks only the samples of tasks that carry one; the others go to
`feedback.unreferenced`, a verifier that needs none, or `drop`.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from kdagent.errors import UserError, did_you_mean
from kdagent.feedback.consistency import AnswerParser, self_consistency, trusted_label, vote_precision
from kdagent.hookspecs import hookimpl
from kdagent.records import Feedback, Generation, Task


@dataclass
class VerifyJob:
    """What a verifier may consult: the recipe, the skill that prompted the samples, the domain, the tasks by
    id, the round, the teacher (`teacher.get()` loads it on first use), the judge's rubric, `judge`, the
    loop's chunked and resumable teacher-as-judge: `judge(tasks, generations, rubric, name) -> [Feedback]`,
    and `checked`, the round's verdicts given so far by generation id (those of the samples of tasks with a
    reference answer, when `feedback.unreferenced` checks the others)."""

    recipe: Any
    skill: Any
    domain: Any
    tasks: dict[str, Task]
    round: int
    teacher: Any
    rubric: str
    judge: Callable
    checked: dict[str, Feedback] = field(default_factory=dict)


class Verifier:
    """Checks samples: `verify(job, generations)` returns one Feedback per generation, in order."""

    needs_reference: ClassVar[bool] = False

    def verify(self, job: VerifyJob, generations: list[Generation]) -> list[Feedback]:
        raise NotImplementedError


def check_with_skill(skill, tasks: dict[str, Task], generations: list[Generation]) -> list[Feedback]:
    """Check every sample with the skill's verifier against its task's reference answer."""
    out = []
    for gen in generations:
        if (
            not gen.text.strip() and not gen.trajectory
        ):  # the teacher gave nothing (its retries ran out, or an empty reply)
            out.append(
                Feedback(
                    generation_id=gen.id,
                    task_id=gen.task_id,
                    verifier=f"{skill.name}/reference",
                    passed=False,
                    score=0.0,
                    failed=True,
                    reason="empty reply from the teacher",
                )
            )
            continue
        verdict = skill.verify(tasks[gen.task_id], gen.text)
        out.append(
            Feedback(
                generation_id=gen.id,
                task_id=gen.task_id,
                verifier=f"{skill.name}/reference",
                passed=verdict.passed,
                score=verdict.score,
                predicted=verdict.predicted,
                reason=verdict.reason,
            )
        )
    return out


class Reference(Verifier):
    """The skill's verifier against the task's reference answer."""

    needs_reference = True

    def verify(self, job, generations):
        return check_with_skill(job.skill, job.tasks, generations)


class Judge(Verifier):
    """The teacher grades each reply against the rubric."""

    def verify(self, job, generations):
        return job.judge(job.tasks, generations, job.rubric, "judge")


def choice_parser(skill, task: Task) -> AnswerParser:
    """How a reply's answer is read without the skill's `final_answer`: for a choice task, the option the
    skill's own verifier reads in it (`Verdict.predicted`; None when it names none of the options), else the
    reply itself, normalised."""
    if task.kind != "choice" or not task.choices:
        return lambda text: " ".join(text.lower().split())[:200] or None
    options = {" ".join(c.split()).casefold(): c for c in task.choices}
    probe = task.model_copy(update={"answer": task.choices[0]})  # any option: only what the reply names is read

    def parse(text: str) -> str | None:
        predicted = skill.verify(probe, text).predicted
        return options.get(" ".join(predicted.split()).casefold()) if predicted else None

    return parse


class SelfConsistency(Verifier):
    """Replies that agree with the majority answer of their task's samples pass, when that answer holds at least
    `feedback.min_agreement` of the samples. A choice task's majority label (a vote standing in for a missing
    reference) must also be one that the teacher's confident votes got right at least that often on the round's
    gold-labelled tasks, where it has any: a teacher that votes one label everywhere labels nothing."""

    def verify(self, job, generations):
        skill, share = job.skill, job.recipe.feedback.min_agreement
        parser = None if hasattr(skill, "final_answer") else (lambda task: choice_parser(skill, task))
        out = self_consistency(skill, job.tasks, generations, min_share=share, parser=parser)
        seen = [*job.checked.values(), *out]
        if not any(job.tasks[f.task_id].kind == "choice" and job.tasks[f.task_id].answer for f in seen):
            return out  # no gold labels in the round to check the votes against
        precision = vote_precision(job.tasks, seen, share)
        for i, f in enumerate(out):
            task = job.tasks[f.task_id]
            if f.passed and task.kind == "choice" and not task.answer:
                ok, why = trusted_label(precision, f.predicted, share)
                if not ok:
                    out[i] = f.model_copy(update={"passed": False, "score": 0.0, "reason": f"unverified vote: {why}"})
                else:
                    out[i] = f.model_copy(update={"reason": f"{f.reason}; {why}"})
        return out


def check_verifiers(recipe, plugins) -> None:
    """`feedback.verifier` and `feedback.unreferenced` name registered verifiers (or `drop`, for the latter), and
    the one for tasks without a reference answer needs none."""
    registered = plugins.verifiers

    def named(path: str, name: str, extra: tuple = ()):
        if name not in registered and name not in extra:
            choices = [*registered, *extra]
            close = did_you_mean(name, choices)
            raise UserError(
                f"{path}: unknown verifier {name!r} (registered: {', '.join(sorted(choices))})"
                + (f"; did you mean {close!r}?" if close else "")
            )
        return registered.get(name)

    named("feedback.verifier", recipe.feedback.verifier)
    other = named("feedback.unreferenced", recipe.feedback.unreferenced, ("drop",))
    if other is not None and other.obj.needs_reference:
        raise UserError(
            f"feedback.unreferenced: {recipe.feedback.unreferenced!r} needs a reference answer; "
            "name a verifier that needs none, or 'drop'"
        )


@hookimpl
def kdagent_register_verifiers(register):
    register("reference", Reference())
    register("judge", Judge())
    register("self_consistency", SelfConsistency())
