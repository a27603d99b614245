"""Where an updater trains: in this process, or on N processes under `accelerate launch`.

The loop stays one process. Its update stage calls `train(updater, job)`; with no launcher (`update.launcher`
omitted) that is `updater.train(job)`, as it always was. With `update.launcher.kind: accelerate` the job is
written to a folder beside the round's student (`.<out>.launch/`: the recipe as YAML, the examples, pairs and
tasks as JSONL of their records, the rest as JSON), and

    python -m accelerate.commands.launch [--config_file F] [--num_processes N] ... -m kdagent.update.worker JOB_DIR

(`accelerate launch`, from the same Python) runs `kdagent/update/worker.py` on every rank. Each rank rebuilds
the job and calls the same registered updater's `train`, unchanged: the Trainer under `accelerate launch` is
distributed (DDP; gloo on CPUs), rank 0 writes the checkpoints (renamed into place once whole) and the trained
student (kdagent/update/common.py), and rank 0 writes the report, which this process reads back.

`update.batch_size` stays the batch of one optimiser step (before gradient accumulation) over all processes:
each of N processes trains on `batch_size / N` examples a step, so a recipe trains on the same batches,
with the same number of steps and learning-rate schedule, on 1 process or on N. It must divide by N.
"""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from kdagent.errors import UserError, WorkError

JOB = "job.json"
RECIPE = "recipe.yaml"
REPORT = "report.json"
PARENT_ENV = "KDAGENT_UPDATE_PARENT"  # the loop's pid: the ranks stop when it is gone (killed)
RECORDS = ("examples", "pairs", "tasks")


def train(updater, job, launcher=None) -> dict | None:
    """Train `job` with `updater`, in this process or under the launcher (default: the recipe's
    `update.launcher`). Returns the updater's report (None: nothing to train on)."""
    launcher = launcher if launcher is not None else getattr(job.recipe.update, "launcher", None)
    if launcher is None or getattr(launcher, "kind", "none") in (None, "none"):
        return updater.train(job)
    if launcher.kind != "accelerate":
        raise UserError(f"update.launcher.kind: unknown launcher {launcher.kind!r} (known: accelerate)")
    return train_accelerate(updater, job, launcher)


def method_name(updater, plugins) -> str:
    """The name `updater` is registered under: the ranks find it again in their own registry."""
    for name, entry in plugins.updaters.items():
        if entry.obj is updater:
            return name
    raise UserError(
        f"update.launcher: the updater {type(updater).__name__} is not registered, so another process cannot find it"
    )


def job_dir(out: Path) -> Path:
    out = Path(out)
    return out.with_name(f".{out.name}.launch")


def write_job(folder: Path, method: str, job) -> None:
    """The job as files a rank rebuilds it from (`kdagent.update.worker.read_job`)."""
    import shutil

    import yaml

    from kdagent.jsonl import write_atomic, write_jsonl

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    write_atomic(folder / RECIPE, yaml.safe_dump(job.recipe.model_dump(mode="json"), sort_keys=False))
    types = {}
    for name in RECORDS:
        records = getattr(job, name)
        write_jsonl(folder / f"{name}.jsonl", records)
        if records:
            cls = type(records[0])
            types[name] = f"{cls.__module__}:{cls.__qualname__}"
    spec = {
        "method": method,
        "student": str(Path(job.student).resolve()),
        "out": str(Path(job.out).resolve()),
        "seed": job.seed,
        "round": job.round,
        "types": types,
    }
    write_atomic(folder / JOB, json.dumps(spec, indent=2) + "\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(launcher, folder: Path) -> list[str]:
    """`accelerate launch` (from this Python) for the launcher's settings. With a config file, its settings
    stand (the process count too, unless `num_processes` is given). Without one: one machine, N processes through
    accelerate's torchrun launcher (`--multi_gpu`; on a machine without GPUs each rank trains on the CPU,
    gloo between them), precision and compilation left to the Trainer as on one process."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    n = launcher.num_processes
    if launcher.config_file:
        config = Path(launcher.config_file).expanduser()
        if not config.is_file():
            raise UserError(
                f"update.launcher.config_file: {config} is not a file (`accelerate config --config_file {config}` writes one)"
            )
        cmd += ["--config_file", str(config)]
        if n is not None:
            cmd += ["--num_processes", str(n)]
    else:
        n = n or 1
        cmd += ["--num_processes", str(n), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        if n > 1:
            cmd += ["--multi_gpu"]
    cmd += ["--main_process_port", str(free_port()), "-m", "kdagent.update.worker", str(folder)]
    return cmd


def train_accelerate(updater, job, launcher) -> dict | None:
    """Run `job` on the launcher's processes and return rank 0's report. A rank's ValueError or UserError is
    raised here as the same kind, so the update stage names the recipe field as for one process."""
    method = method_name(updater, job.plugins)
    n = launcher.num_processes
    if n is not None and job.update.batch_size % n:
        raise UserError(
            f"update.batch_size: {job.update.batch_size} does not divide among {n} processes "
            f"(update.launcher.num_processes); each trains on batch_size / {n} examples a step"
        )
    folder = job_dir(job.out)
    write_job(folder, method, job)
    _free_gpu_cache()
    cmd = launch_command(launcher, folder)
    env = {**os.environ, PARENT_ENV: str(os.getpid())}
    count = f"{n} processes" if n else "the processes of its config file"
    print(
        f"[kdagent] round {job.round}: update ({method}) under accelerate launch on {count}",
        file=sys.stderr,
        flush=True,
    )
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)  # its own group: stopped with this process
    try:
        code = proc.wait()
    except BaseException:
        _stop(proc)
        raise
    result = _read_report(folder / REPORT)
    if result is None:
        raise WorkError(
            f"update.{method}: training under accelerate launch failed (exit status {code}); "
            "the ranks' output is above, and --resume continues from the last complete checkpoint"
        )
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    error = result.get("error")
    if error:
        raise (ValueError if error["kind"] == "ValueError" else UserError)(error["message"])
    return result["report"]


def _free_gpu_cache() -> None:
    """Hand the GPU memory this process caches (an earlier stage's models) back to the driver: rank 0 shares
    its GPU with this process."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        import gc

        gc.collect()
        torch.cuda.empty_cache()


def _read_report(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _stop(proc: subprocess.Popen) -> None:
    """Stop the launcher and its ranks (their own process group): SIGTERM, then SIGKILL after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue
