"""A full disk: the run fails with one clear line (exit 1, no traceback), every file written before is
intact (each JSON and JSONL file parses, no temporary file is left), and once there is room again
`--resume` finishes the run from the stages already done.

The disk is a 2 MiB tmpfs mounted for the test when the test may mount one (as root), so writes fail
with ENOSPC; elsewhere the run gets RLIMIT_FSIZE of 1 MiB, so writing a larger file fails with EFBIG (the
interpreter ignores SIGXFSZ). Either way the first file too big is the student's checkpoint."""

import json
import os
import resource
import shutil
import subprocess

import pytest
import yaml

from conftest import KDAGENT


@pytest.fixture
def small_disk(tmp_path):
    """(folder, how, limit_fn, grow): a folder on a nearly full disk and how to give it room again."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = (
        shutil.which("mount")
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(folder)], capture_output=True
        ).returncode
        == 0
    )
    if mounted:
        yield (
            folder,
            "tmpfs",
            None,
            lambda: subprocess.run(["mount", "-o", "remount,size=128M", str(folder)], check=True),
        )
        subprocess.run(["umount", "-l", str(folder)], check=False)
        return

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    yield folder, "rlimit", limit, lambda: None


@pytest.mark.integration
def test_a_full_disk_fails_cleanly_and_resume_finishes_once_there_is_room(tmp_path, tiny_model_dir, small_disk):
    folder, how, limit, grow = small_disk
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "name": "full",
                "student": {"model": str(tiny_model_dir)},
                "retrieval": {"enabled": False},
                "teacher": {"kind": "self", "samples": 1, "max_new_tokens": 4, "batch_size": 4},
                "domain": {"seed_tasks": 4, "eval_tasks": 2},
                "feedback": {"fallback_to_reference": True},
                "update": {"epochs": 1, "batch_size": 4},
                "evaluation": {"max_new_tokens": 2},
            }
        )
    )
    run_dir = folder / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [KDAGENT, "run", str(recipe), "--run-dir", str(run_dir)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, preexec_fn=limit, timeout=600)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    last = errors[0]
    why = "No space left on device" if how == "tmpfs" else "File too large"
    assert last.startswith(f"Error: out of disk space while writing under {run_dir} (") and why in last, last
    assert last.endswith("free some space (or raise the limit), then continue with --resume")

    round_dir = run_dir / "round-01"
    written = {p.name: p.read_bytes() for p in round_dir.glob("*.json*")}
    assert {"tasks.jsonl", "generations.jsonl", "feedback.jsonl", "sft.jsonl"} <= written.keys() and not (
        round_dir / "student"
    ).exists()
    for path in run_dir.rglob("*.json*"):
        text = path.read_text()
        [json.loads(line) for line in text.splitlines()] if path.suffix == ".jsonl" else json.loads(
            text
        )  # each one whole
    assert not [p for p in run_dir.rglob("*") if ".tmp-" in p.name]

    grow()
    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert all((round_dir / name).read_bytes() == data for name, data in written.items() if name.endswith(".jsonl"))
    assert (round_dir / "student" / "model.safetensors").exists()
