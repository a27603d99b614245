"""Teachers: one small interface, several kinds (registered through `kdagent_register_teachers`)."""

from typing import Protocol

from kdagent.records import Message


class Teacher(Protocol):
    label: str  # kind and model, recorded in every record's provenance

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
