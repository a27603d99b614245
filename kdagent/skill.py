"""The Skill interface: how a capability is elicited, checked and taught.

A skill turns a task (plus retrieved passages) into chat messages, checks a reply against the task's
reference, and turns a checked reply into the completion the student learns. Built-in skills and plugin
skills implement the same class and are registered through `kdagent_register_skills`.
"""

from dataclasses import dataclass

from kdagent.records import Message, Passage, Task


@dataclass(frozen=True)
class Verdict:
    passed: bool
    score: float
    predicted: str | None = None
    reason: str = ""


def format_passages(passages: list[Passage]) -> str:
    """Retrieved text, delimited so that it reads as material to use, never as instructions."""
    blocks = [f'<passage id="{p.id}" source="{p.source}">\n{p.text.strip()}\n</passage>' for p in passages]
    return "\n".join(blocks)


class Skill:
    name: str = "skill"
    description: str = ""

    def messages(self, task: Task, passages: list[Passage] | None = None) -> list[Message]:
        """The chat prompt: with passages for grounded elicitation, without them for training and evaluation."""
        raise NotImplementedError

    def verify(self, task: Task, reply: str) -> Verdict:
        """Check a reply against the task's reference answer."""
        raise NotImplementedError

    def completion(self, task: Task, reply: str) -> str:
        """The text the student learns for an accepted reply (default: the reply, stripped)."""
        return reply.strip()

    def reference_completion(self, task: Task) -> str | None:
        """A completion built from the task's own worked solution, if it has one (STaR rationalisation)."""
        return None
