"""Teachers: one small interface, several kinds (registered through `kdagent_register_teachers`)."""

from typing import Protocol

from kdagent.records import Message


class Teacher(Protocol):
    label: str  # kind and model, recorded in every record's provenance

    def generate(self, prompts: list[list[Message]], seed: int, desc: str = "teacher") -> list[list[str]]:
        """For each chat prompt, the configured number of sampled replies."""

    def close(self) -> None:
        """Free the teacher's memory."""
