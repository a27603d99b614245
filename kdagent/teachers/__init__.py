"""Teachers: one small interface, several kinds (registered through `kdagent_register_teachers`).

Beyond `generate`, a teacher declares what it can do in `capabilities`, a frozenset of the names below, and
the core asks `can(teacher, name)`: it never checks a kind's name, and never probes for methods.
"""

from typing import Protocol

from kdagent.records import Message

PREFILL = "prefill"  # continues a prompt that ends in an assistant message (a prefilled reply)
TOKEN_LOGPROBS = "token_logprobs"  # `token_logprobs(prompts, replies)`: each reply token's log-probability
CHOICE_LOGPROBS = "choice_logprobs"  # `choice_logprobs(prompts, choices)`: each choice's as the continuation
BRANCH_LOGPROBS = "branch_logprobs"  # `branch_logprobs(prompts, stems, leaves)`: each stem + leaf's, in one pass
LOCAL_PATH = "local_path"  # `path`: the folder of the local model it runs
CAPABILITIES = frozenset({PREFILL, TOKEN_LOGPROBS, CHOICE_LOGPROBS, BRANCH_LOGPROBS, LOCAL_PATH})


class Teacher(Protocol):
    label: str  # kind and model, recorded in every record's provenance
    capabilities: frozenset[str]  # what it can do besides `generate`, from CAPABILITIES (may be empty)

    def generate(
        self,
        prompts: list[list[Message]],
        seed: int,
        desc: str = "teacher",
        n: int | None = None,
        temperature: float | None = None,
        stop: list[str] | None = None,
    ) -> list[list[str]]:
        """For each chat prompt, `n` replies (default: the configured `samples`), sampled at `temperature`
        (default: the configured one; 0 is greedy). Judges and expansion call it with their own n and
        temperature; the tool loop passes `stop` (a reply ends at the first stop string; a teacher may
        keep or drop the string itself)."""

    def close(self) -> None:
        """Free the teacher's memory."""


def can(teacher, *capabilities: str) -> bool:
    """Whether `teacher` declares every one of `capabilities`; a teacher that declares none has only `generate`."""
    unknown = set(capabilities) - CAPABILITIES
    if unknown:
        raise ValueError(
            f"unknown teacher capability {sorted(unknown)[0]!r} (known: {', '.join(sorted(CAPABILITIES))})"
        )
    return set(capabilities) <= set(getattr(teacher, "capabilities", ()))
