"""One rank of an update under `accelerate launch` (kdagent/update/launch.py starts it):

    python -m kdagent.update.worker JOB_DIR

rebuilds the job the loop wrote into JOB_DIR, gives this rank its share of `update.batch_size` (batch_size / N
of N processes, so the batch of a step over all of them is the recipe's), and calls the registered updater's
`train` as the loop would on one process. Rank 0 writes `report.json`: the report, or the ValueError or
UserError that stopped training (the loop raises it as its own). The rank stops when the loop's process is gone
(killed), so a killed run leaves no training behind it, and its `--resume` starts from the last checkpoint.
"""

import importlib
import json
import os
import sys
import threading
import time
from pathlib import Path

from kdagent.update.launch import JOB, PARENT_ENV, RECIPE, RECORDS, REPORT


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # a zombie is gone
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True


def watch_parent(pid: int, every: float = 0.5) -> None:
    """Exit this rank (at once, status 1) when process `pid` (the loop) is gone."""

    def watch():
        while _alive(pid):
            time.sleep(every)
        print(
            f"[kdagent] the run's process {pid} is gone; rank {os.environ.get('RANK', '0')} stops",
            file=sys.stderr,
            flush=True,
        )
        os._exit(1)

    threading.Thread(target=watch, name="kdagent-parent-watch", daemon=True).start()


def _record_type(spec: str):
    module, _, name = spec.partition(":")
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def read_job(folder: Path, world_size: int):
    """The UpdateJob the loop wrote into `folder`, for one of `world_size` ranks, and the updater's name."""
    import yaml

    from kdagent.errors import UserError
    from kdagent.jsonl import read_jsonl
    from kdagent.plugins import build_plugins
    from kdagent.recipe import Recipe
    from kdagent.update.updater import UpdateJob, options_for, updater_named

    sharded = [
        name
        for name, var in (
            ("FSDP", "ACCELERATE_USE_FSDP"),
            ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED"),
            ("Megatron-LM", "ACCELERATE_USE_MEGATRON_LM"),
        )
        if os.environ.get(var, "").lower() == "true"
    ]
    # Rank 0 saves the student from its own copy of the model, which a sharded model does not hold. On CPU ranks
    # accelerate builds no FSDP plugin at all (MULTI_CPU: DDP over gloo), so an FSDP config would not shard there.
    if sharded:
        raise UserError(
            f"update.launcher.config_file: {sharded[0]} is not wired yet (the student is saved from rank 0's whole model); "
            "use a DDP config (distributed_type: MULTI_GPU), or no config file"
        )
    spec = json.loads((folder / JOB).read_text(encoding="utf-8"))
    recipe = Recipe.model_validate(yaml.safe_load((folder / RECIPE).read_text(encoding="utf-8")))
    batch = recipe.update.batch_size
    if batch % world_size:
        raise UserError(
            f"update.batch_size: {batch} does not divide among {world_size} processes; "
            f"each trains on batch_size / {world_size} examples a step"
        )
    recipe = recipe.model_copy(update={"update": recipe.update.model_copy(update={"batch_size": batch // world_size})})
    plugins = build_plugins()
    method = spec["method"]
    updater = updater_named(plugins, method)
    records = {
        name: read_jsonl(folder / f"{name}.jsonl", _record_type(spec["types"][name]) if name in spec["types"] else None)
        for name in RECORDS
    }
    domain = plugins.instantiate("domains", recipe.domain.name, "domain.options", recipe.domain.options)
    skill = plugins.instantiate("skills", recipe.skills[0].name, "skills[0].options", recipe.skills[0].options)
    job = UpdateJob(
        recipe=recipe,
        options=options_for(recipe.update, method, updater),
        student=Path(spec["student"]),
        out=Path(spec["out"]),
        seed=spec["seed"],
        round=spec["round"],
        skill=skill,
        domain=domain,
        plugins=plugins,
        **records,
    )
    return method, updater, job


def main(argv: list[str] | None = None) -> int:
    from kdagent.errors import UserError
    from kdagent.jsonl import write_atomic
    from kdagent.terminal import configure

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(
            "usage: python -m kdagent.update.worker JOB_DIR (started by `accelerate launch`; see kdagent/update/launch.py)",
            file=sys.stderr,
        )
        return 2
    folder = Path(argv[0])
    if os.environ.get(PARENT_ENV):
        watch_parent(int(os.environ[PARENT_ENV]))
    configure(os.environ.get("KDAGENT_QUIET") == "1")
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    try:
        _method, updater, job = read_job(folder, world)
        report = updater.train(job)
    except (ValueError, UserError) as exc:  # the recipe's fault: the loop names the field, as on one process
        if rank == 0:
            kind = "ValueError" if isinstance(exc, ValueError) else "UserError"
            write_atomic(folder / REPORT, json.dumps({"error": {"kind": kind, "message": str(exc)}}) + "\n")
        print(f"[kdagent] rank {rank}: {exc}", file=sys.stderr, flush=True)
        return 1  # non-zero, so the launcher stops the other ranks
    if rank == 0:
        write_atomic(folder / REPORT, json.dumps({"report": report}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
