"""Verifiers: how the feedback stage checks the teacher's samples, named by `feedback.verifier`.

A verifier is registered through the hook `kdagent_register_verifiers` (`register(name, verifier)`); the
built-in `reference`, `judge` and `self_consistency` below register the same way. A verifier that needs a
reference answer (`needs_reference`) checks only the samples of tasks that carry one; the others go to
`feedback.unreferenced`, a verifier that needs none, or `drop`.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from kdagent.errors import UserError, did_you_mean
from kdagent.feedback.consistency import self_consistency
from kdagent.hookspecs import hookimpl
from kdagent.records import Feedback, Generation, Task


@dataclass
class VerifyJob:
    """What a verifier may consult: the recipe, the skill that prompted the samples, the domain, the tasks by
    id, the round, the teacher (`teacher.get()` loads it on first use), the judge's rubric, and `judge`, the
    loop's chunked and resumable teacher-as-judge: `judge(tasks, generations, rubric, name) -> [Feedback]`."""

    recipe: Any
    skill: Any
    domain: Any
    tasks: dict[str, Task]
    round: int
    teacher: Any
    rubric: str
    judge: Callable


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


class SelfConsistency(Verifier):
    """Replies that agree with the majority answer of their task's samples pass."""

    def verify(self, job, generations):
        skill = job.skill
        parse = (
            None
            if hasattr(skill, "final_answer")
            else (lambda text, kind="": " ".join(text.lower().split())[:200] or None)
        )
        return self_consistency(skill, job.tasks, generations, parse=parse)


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
