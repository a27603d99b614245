"""The run directory (docs/run-directory.md): one writer at a time, the recipe it was started with, stage outputs.

A stage is finished when its output file exists: outputs are written to a temporary name and renamed.
`--resume` reuses finished stages; a recipe that changed since the run began is refused, naming the
fields that differ, so a run never silently mixes two recipes.
"""

import fcntl
import json
import os
from pathlib import Path

import yaml

from kdagent.errors import UserError
from kdagent.jsonl import remove_temporaries, write_atomic
from kdagent.recipe import Recipe
from kdagent.recipe_io import masked_dump, recipe_to_yaml


def _flatten(data, prefix="") -> dict:
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path).resolve()  # absolute, so paths under it join the same way on resume
        self._lock = None

    def round_dir(self, round_: int) -> Path:
        return self.path / f"round-{round_:02d}"

    def lock(self) -> None:
        """Take the run directory's lock (a UserError naming the holder's pid when another process has it)."""
        if self._lock is not None:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        fh = open(self.path / ".lock", "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip()
            fh.close()
            raise UserError(
                f"run directory {self.path} is in use by another kdagent process{f' (pid {holder})' if holder.isdigit() else ''}; "
                "wait for it to finish or use another --run-dir"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._lock = fh

    def open(self, recipe: Recipe, resume: bool) -> None:
        self.lock()
        recipe_file = self.path / "recipe.yaml"
        leftovers = [p.name for p in self.path.iterdir() if p.name not in (".lock", "recipe.yaml")]
        if not recipe_file.exists() and leftovers:
            self.close()
            raise UserError(
                f"run directory {self.path} is not empty ({', '.join(sorted(leftovers)[:3])}, ...) and holds no recipe.yaml; use another --run-dir"
            )
        if recipe_file.exists():
            if not resume:
                self.close()
                raise UserError(
                    f"run directory {self.path} already holds a run: pass --resume to continue it, or --run-dir to start a new one"
                )
            before = _flatten(_as_now(yaml.safe_load(recipe_file.read_text(encoding="utf-8")) or {}))
            now = _flatten(masked_dump(recipe))
            changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
            if changed:
                self.close()
                raise UserError(
                    f"cannot resume {self.path}: the recipe changed since the run began ({', '.join(changed)}); "
                    "start a new --run-dir or restore those fields"
                )
            remove_temporaries(self.path)  # a killed writer's, never renamed into place
        else:
            write_atomic(recipe_file, recipe_to_yaml(recipe))

    def close(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def read_json(self, name: str | Path) -> dict | None:
        path = self.path / name
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    def write_json(self, name: str | Path, data) -> None:
        write_atomic(self.path / name, json.dumps(data, indent=2) + "\n")

    def pid_note(self) -> str:
        return f"pid {os.getpid()}"


def _as_now(saved: dict) -> dict:
    """The run's saved recipe as this version of kdagent reads it: a setting added since the run began takes
    its default on both sides, so it is no change. A recipe this version cannot read is compared as saved."""
    try:
        return masked_dump(Recipe.model_validate(saved))
    except ValueError:
        return saved
