"""JSONL on disk: whole files written atomically, appends that survive a torn last line, safe reads."""

import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from kdagent.errors import UserError

M = TypeVar("M", bound=BaseModel)


def _dump(record) -> str:
    if isinstance(record, BaseModel):
        return record.model_dump_json()
    return json.dumps(record, ensure_ascii=False)


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, fsync, then rename: readers see the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"could not write {path}: {exc.strerror or exc}") from None


def write_jsonl(path: Path, records: Iterable) -> int:
    lines = [_dump(r) for r in records]
    write_atomic(path, "".join(line + "\n" for line in lines))
    return len(lines)


def read_jsonl(path: Path, model: type[M] | None = None) -> list:
    """Records of a JSONL file. A torn last line (no newline, not valid JSON) is reported and dropped."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"data file {path} not found") from None
    lines = raw.split(b"\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            if number == len(lines):  # the last line, without its newline: a torn write
                print(f"warning: {path}: dropped a torn last line ({len(line)} bytes)", file=sys.stderr)
                continue
            raise UserError(f"{path}:{number}: not valid JSON") from None
        records.append(model.model_validate(obj) if model else obj)
    return records


def append_jsonl(path: Path, records: Iterable) -> None:
    """Append records and fsync: a crash leaves at most a torn last line, which is cut off here before
    the next append (and dropped by read_jsonl), so no record is ever half-written into another."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab+") as fh:
        end = fh.seek(0, os.SEEK_END)
        if end:
            fh.seek(end - 1)
            if fh.read(1) != b"\n":  # a torn last line: cut back to the last newline, however far
                pos = end
                while pos > 0:
                    start = max(0, pos - 65536)
                    fh.seek(start)
                    cut = fh.read(pos - start).rfind(b"\n")
                    if cut >= 0:
                        fh.truncate(start + cut + 1)
                        break
                    pos = start
                else:
                    fh.truncate(0)
        fh.seek(0, os.SEEK_END)
        fh.write("".join(_dump(r) + "\n" for r in records).encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())
