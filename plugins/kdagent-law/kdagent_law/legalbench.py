"""Loaders for LegalBench tasks (`legalbench_early/<task>/test.tsv`) and the SARA statutes, read from a
folder the user gives; nothing here is bundled.

Each Yes/No task becomes choice tasks `Options: Yes, No` whose prompt is the item's text under a short
question of our own. The fixed words are kept to a few, so that the loop's n-gram decontamination compares
the items themselves, not the question they share. The task's rule (the first paragraph of LegalBench's
`base_prompt.txt`, its instructions without the few-shot rows, or a rule of our own where it has none)
goes into the task's `rule`, which opens every prompt of it and is not decontaminated: a student trained
across tasks reads each task's rule, so it can apply a rule it was never trained on.
"""

import csv
import re
from pathlib import Path

from kdagent.domain import Document
from kdagent.records import Task, stable_id
from kdagent.splits import Keyed, clip

LEGALBENCH = "legalbench_early"
STATUTES = "sara_statutes/statutes"
SARA = "statutory_reasoning_assessment"
# task -> (what the text is, the question asked of it)
YES_NO = {
    "CUAD_Governing_Law": ("Clause", "Does it name the governing law?"),
    "CUAD_Most_Favored_Nation": ("Clause", "Does it grant most-favored-nation terms?"),
    "CUAD_Non-Disparagement": ("Clause", "Does it forbid disparagement?"),
    "CUAD_Price_Restrictions": ("Clause", "Does it restrict price changes?"),
    "CUAD_Third_Party_Beneficiary": ("Clause", "Does it create third-party beneficiary rights?"),
    **{f"diversity_{i}": ("Facts", "Is there diversity jurisdiction?") for i in range(1, 7)},
    "overruling": ("Sentence", "Does it overrule a previous case?"),
    "personal_jurisdiction": ("Facts", "Is there personal jurisdiction?"),
}
TASKS = (*YES_NO, SARA)
OWN_RULES = {
    "overruling": "A sentence overrules a previous case when it declares that the earlier decision is no longer good law "
    "(it is overruled, disapproved or abrogated); citing, following or distinguishing a case does not overrule it."
}


def task_rule(data_dir: Path, task: str) -> str | None:
    """The task's instructions: the first paragraph of its base_prompt.txt, else a rule of our own."""
    path = data_dir / LEGALBENCH / task / "base_prompt.txt"
    if path.exists():
        first = path.read_text(encoding="utf-8").strip().split("\n\n", 1)[0].strip()
        if first and "{{" not in first:
            return first
    return OWN_RULES.get(task)


def task_file(data_dir: Path, task: str) -> Path:
    return data_dir / LEGALBENCH / task / "test.tsv"


def read_tsv(path: Path) -> list[dict[str, str]]:
    csv.field_size_limit(10**8)
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def load_yes_no(data_dir: Path, task: str, max_chars: int = 1200) -> list[Keyed]:
    """A Yes/No LegalBench task; the split key is the item's text (one clause asked about in two tasks
    lands on the same side)."""
    kind, question = YES_NO[task]
    rule = task_rule(data_dir, task)
    out = []
    for row in read_tsv(task_file(data_dir, task)):
        text, label = row["text"].strip(), row["label"].strip().capitalize()
        if label not in ("Yes", "No"):
            continue
        body = clip(text, max_chars)
        prompt = f"{kind}: {body}\n{question}"
        rephrasings = [f"{question}\n{kind}: {body}", f"Read the {kind.lower()} below.\n{body}\nQuestion: {question}"]
        unseen = (
            f"Legal question, Yes or No: {question[0].lower() + question[1:]} It concerns this {kind.lower()}: {body}"
        )
        out.append(
            (
                text,
                Task(
                    id=f"law-{task}-{stable_id(text, length=12)}",
                    prompt=prompt,
                    choices=["Yes", "No"],
                    answer=label,
                    kind="choice",
                    domain="law",
                    source=task,
                    rephrasings=rephrasings,
                    unseen_question=unseen,
                    **({"rule": rule} if rule else {}),
                ),
            )
        )
    return out


def _plain(text: str) -> str:
    return re.sub(r"\s*<br>\s*", "\n", text).strip()


def load_sara(data_dir: Path, max_chars: int = 1200) -> list[Keyed]:
    """SARA cases: entailment items as choice tasks (Entailment or Contradiction, from the statute snippet
    and the facts) and tax questions as numeric tasks in dollars (the statutes are the corpus). The split
    key is the case without its _pos/_neg suffix."""
    out = []
    for row in read_tsv(task_file(data_dir, SARA)):
        case, label = row["case id"].strip(), row["label"].strip()
        key = re.sub(r"_(pos|neg)$", "", case)
        facts = _plain(row["description"])
        if label in ("Entailment", "Contradiction"):
            context = clip(f"Statute:\n{_plain(row['statute'])}\n\nFacts:\n{facts}", max_chars)
            task = Task(
                id=f"law-sara-{case}",
                prompt=f"Statement: {_plain(row['question'])}\nIs it entailed or contradicted?",
                context=context,
                choices=["Entailment", "Contradiction"],
                answer=label,
                kind="choice",
                domain="law",
                source=SARA,
            )
        else:
            task = Task(
                id=f"law-sara-{case}",
                prompt=f"{_plain(row['question'])} Answer in dollars.",
                context=clip(facts, max_chars),
                answer=label.replace("$", "").replace(",", ""),
                kind="numeric",
                domain="law",
                source=SARA,
            )
        out.append((key, task))
    return out


def load_task(data_dir: Path, task: str, max_chars: int = 1200) -> list[Keyed]:
    return load_sara(data_dir, max_chars) if task == SARA else load_yes_no(data_dir, task, max_chars)


def statutes(data_dir: Path) -> list[Document]:
    """The SARA statutes (US tax code sections), one document per section file."""
    return [
        Document(f"sara/{p.name}", p.read_text(encoding="utf-8")) for p in sorted((data_dir / STATUTES).glob("*.txt"))
    ]
