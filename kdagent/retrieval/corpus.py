"""A user's corpus folder: .txt and .md files (one document each) and .jsonl files (one document per
record with a "text" field). Undecodable files and malformed records are reported and skipped."""

import json
import sys
from collections.abc import Iterator
from pathlib import Path

from kdagent.domain import Document
from kdagent.errors import UserError

SUFFIXES = (".txt", ".md", ".jsonl")


def load_folder(folder: str | Path) -> Iterator[Document]:
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"retrieval.corpus_dir: {folder} is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
    if not files:
        raise UserError(f"retrieval.corpus_dir: {folder} has no {', '.join(SUFFIXES)} files")
    for path in files:
        rel = path.relative_to(folder).as_posix()
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            print(f"warning: {path}: not UTF-8, skipped", file=sys.stderr)
            continue
        if path.suffix.lower() != ".jsonl":
            if text.strip():
                yield Document(rel, text)
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                body = record["text"]
                if not isinstance(body, str):
                    raise TypeError("text is not a string")
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                print(f"warning: {path}:{number}: skipped ({exc.__class__.__name__})", file=sys.stderr)
                continue
            yield Document(f"{rel}#{record.get('id', number)}", body)
