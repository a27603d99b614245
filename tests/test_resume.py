"""Resume for real: SIGKILL a run in the middle of elicitation, then in the middle of training, resume it,
and compare with an uninterrupted run of the same recipe and seed."""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import KDAGENT
from kdagent.jsonl import read_jsonl
from kdagent.records import Generation

DATASETS = ["tasks.jsonl", "grounded.jsonl", "generations.jsonl", "feedback.jsonl", "sft.jsonl"]


def write_recipe(path: Path, model_dir: Path) -> Path:
    recipe = {
        "name": "resume",
        "seed": 3,
        "student": {"model": str(model_dir), "max_length": 256},
        "teacher": {"kind": "self", "samples": 2, "temperature": 1.0, "max_new_tokens": 24, "batch_size": 1},
        "domain": {"name": "arithmetic", "seed_tasks": 40, "eval_tasks": 2, "options": {"corpus_examples": 6}},
        "retrieval": {"top_k": 1},
        "feedback": {"fallback_to_reference": True},
        "update": {"epochs": 1, "batch_size": 2, "learning_rate": 1e-3, "checkpoint_steps": 1},
        "evaluation": {"max_new_tokens": 4},
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


def run(recipe: Path, run_dir: Path, *extra) -> subprocess.CompletedProcess:
    return subprocess.run(
        [KDAGENT, "run", str(recipe), "--run-dir", str(run_dir), *extra], capture_output=True, text=True, timeout=900
    )


def kill_when(recipe: Path, run_dir: Path, ready, what: str) -> None:
    proc = subprocess.Popen(
        [KDAGENT, "run", str(recipe), "--run-dir", str(run_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.005)
    assert proc.poll() is None, f"the run finished before it could be killed during {what}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, tiny_model_dir):
    base = tmp_path_factory.mktemp("resume")
    recipe = write_recipe(base / "recipe.yaml", tiny_model_dir)
    result = run(recipe, base / "uninterrupted")
    assert result.returncode == 0, result.stderr[-3000:]
    return recipe, base / "uninterrupted"


def assert_same_datasets(a: Path, b: Path) -> None:
    for name in DATASETS:
        assert (a / "round-01" / name).read_bytes() == (b / "round-01" / name).read_bytes(), name
    gens = read_jsonl(b / "round-01" / "generations.jsonl", Generation)
    tasks = (b / "round-01" / "tasks.jsonl").read_bytes().count(b"\n")
    assert len({g.id for g in gens}) == len(gens) == 2 * tasks >= 70  # nothing lost, nothing duplicated
    assert not (b / "round-01" / "generations.partial.jsonl").exists()
    steps = [json.loads((d / "round-01" / "update.json").read_text())["steps"] for d in (a, b)]
    assert steps[0] == steps[1] >= 15


def test_kill_during_elicitation_then_resume(reference_run, tmp_path):
    recipe, reference = reference_run
    run_dir = tmp_path / "killed"
    partial = run_dir / "round-01" / "generations.partial.jsonl"

    def some_chunks_done():
        return partial.exists() and partial.read_bytes().count(b"\n") >= 8

    kill_when(recipe, run_dir, some_chunks_done, "elicitation")
    lines_before = partial.read_bytes().count(b"\n")
    assert 8 <= lines_before < 70 and not (run_dir / "round-01" / "generations.jsonl").exists()
    with open(partial, "ab") as fh:  # and a torn write on top of it
        fh.write(b'{"id": "torn')
    result = run(recipe, run_dir, "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torn last line" in result.stderr
    assert_same_datasets(reference, run_dir)


def test_kill_during_training_then_resume(reference_run, tmp_path):
    recipe, reference = reference_run
    run_dir = tmp_path / "killed"
    trainer = run_dir / "round-01" / ".student.partial" / "trainer"

    def checkpoint_written():
        return (trainer / "checkpoint-3" / "trainer_state.json").exists()

    kill_when(recipe, run_dir, checkpoint_written, "training")
    assert not (run_dir / "round-01" / "student").exists()
    (trainer / "checkpoint-99").mkdir()  # a half-written checkpoint: no trainer_state.json
    result = run(recipe, run_dir, "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    # training went on from the last complete checkpoint the kill left (step 3 or later), not from step 0
    resumed = re.search(r"resuming training from \S+checkpoint-(\d+) \(step (\d+)\)", result.stderr)
    assert resumed and int(resumed.group(1)) == int(resumed.group(2)) >= 3, result.stderr[-3000:]
    assert_same_datasets(reference, run_dir)
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(run_dir / "round-01" / "student")
    assert not (run_dir / "round-01" / ".student.partial").exists()
