"""The Domain interface: corpus, seed tasks and held-out tasks for a field (law, medicine, arithmetic...).

Domains are registered through `kdagent_register_domains`; a domain's factory takes the recipe's
`domain.options` as keyword arguments.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from kdagent.records import Task


@dataclass(frozen=True)
class Document:
    """A corpus document; the retrieval stage chunks it into passages."""

    source: str
    text: str


class Domain:
    name: str = "domain"
    description: str = ""
    system_prompt: str | None = None
    # A partial recipe, as YAML data ({"skills": ["label"], "retrieval": {"enabled": False}}), that
    # `kdagent init` merges into its starter recipe for this domain: the skill it is taught with, the
    # settings it needs. The chosen skill's own `starter` is merged after it.
    starter: dict = {}

    def corpus(self) -> Iterable[Document]:
        """Documents to index for grounding (may be empty)."""
        return []

    def seed_tasks(self, n: int, seed: int) -> list[Task]:
        """`n` training tasks with reference answers; deterministic for a seed; disjoint from eval_tasks."""
        raise NotImplementedError

    def eval_tasks(self, n: int) -> list[Task]:
        """`n` held-out tasks in the evaluation format; the same for every run so scores compare."""
        raise NotImplementedError
