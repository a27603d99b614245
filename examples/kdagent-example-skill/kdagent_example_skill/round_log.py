"""`round_log`: append one JSON line per round start and end to $KDAGENT_ROUND_LOG, by default
`<run_dir>/round_log.jsonl`."""

import json
import os
import time
from pathlib import Path

from kdagent.hookspecs import hookimpl


def log_path(run_dir) -> Path:
    return Path(os.environ.get("KDAGENT_ROUND_LOG") or Path(run_dir) / "round_log.jsonl")


def append(path: Path, line: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(line, default=str) + "\n")


@hookimpl
def kdagent_round_start(round, run_dir, recipe):
    append(
        log_path(run_dir),
        {"event": "round_start", "round": round, "recipe": getattr(recipe, "name", None), "time": time.time()},
    )


@hookimpl
def kdagent_round_end(round, run_dir, recipe, metrics):
    accuracy = (metrics.get("eval") or {}).get("accuracy")
    line = {
        "event": "round_end",
        "round": round,
        "recipe": getattr(recipe, "name", None),
        "time": time.time(),
        "accuracy": accuracy,
        "metrics": metrics,
    }
    append(log_path(run_dir), line)
