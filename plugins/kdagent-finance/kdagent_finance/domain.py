"""The `finance` domain: the sentiment of financial news for an investor, and numbers read from reports.

Without `data_dir` it uses its own seed and held-out tasks and its own notes (kdagent_finance/data). With
`data_dir` (a folder holding `financial_phrasebank/`, `tatqa/` and `convfinqa_pot/`, such as the shared data
folder) its tasks come from the datasets named in `datasets`, split by hash into seed and held-out pools.
Financial PhraseBank is licensed CC BY-NC-SA 3.0 (non-commercial): it is read from the user's copy, never
bundled.
"""

from functools import cached_property

from kdagent.splits import Keyed, SplitDomain, require
from kdagent_finance.loaders import AGREEMENTS, files, load_convfinqa, load_phrasebank, load_tatqa

DATASETS = ("phrasebank", "tatqa", "convfinqa")
RUBRIC = """\
Grade the reply as a careful financial analyst would.
- Correct: it reaches the reference answer (the option, or the number within rounding) for the right reason.
- Sentiment is judged from an investor's view of the company named, from what the sentence says and nothing
  else: growth, profit and won contracts are positive; losses, cuts and layoffs negative; plain facts neutral.
- A number is computed from the table and text given, with the right sign, unit and scale; no invented figures.
- It is short: the answer first, then at most a sentence or a formula of reasoning."""


class Finance(SplitDomain):
    name = "finance"
    description = "Financial news sentiment (Financial PhraseBank) and numbers from reports (TAT-QA, ConvFinQA)."
    system_prompt = (
        "You are a careful financial analyst. Judge news from an investor's point of view, compute numbers "
        "from the table and text given, and answer with one of the options or a number."
    )
    rubric = RUBRIC
    package = "kdagent_finance"

    def __init__(
        self,
        data_dir: str | None = None,
        datasets: list[str] | None = None,
        agreement: str = "AllAgree",
        held_out_fraction: float = 0.3,
        max_chars: int = 1200,
        eval_agreement: str | None = None,
        labelled: int | None = None,
    ):
        """`datasets`: which of phrasebank, tatqa, convfinqa to use with `data_dir` (default: all three);
        `agreement`: the Financial PhraseBank file the tasks come from (AllAgree, 75Agree, 66Agree or 50Agree);
        `eval_agreement`: a stricter file whose sentences alone are held out (e.g. train on 75Agree, evaluate
        on AllAgree sentences, whose labels every annotator agreed on); the split stays by sentence;
        `labelled`: how many seed tasks keep their label, the rest coming unlabelled (`SplitDomain`)."""
        super().__init__(data_dir, held_out_fraction, max_chars, labelled)
        if eval_agreement is not None and eval_agreement not in AGREEMENTS:
            raise ValueError(f"unknown eval_agreement {eval_agreement!r} (known: {', '.join(AGREEMENTS)})")
        self.eval_agreement = eval_agreement
        self.datasets = list(datasets or DATASETS)
        unknown = [d for d in self.datasets if d not in DATASETS]
        if unknown:
            raise ValueError(f"unknown dataset {unknown[0]!r} (known: {', '.join(DATASETS)})")
        if agreement not in AGREEMENTS:
            raise ValueError(f"unknown agreement {agreement!r} (known: {', '.join(AGREEMENTS)})")
        self.agreement = agreement
        if self.data_dir is not None:
            for name in self.datasets:
                for path in files(name, agreement):
                    require(self.data_dir / path, "file")

    def public_groups(self) -> list[list[Keyed]]:
        loaders = {
            "phrasebank": lambda: load_phrasebank(self.data_dir, self.agreement, self.max_chars),
            "tatqa": lambda: load_tatqa(self.data_dir, self.max_chars),
            "convfinqa": lambda: load_convfinqa(self.data_dir, self.max_chars),
        }
        return [loaders[name]() for name in self.datasets]

    @cached_property
    def pools(self):
        seeds, held_out = super().pools
        if self.data_dir is None or self.eval_agreement is None or "phrasebank" not in self.datasets:
            return seeds, held_out
        strict = {task.id for _, task in load_phrasebank(self.data_dir, self.eval_agreement, self.max_chars)}
        return seeds, [[t for t in pool if t.source != "phrasebank" or t.id in strict] for pool in held_out]
