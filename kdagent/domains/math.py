"""`math`: grade-school math word problems from the public GSM8K and SVAMP files, read from a folder the
user gives (`data_dir`, holding `gsm8k/train.jsonl`, `gsm8k/test.jsonl` and `svamp/SVAMP.json`, as the
shared data folder does); nothing is bundled.

Seed tasks are GSM8K train problems (shuffled by the seed), each with its worked solution; the solution
keeps GSM8K's `<<48/2=24>>` calculator annotations, which the `tool_use` skill turns into calculator
calls and the `cot` skill drops. Held-out tasks are SVAMP and GSM8K test problems, interleaved in file
order (`eval_sets` picks which), so every run is scored on the same items. Graded as `numeric`.
`max_solution_steps` is a curriculum: only seed problems whose worked solution takes at most that many
calculator steps (1 to 2 steps: 2,579 of GSM8K's 7,473), closer to what a small student can learn to do.
"""

import json
import random
import re
from functools import cached_property
from pathlib import Path

from kdagent.domain import Domain
from kdagent.hookspecs import hookimpl
from kdagent.records import Task, stable_id
from kdagent.splits import interleave, require

EVAL_SETS = ("svamp", "gsm8k")
_FINAL = re.compile(r"\n####\s*(.+)\s*$")


def _number(text: str) -> str:
    value = float(text.replace(",", "").replace("$", "").strip())
    return str(int(value)) if value.is_integer() else str(value)


def load_gsm8k(path: Path, split: str) -> list[Task]:
    tasks = []
    for line in require(path, "file").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        match = _FINAL.search(row["answer"])
        answer = _number(match.group(1))
        solution = row["answer"][: match.start()].strip() + f"\nThe answer is {answer}."
        tasks.append(
            Task(
                id=f"gsm8k-{split}-{stable_id(row['question'], length=12)}",
                prompt=row["question"].strip(),
                answer=answer,
                kind="numeric",
                solution=solution,
                domain="math",
            )
        )
    return tasks


def load_svamp(path: Path) -> list[Task]:
    rows = json.loads(require(path, "file").read_text(encoding="utf-8"))
    return [
        Task(
            id=f"svamp-{row['ID']}",
            prompt=f"{row['Body'].strip()} {row['Question'].strip()}",
            answer=_number(str(row["Answer"])),
            kind="numeric",
            domain="math",
        )
        for row in rows
    ]


class MathWordProblems(Domain):
    name = "math"
    description = "GSM8K train problems as seeds; SVAMP and GSM8K test held out (read from data_dir); numeric answers."
    starter = {
        "retrieval": {"enabled": False},
        "feedback": {"fallback_to_reference": True},
    }  # no corpus; GSM8K's worked solutions
    system_prompt = None

    def __init__(
        self, data_dir: str | None = None, eval_sets: list[str] | None = None, max_solution_steps: int | None = None
    ):
        if data_dir is None:
            raise ValueError(
                "domain.options.data_dir is required: a folder holding gsm8k/ and svamp/ (such as ../shared/data)"
            )
        self.data_dir = require(Path(data_dir), "folder")
        self.eval_sets = list(eval_sets or EVAL_SETS)
        unknown = [s for s in self.eval_sets if s not in EVAL_SETS]
        if unknown:
            raise ValueError(f"domain.options.eval_sets: unknown set {unknown[0]!r} (use {', '.join(EVAL_SETS)})")
        if max_solution_steps is not None and max_solution_steps < 1:
            raise ValueError("domain.options.max_solution_steps must be at least 1")
        self.max_solution_steps = max_solution_steps

    @cached_property
    def _train(self) -> list[Task]:
        tasks = load_gsm8k(self.data_dir / "gsm8k" / "train.jsonl", "train")
        if self.max_solution_steps is None:
            return tasks
        return [t for t in tasks if 1 <= t.solution.count("<<") <= self.max_solution_steps]

    def seed_tasks(self, n: int, seed: int) -> list[Task]:
        return random.Random(seed).sample(self._train, min(n, len(self._train)))

    def eval_tasks(self, n: int) -> list[Task]:
        sets = {
            "svamp": lambda: load_svamp(self.data_dir / "svamp" / "SVAMP.json"),
            "gsm8k": lambda: load_gsm8k(self.data_dir / "gsm8k" / "test.jsonl", "test"),
        }
        return interleave([sets[name]() for name in self.eval_sets])[:n]


@hookimpl
def kdagent_register_domains(register):
    register("math", MathWordProblems)
