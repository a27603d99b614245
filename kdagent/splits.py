"""Seed and held-out splits of public data, and a domain package's own tasks and notes: the base of the
kdagent-law, kdagent-medicine and kdagent-finance domains, and of any domain whose data comes in groups.

A public item is held out when the hash of its split key falls below `held_out_fraction`. The key is the
item's own text, or the document it belongs to, so that questions on one document never straddle the split.
The split depends on nothing but the item: held-out tasks are the same on every run and machine, and seed
tasks never include one.
"""

import json
import random
from functools import cached_property
from importlib import resources
from pathlib import Path

from kdagent.domain import Document, Domain
from kdagent.errors import UserError
from kdagent.records import Task, stable_id

Keyed = tuple[str, Task]  # (split key, task)


def bucket(key: str) -> float:
    """A number in [0, 1) fixed by `key`."""
    return int(stable_id("held-out", key), 16) / 16**16


def split(items: list[Keyed], held_out_fraction: float) -> tuple[list[Task], list[Task]]:
    """(seed pool, held-out pool) of one group, each in hash order; a repeated task id is kept once."""
    seen: set[str] = set()
    seeds: list[Task] = []
    held_out: list[Task] = []
    for key, task in sorted(items, key=lambda item: (bucket(item[0]), item[1].id)):
        if task.id not in seen:
            seen.add(task.id)
            (held_out if bucket(key) < held_out_fraction else seeds).append(task)
    return seeds, held_out


def interleave(groups: list[list[Task]]) -> list[Task]:
    """One task of each group in turn, so that any prefix mixes the groups."""
    out: list[Task] = []
    for i in range(max(map(len, groups), default=0)):
        out += [group[i] for group in groups if i < len(group)]
    return out


def unlabel(task: Task) -> Task:
    """`task` without what gives its answer away: the answer (""), the worked solution, the gold index."""
    data = task.model_dump(exclude={"answer_index"})
    return Task.model_validate({**data, "answer": "", "solution": None})


def require(path: Path, what: str) -> Path:
    """`path`, or a UserError naming it when it does not exist."""
    if not path.exists():
        raise UserError(
            f"domain.options.data_dir: {what} {path} not found (a relative data_dir is read from the current directory, {Path.cwd()})"
        )
    return path


def clip(text: str, max_chars: int, keep_end: bool = False) -> str:
    """`text` cut at a word boundary to at most `max_chars` characters, marked with "..." where cut: its
    start is kept, or its end with `keep_end`."""
    text = text.strip()
    if len(text) <= max_chars:
        return text
    if keep_end:
        return "..." + text[len(text) - max_chars + 3 :].split(" ", 1)[-1]
    return text[: max_chars - 3].rsplit(" ", 1)[0] + "..."


class SplitDomain(Domain):
    """A domain whose tasks come in groups (datasets or sub-tasks), split into seed and held-out pools.

    Without `data_dir` it uses the package's own `data/seed_tasks.jsonl` and `data/held_out.jsonl`; with
    it, `public_groups()` reads the public files (never bundled) and each group is split by `split`.

    With `labelled: k`, only k seed tasks keep their reference answer, the same k in every round and run:
    the first k of the seed pools in hash order, the groups interleaved. `seed_tasks(n, seed)` gives those
    first (as many as `n` allows, shuffled by `seed`), then unlabelled tasks drawn by `seed` from the rest,
    with `answer` "" and no `solution` or `answer_index`: the loop labels them itself (`feedback.unreferenced`,
    such as a self-consistency vote). The held-out tasks are untouched.
    """

    package: str = ""  # the package whose data/ holds notes.md, seed_tasks.jsonl and held_out.jsonl
    rubric: str = ""
    starter = {"skills": ["label"]}  # labelled choices: answered and taught as the bare option

    def __init__(
        self,
        data_dir: str | None = None,
        held_out_fraction: float = 0.3,
        max_chars: int = 1200,
        labelled: int | None = None,
    ):
        if labelled is not None and labelled < 0:
            raise ValueError(f"labelled must be at least 0 (got {labelled})")
        self.labelled = labelled
        if not 0 < held_out_fraction < 1:
            raise ValueError(f"held_out_fraction must be between 0 and 1 (got {held_out_fraction})")
        if max_chars < 100:
            raise ValueError(f"max_chars must be at least 100 (got {max_chars})")
        self.data_dir = None if data_dir is None else require(Path(data_dir), "folder")
        self.held_out_fraction = held_out_fraction
        self.max_chars = max_chars

    def public_groups(self) -> list[list[Keyed]]:
        """The public tasks under `data_dir`, one list of (split key, task) per group."""
        raise NotImplementedError

    def train_only_groups(self) -> list[list[Keyed]]:
        """Groups whose every task trains and none is held out (too small to score); none by default."""
        return []

    def read_data(self, name: str) -> str:
        return resources.files(self.package).joinpath(f"data/{name}").read_text(encoding="utf-8")

    def own_tasks(self, name: str) -> list[Task]:
        return [Task.model_validate(json.loads(line)) for line in self.read_data(name).splitlines() if line.strip()]

    @cached_property
    def pools(self) -> tuple[list[list[Task]], list[list[Task]]]:
        """(seed pools, held-out pools), one of each per group."""
        if self.data_dir is None:
            return [self.own_tasks("seed_tasks.jsonl")], [self.own_tasks("held_out.jsonl")]
        parts = [split(group, self.held_out_fraction) for group in self.public_groups()]
        parts += [split(group, 0.0) for group in self.train_only_groups()]
        return [seeds for seeds, _ in parts], [held for _, held in parts]

    def seed_tasks(self, n: int, seed: int) -> list[Task]:
        """`n` training tasks (all of them when there are fewer): each group shuffled by `seed`, then interleaved;
        with `labelled`, the labelled tasks first and the others without their answer (see the class)."""
        rng = random.Random(seed)
        drawn = interleave([rng.sample(pool, len(pool)) for pool in self.pools[0]])
        if self.labelled is None:
            return drawn[:n]
        gold = {t.id for t in interleave(self.pools[0])[: self.labelled]}
        labelled = [t for t in drawn if t.id in gold]
        unlabelled = [unlabel(t) for t in drawn if t.id not in gold]
        return (labelled + unlabelled)[:n]

    def eval_tasks(self, n: int) -> list[Task]:
        """The first `n` held-out tasks (all of them when there are fewer), the groups interleaved."""
        return interleave(self.pools[1])[:n]

    def corpus(self):
        yield Document(f"{self.package}/notes.md", self.read_data("notes.md"))
