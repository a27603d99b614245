"""`arithmetic`: generated one-step word problems with worked solutions, and a corpus of worked examples
and strategy notes to ground them. All of it is of kdagent's own making (no public dataset is copied).

Held-out tasks come from a fixed stream so every run is scored on the same set; seed tasks and corpus
examples come from other streams and never repeat a held-out problem.
"""

import random
from importlib import resources

from kdagent.domain import Document, Domain
from kdagent.hookspecs import hookimpl
from kdagent.records import Task, stable_id

NAMES = ["Tom", "Ana", "Liam", "Mia", "Omar", "Zoe", "Ravi", "Lena", "Sam", "Ivy", "Noah", "Emma", "Kai", "Nora"]
ITEMS = [
    "pens",
    "apples",
    "stickers",
    "marbles",
    "books",
    "cookies",
    "shells",
    "cards",
    "coins",
    "balloons",
    "stamps",
    "eggs",
]
EVAL_STREAM = 1_000_003
CORPUS_STREAM = 2_000_003
MAX_EVAL = 500


def _problem(rng: random.Random, operations: list[str], max_number: int) -> tuple[str, int, str]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    op = rng.choice(operations)
    if op == "add":
        a, b = rng.randint(2, max_number), rng.randint(2, max_number)
        if rng.random() < 0.5:
            q = f"{name} has {a} {item}. {name} gets {b} more {item}. How many {item} does {name} have now?"
            s = f"{name} starts with {a} {item} and gets {b} more, so we add: {a} + {b} = {a + b}."
        else:
            q = f"There are {a} {item} in a box and {b} {item} on the table. How many {item} are there in all?"
            s = f"We add the {item} in the box and on the table: {a} + {b} = {a + b}."
        return q, a + b, s
    if op == "sub":
        a = rng.randint(5, max_number)
        b = rng.randint(1, a - 1)
        if rng.random() < 0.5:
            q = f"{name} has {a} {item}. {name} gives {b} {item} to a friend. How many {item} does {name} have left?"
            s = f"{name} starts with {a} {item} and gives away {b}, so we subtract: {a} - {b} = {a - b}."
        else:
            q = f"{name} had {a} {item} and lost {b} of them. How many {item} does {name} have now?"
            s = f"Losing {b} of {a} {item} leaves {a} - {b} = {a - b}."
        return q, a - b, s
    if op == "mul":
        a, b = rng.randint(2, 9), rng.randint(2, 12)
        q = f"{name} buys {a} bags with {b} {item} in each bag. How many {item} does {name} buy?"
        s = f"There are {a} bags of {b} {item}, so we multiply: {a} x {b} = {a * b}."
        return q, a * b, s
    raise ValueError(f"unknown operation {op!r} (use add, sub, mul)")


class Arithmetic(Domain):
    name = "arithmetic"
    description = "Generated one-step word problems (add, subtract, multiply) with worked solutions."

    def __init__(self, operations: list[str] | None = None, max_number: int = 50, corpus_examples: int = 60):
        self.operations = list(operations or ["add", "sub", "mul"])
        for op in self.operations:
            if op not in ("add", "sub", "mul"):
                raise ValueError(f"domain.options.operations: unknown operation {op!r} (use add, sub, mul)")
        self.max_number = max_number
        self.corpus_examples = corpus_examples

    def _stream(self, seed: int, n: int, exclude: set[str], split: str) -> list[Task]:
        rng = random.Random(seed)
        tasks: list[Task] = []
        seen = set(exclude)
        attempts = 0
        while len(tasks) < n:
            attempts += 1
            if attempts > 200 * n + 1000:
                raise ValueError(f"could not generate {n} distinct {split} problems; raise domain.options.max_number")
            q, answer, solution = _problem(rng, self.operations, self.max_number)
            if q in seen:
                continue
            seen.add(q)
            tasks.append(
                Task(
                    id=f"arith-{split}-{stable_id(q, length=12)}",
                    prompt=q,
                    answer=str(answer),
                    kind="numeric",
                    solution=f"{solution} The answer is {answer}.",
                    domain=self.name,
                )
            )
        return tasks

    def eval_tasks(self, n: int) -> list[Task]:
        if n > MAX_EVAL:
            raise ValueError(f"at most {MAX_EVAL} held-out tasks (asked for {n})")
        return self._stream(EVAL_STREAM, n, set(), "eval")

    def _held_out_prompts(self) -> set[str]:
        """Every prompt that can ever be held out, so seed tasks and corpus never contain one."""
        return {t.prompt for t in self.eval_tasks(MAX_EVAL)}

    def seed_tasks(self, n: int, seed: int) -> list[Task]:
        return self._stream(seed, n, self._held_out_prompts(), "seed")

    def corpus(self):
        notes = resources.files("kdagent.domains").joinpath("data/arithmetic_notes.md").read_text(encoding="utf-8")
        yield Document("arithmetic_notes.md", notes)
        examples = self._stream(CORPUS_STREAM, self.corpus_examples, self._held_out_prompts(), "corpus")
        for task in examples:
            yield Document(
                f"worked-example/{task.id}", f"Worked example.\nQuestion: {task.prompt}\nAnswer: {task.solution}"
            )


@hookimpl
def kdagent_register_domains(register):
    register("arithmetic", Arithmetic)
