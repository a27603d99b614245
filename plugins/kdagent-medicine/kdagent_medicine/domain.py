"""The `medicine` domain: evidence from study abstracts (yes / no / maybe) and clinical knowledge questions.

Without `data_dir` it uses its own seed and held-out tasks and its own notes (kdagent_medicine/data). With
`data_dir` (a folder holding `pubmedqa/` and `medmcqa/`, such as the shared data folder) its tasks come from
the datasets named in `datasets`, split by hash into seed and held-out pools.
"""

from kdagent.splits import Keyed, SplitDomain, require
from kdagent_medicine.loaders import FILES, LOADERS

RUBRIC = """\
Grade the reply as a careful clinician reading the evidence would.
- Correct: it reaches the reference answer (the option) for the right reason.
- For a question about a study, it answers from the context given: "yes" or "no" only when the results
  support it, "maybe" when they are mixed, not significant or not designed to answer the question.
- It invents no study, number, drug or dose, and gives no advice that could harm a patient.
- It is short: the answer first, then at most a sentence of reasoning."""


class Medicine(SplitDomain):
    name = "medicine"
    description = "Evidence from abstracts (PubMedQA: yes / no / maybe) and clinical knowledge (MedMCQA: four options)."
    system_prompt = (
        "You are a careful clinician. Answer from the evidence given when there is some, say 'maybe' when it "
        "is inconclusive, and answer with one of the options given."
    )
    rubric = RUBRIC
    package = "kdagent_medicine"

    def __init__(
        self,
        data_dir: str | None = None,
        datasets: list[str] | None = None,
        held_out_fraction: float = 0.3,
        max_chars: int = 1200,
        labelled: int | None = None,
    ):
        """`datasets`: which of pubmedqa, medmcqa to use with `data_dir` (default: both).
        `labelled`: how many seed tasks keep their label, the rest coming unlabelled (`SplitDomain`)."""
        super().__init__(data_dir, held_out_fraction, max_chars, labelled)
        self.datasets = list(datasets or FILES)
        unknown = [d for d in self.datasets if d not in FILES]
        if unknown:
            raise ValueError(f"unknown dataset {unknown[0]!r} (known: {', '.join(FILES)})")
        if self.data_dir is not None:
            for name in self.datasets:
                require(self.data_dir / FILES[name], "file")

    def public_groups(self) -> list[list[Keyed]]:
        return [LOADERS[name](self.data_dir, self.max_chars) for name in self.datasets]
