"""The one resume mechanism of a round's stages: a finished file, or partial chunks.

A stage is finished when its records file exists (`<file>.jsonl`, written atomically after its drop counts
`<file>.counts.json`); `--resume` reads it back instead of running the stage. A stage that calls a teacher
works in chunks, each with a seed of its own: every finished chunk's notes (a JSON object: its judging costs,
the teacher's failures) go to `<name>.partial.json` under the chunk's index, then its records are appended
to `<name>.partial.jsonl`, so a killed run redoes only the chunks whose notes or records are missing and
ends with what an uninterrupted run writes, counts included. Both partial files go once the stage is finished.
"""

import json
from pathlib import Path

from kdagent.jsonl import append_jsonl, read_jsonl, write_atomic, write_jsonl


def partial_files(partial: Path) -> list[str]:
    """The work-in-progress files of a chunked stage whose records go to `partial` (`<name>.partial.jsonl`)."""
    return [str(partial), str(Path(partial).with_suffix(".json"))]


def finished_or_run(path: Path, record, resume: bool, run) -> tuple[list, dict]:
    """Records and drop counts of a stage: read back on resume when `path` exists, else `run()` and written (counts
    first, then the records, whose file marks the stage finished); the files named by counts["_partial"] are
    then removed."""
    counts_path = path.with_name(f"{path.stem}.counts.json")
    if resume and path.exists():
        counts = json.loads(counts_path.read_text(encoding="utf-8")) if counts_path.exists() else {}
        return read_jsonl(path, record), counts
    records, counts = run()
    partial = counts.pop("_partial", None)
    write_atomic(counts_path, json.dumps(counts, indent=2) + "\n")
    write_jsonl(path, records)
    for leftover in [partial] if isinstance(partial, str) else partial or []:
        Path(leftover).unlink(missing_ok=True)
    return records, counts


def chunked(
    partial: Path | None,
    record,
    items: list,
    size: int,
    run_chunk,
    item_key,
    record_keys,
    want: int = 1,
    resume: bool = True,
) -> tuple[dict[str, list], dict[str, dict]]:
    """Run `run_chunk(index, part) -> (records, notes)` over `items`, `size` at a time, saving each finished chunk
    beside `partial` (none saved when it is None). A chunk is done when its notes exist and each of its items has
    `want` records; done chunks are read back, not run again. `record_keys(record)` is (its item's key, its own
    key); a record written twice counts once. Returns each item's records (by `item_key(item)`, in the order
    written) and every chunk's notes (by index, as a string)."""
    notes_path = Path(partial).with_suffix(".json") if partial is not None else None
    if partial is not None and not resume:
        for leftover in partial_files(partial):
            Path(leftover).unlink(missing_ok=True)
    have: dict[str, dict] = {}
    if partial is not None and partial.exists():
        for rec in read_jsonl(partial, record):
            item, own = record_keys(rec)
            have.setdefault(item, {}).setdefault(own, rec)
    notes = json.loads(notes_path.read_text(encoding="utf-8")) if notes_path is not None and notes_path.exists() else {}
    results: dict[str, list] = {}
    for c, start in enumerate(range(0, len(items), size)):
        part = items[start : start + size]
        if str(c) not in notes or any(len(have.get(item_key(x), {})) < want for x in part):
            records, notes[str(c)] = run_chunk(c, part)
            if partial is not None:
                write_atomic(notes_path, json.dumps(notes) + "\n")
                append_jsonl(partial, records)
            have.update({item_key(x): {} for x in part})
            for rec in records:
                item, own = record_keys(rec)
                have[item].setdefault(own, rec)
        results.update((item_key(x), list(have.get(item_key(x), {}).values())) for x in part)
    return results, notes
