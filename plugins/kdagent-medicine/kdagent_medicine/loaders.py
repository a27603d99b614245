"""Loaders for PubMedQA and MedMCQA, read from a folder the user gives; nothing here is bundled."""

import json
from pathlib import Path

from kdagent.records import Task, stable_id
from kdagent.splits import Keyed, clip

PUBMEDQA = "pubmedqa/pubmedqa_dev.json"
MEDMCQA = "medmcqa/dev_as_test_single_choice.jsonl"
FILES = {"pubmedqa": PUBMEDQA, "medmcqa": MEDMCQA}


def load_pubmedqa(data_dir: Path, max_chars: int = 1200) -> list[Keyed]:
    """PubMedQA (expert-labelled): the question over the abstract's CONTEXTS, joined and cut to `max_chars`
    from the front, so that the last sections (the results) stay; options yes, no, maybe. LONG_ANSWER (the
    abstract's conclusion) is never in a prompt: it is the task's `solution`, a rationale that the `label`
    skill can teach beside the answer (`rationales: true`). The split key is the PMID."""
    items = json.loads((data_dir / PUBMEDQA).read_text(encoding="utf-8"))
    out = []
    for pmid, item in items.items():
        question = item["QUESTION"].strip()
        task = Task(
            id=f"med-pubmedqa-{pmid}",
            prompt=question,
            context=clip("\n".join(item["CONTEXTS"]), max_chars, keep_end=True),
            choices=["yes", "no", "maybe"],
            answer=item["final_decision"],
            kind="choice",
            domain="medicine",
            source="pubmedqa",
            rephrasings=[
                f"Question: {question}\nWhat do the study's results say?",
                f"According to this abstract: {question}",
            ],
            unseen_question=f"Given the study above, answer the research question yes, no or maybe. {question}",
            solution=(item.get("LONG_ANSWER") or "").strip() or None,
        )  # the abstract's conclusion: a rationale to train on, never shown at evaluation
        out.append((pmid, task))
    return out


def load_medmcqa(data_dir: Path, max_chars: int = 1200) -> list[Keyed]:
    """MedMCQA (dev, single answer): the question with its four options; `answer_index` marks the gold one
    (option texts can repeat). The split key is the question text."""
    out = []
    with open(data_dir / MEDMCQA, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            record = json.loads(line)
            options = [str(record["options"][letter]).strip() for letter in "ABCD"]
            index = "ABCD".index(record["answer_idx"])
            question = clip(record["question"], max_chars)
            task = Task(
                id=f"med-medmcqa-{stable_id(record.get('realidx'), question, options, length=12)}",
                prompt=question,
                choices=options,
                answer=options[index],
                answer_index=index,
                kind="choice",
                domain="medicine",
                source="medmcqa",
            )
            out.append((record["question"].strip(), task))
    return out


LOADERS = {"pubmedqa": load_pubmedqa, "medmcqa": load_medmcqa}
