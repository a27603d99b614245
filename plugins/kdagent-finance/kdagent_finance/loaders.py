"""Loaders for Financial PhraseBank, TAT-QA and ConvFinQA, read from a folder the user gives; nothing here
is bundled. Sentiment items are choice tasks; questions with a numeric answer are numeric tasks (TAT-QA's
arithmetic and count questions, ConvFinQA's last turns); span answers and yes/no turns are left out."""

import json
import re
from pathlib import Path

from kdagent.evaluate.grading import format_number, parse_number
from kdagent.records import Task, stable_id
from kdagent.splits import Keyed, clip

PHRASEBANK = "financial_phrasebank"
TATQA = ("tatqa/tatqa_dataset_dev.json", "tatqa/tatqa_dataset_test_gold.json")
CONVFINQA = "convfinqa_pot/convfinqa_dev.json"
AGREEMENTS = ("AllAgree", "75Agree", "66Agree", "50Agree")
SENTIMENTS = ["positive", "negative", "neutral"]
SCALES = {"percent": "as a percentage", "thousand": "in thousands", "million": "in millions", "billion": "in billions"}


def files(dataset: str, agreement: str = "AllAgree") -> list[str]:
    """The files a dataset needs, relative to the data folder."""
    if dataset == "phrasebank":
        return [f"{PHRASEBANK}/Sentences_{agreement}.txt"]
    return list(TATQA) if dataset == "tatqa" else [CONVFINQA]


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # the looser agreement files are latin-1
        return raw.decode("latin-1")


def load_phrasebank(data_dir: Path, agreement: str = "AllAgree", max_chars: int = 1200) -> list[Keyed]:
    """Financial PhraseBank sentences at one agreement level (each file holds the stricter ones too), one
    task per distinct sentence; the split key is the sentence, so it lands on the same side at any level."""
    out, seen = [], set()
    for line in _read_text(data_dir / files("phrasebank", agreement)[0]).splitlines():
        sentence, _, label = line.strip().rpartition("@")
        sentence = sentence.strip()
        if label not in SENTIMENTS or not sentence or sentence in seen:
            continue
        seen.add(sentence)
        text = clip(sentence, max_chars)
        rephrasings = [
            f"{text}\nIs this good news, bad news or neither for the company's investors?",
            f'Financial news: "{text}"\nWhat is its sentiment from an investor\'s point of view?',
            f"Classify the investor sentiment of this sentence.\n{text}",
        ]
        task = Task(
            id=f"fin-phrasebank-{stable_id(sentence, length=12)}",
            prompt=f"Sentence: {text}\nSentiment for an investor?",
            choices=SENTIMENTS,
            answer=label,
            kind="choice",
            domain="finance",
            source="phrasebank",
            rephrasings=rephrasings,
            unseen_question=f"Is the following sentence positive, negative or neutral for investors?\n{text}",
        )
        out.append((sentence, task))
    return out


def _table(rows: list[list[str]]) -> str:
    return "\n".join(" | ".join(str(cell).strip() for cell in row) for row in rows)


def load_tatqa(data_dir: Path, max_chars: int = 1200) -> list[Keyed]:
    """TAT-QA (dev and test_gold) arithmetic and count questions: the table and paragraphs as context, the
    scale as a hint in the prompt. The split key is the document (its table), so that questions on one
    document stay on one side."""
    out = []
    for name in TATQA:
        for doc in json.loads((data_dir / name).read_text(encoding="utf-8")):
            paragraphs = "\n".join(p["text"] for p in sorted(doc["paragraphs"], key=lambda p: p["order"]))
            context = clip(f"{_table(doc['table']['table'])}\n\n{paragraphs}", max_chars)
            for q in doc["questions"]:
                value = parse_number(str(q["answer"]))
                if q["answer_type"] not in ("arithmetic", "count") or value is None:
                    continue
                hint = f" Give the number {SCALES[q['scale']]}." if q.get("scale") in SCALES else ""
                task = Task(
                    id=f"fin-tatqa-{q['uid']}",
                    prompt=q["question"].strip() + hint,
                    context=context,
                    answer=format_number(value),
                    kind="numeric",
                    domain="finance",
                    source="tatqa",
                )
                out.append((doc["table"]["uid"], task))
    return out


def load_convfinqa(data_dir: Path, max_chars: int = 1200) -> list[Keyed]:
    """ConvFinQA (dev) conversations with a numeric last answer: the earlier questions and the last one as
    the prompt, the table then the text as context. The split key is the report page the conversation is
    about (ids `Single_<page>-<n>` and `Double_<page>` share it)."""
    out = []
    for item in json.loads((data_dir / CONVFINQA).read_text(encoding="utf-8")):
        if not isinstance(item["answer"], (int, float)):
            continue
        *earlier, last = [q.strip() for q in item["questions"]]
        prompt = (
            ("Earlier questions:\n" + "\n".join(f"- {q}" for q in earlier) + f"\nQuestion: {last}") if earlier else last
        )
        page = re.sub(r"-\d+$", "", item["id"].split("_", 1)[-1])
        task = Task(
            id=f"fin-convfinqa-{stable_id(item['id'], length=12)}",
            prompt=prompt,
            context=clip(f"{item['table']}\n\n{item['text']}", max_chars),
            answer=format_number(float(item["answer"])),
            kind="numeric",
            domain="finance",
            source="convfinqa",
        )
        out.append((page, task))
    return out
