"""The `law` domain: contract clauses, federal jurisdiction, overruling sentences and tax statutes.

Without `data_dir` it uses its own seed and held-out tasks and its own notes (kdagent_law/data). With
`data_dir` (a folder holding `legalbench_early/` and `sara_statutes/`, such as the shared data folder) its
tasks come from the LegalBench tasks named in `tasks`, split by hash into seed and held-out pools, and the
SARA statutes join the notes as the corpus.
"""

from kdagent.splits import Keyed, SplitDomain, require
from kdagent_law.legalbench import STATUTES, TASKS, YES_NO, load_task, statutes, task_file

RUBRIC = """\
Grade the reply as a careful lawyer would.
- Correct: it reaches the reference answer (the option, or the dollar amount) for the right reason.
- It applies the rule that governs the question (the clause's words, complete diversity and an amount in
  controversy above $75,000, minimum contacts, the statute's terms) to the facts given, and nothing else.
- It invents no statute, case, fact or clause text; a citation must be to a passage or the context given.
- It is short: the answer first, then at most a sentence of reasoning."""


class Law(SplitDomain):
    name = "law"
    description = (
        "Contract clauses (CUAD), diversity and personal jurisdiction, overruling, SARA tax statutes; Yes/No choices."
    )
    system_prompt = (
        "You are a careful legal analyst. Read the clause or facts, apply the governing rule, and answer with "
        "one of the options given."
    )
    rubric = RUBRIC
    package = "kdagent_law"

    def __init__(
        self,
        data_dir: str | None = None,
        tasks: list[str] | None = None,
        held_out_fraction: float = 0.3,
        max_chars: int = 1200,
        labelled: int | None = None,
        train_tasks: list[str] | None = None,
    ):
        """`tasks`: LegalBench task folders to use with `data_dir` (default: every Yes/No task), split into seed
        and held-out pools. `train_tasks`: more task folders whose every row trains and none is held out (tasks
        too small to score). `labelled`: how many seed tasks keep their label, the rest coming unlabelled
        (`SplitDomain`)."""
        super().__init__(data_dir, held_out_fraction, max_chars, labelled)
        self.tasks = list(tasks or YES_NO)
        self.train_tasks = list(train_tasks or [])
        unknown = [t for t in self.tasks + self.train_tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown LegalBench task {unknown[0]!r} (known: {', '.join(TASKS)})")
        both = [t for t in self.train_tasks if t in self.tasks]
        if both:
            raise ValueError(f"LegalBench task {both[0]!r} is in both tasks and train_tasks; name it in one")
        if self.data_dir is not None:
            for task in self.tasks + self.train_tasks:
                require(task_file(self.data_dir, task), "file")
            require(self.data_dir / STATUTES, "folder")

    def public_groups(self) -> list[list[Keyed]]:
        return [load_task(self.data_dir, task, self.max_chars) for task in self.tasks]

    def train_only_groups(self) -> list[list[Keyed]]:
        return [load_task(self.data_dir, task, self.max_chars) for task in self.train_tasks]

    def corpus(self):
        yield from super().corpus()
        if self.data_dir is not None:
            yield from statutes(self.data_dir)
