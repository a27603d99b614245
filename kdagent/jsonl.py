"""JSONL on disk: whole files written atomically, appends that survive a torn last line, safe reads, and
user files read with their malformed lines quarantined. Registered secrets are redacted from every write."""

import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from kdagent.errors import UserError, redact

M = TypeVar("M", bound=BaseModel)


def _dump(record) -> str:
    if isinstance(record, BaseModel):
        return record.model_dump_json()
    return json.dumps(record, ensure_ascii=False)


def remove_temporaries(folder: Path) -> int:
    """Delete the temporary files `write_atomic` leaves under `folder` when its process is killed before
    the rename (only safe for the folder's one writer, such as the run directory's lock holder)."""
    stale = [p for p in Path(folder).rglob(".*.tmp-*") if p.is_file() and p.name.rsplit(".tmp-", 1)[1].isdigit()]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, fsync, then rename: readers see the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(redact(text))
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


def read_jsonl(path: Path, model: type[M] | None = None, quarantine: list | None = None) -> list:
    """Records of a JSONL file. A torn last line (no newline, not valid JSON) is reported and dropped.

    Any other line that is not UTF-8 or not a JSON object is an error naming it; with `quarantine` (a list,
    for user files) it is appended there instead, as {"file", "line", "error", "text"}, and the rest is read."""
    return [model.model_validate(obj) if model else obj for _, obj in read_numbered(path, quarantine)]


def read_numbered(path: Path, quarantine: list | None = None) -> list[tuple[int, object]]:
    """(line number, JSON value) for each record of a JSONL file, as `read_jsonl` reads them."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"data file {path} not found") from None
    except IsADirectoryError:
        raise UserError(f"data file {path} is a folder") from None
    lines = raw.split(b"\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line.decode("utf-8-sig" if number == 1 else "utf-8"))
            if quarantine is not None and not isinstance(obj, dict):
                raise ValueError(f"a JSON {type(obj).__name__}, not an object")
        except UnicodeDecodeError as exc:
            error = f"not UTF-8 (byte {exc.start})"
        except ValueError as exc:
            error = f"not valid JSON ({exc.msg})" if isinstance(exc, json.JSONDecodeError) else str(exc)
        except RecursionError:
            error = "not valid JSON (nested too deeply to read)"
        else:
            records.append((number, obj))
            continue
        if number == len(lines) and quarantine is None:  # the last line, without its newline: a torn write
            print(f"warning: {path}: dropped a torn last line ({len(line)} bytes)", file=sys.stderr)
            continue
        if quarantine is None:
            raise UserError(f"{path}:{number}: {error}")
        quarantine.append(
            {"file": str(path), "line": number, "error": error, "text": line.decode("utf-8", "backslashreplace")[:2000]}
        )
    return records


def report_quarantine(bad: list, total: int, path, out: Path | None) -> None:
    """Warnings for the quarantined lines of one file: the first ten by line, then a count."""
    for b in bad[:10]:
        print(f"warning: {b['file']}:{b['line']}: {b['error']}; quarantined", file=sys.stderr)
    if bad:
        where = f" (see {out})" if out else ""
        print(
            f"warning: {path}: quarantined {len(bad)} of {total} records{where}; the rest is used",
            file=sys.stderr,
            flush=True,
        )


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
        fh.write(redact("".join(_dump(r) + "\n" for r in records)).encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())
