"""A user's corpus folder: .txt and .md files (one document each) and .jsonl files (one document per
record with a "text" field). An undecodable file, and a JSONL line that is not UTF-8, not JSON or has no
text, is quarantined (appended to `quarantine` with its line number, reported on stderr) and skipped."""

import sys
from collections.abc import Iterator
from pathlib import Path

from kdagent.domain import Document
from kdagent.errors import UserError
from kdagent.jsonl import read_numbered, report_quarantine

SUFFIXES = (".txt", ".md", ".jsonl")


def load_folder(folder: str | Path, quarantine: list | None = None) -> Iterator[Document]:
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"retrieval.corpus_dir: {folder} is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
    if not files:
        raise UserError(f"retrieval.corpus_dir: {folder} has no {', '.join(SUFFIXES)} files")
    bad = [] if quarantine is None else quarantine
    for path in files:
        rel = path.relative_to(folder).as_posix()
        if path.suffix.lower() != ".jsonl":
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                bad.append({"file": str(path), "line": None, "error": f"not UTF-8 (byte {exc.start})", "text": ""})
                print(f"warning: {path}: not UTF-8, quarantined", file=sys.stderr)
                continue
            if text.strip():
                yield Document(rel, text)
            continue
        before = len(bad)
        records = read_numbered(path, quarantine=bad)
        total = len(records) + len(bad) - before
        for number, record in records:
            if not isinstance(record.get("text"), str):
                bad.append({"file": str(path), "line": number, "error": 'no "text" string', "text": str(record)[:2000]})
                continue
            yield Document(f"{rel}#{record.get('id', number)}", record["text"])
        report_quarantine(sorted(bad[before:], key=lambda b: b["line"]), total, path, None)
