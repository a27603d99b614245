"""SIGKILL at 22 seeded points of one run, each time followed by `--resume`: during indexing, elicitation,
feedback, training, checkpoint writing and evaluation (with a torn JSONL write and a truncated checkpoint
planted on the way). The run that finally completes has datasets
byte-identical to an uninterrupted run with the same seed, the same counts and the same final training
step, and nothing of the interrupted work is left behind.

The runs are `kdagent run` children of a fork server (forkserver.py: the heavy imports are paid once, not
23 times). Each is killed from outside with os.kill(pid, SIGKILL) a seeded random delay after a trigger
that the test observes: the child holding the Chroma store open, a chunk appended to a partial file, a
checkpoint folder appearing. Where the kill actually landed is read back from the run directory, and
every stage must have been hit at least twice."""

import json
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from forkserver import ForkServer, alive, open_files

from kdagent.jsonl import read_jsonl
from kdagent.records import Generation

TASKS = 16
DATASETS = ["tasks.jsonl", "grounded.jsonl", "generations.jsonl", "feedback.jsonl", "sft.jsonl"]
STAGES = ("indexing", "elicitation", "feedback", "training", "checkpoint writing")
PLAN = [
    "index",
    "index",
    "elicit_start",
    "elicit_chunk",
    "index",
    "elicit_chunk",
    "elicit_chunk",
    "feedback_start",
    "feedback_chunk",
    "feedback_chunk",
    "index",
    "feedback_chunk",
    "ckpt_write",
    "ckpt_done",
    "ckpt_write",
    "ckpt_done",
    "ckpt_write",
    "ckpt_done",
    "ckpt_write",
    "ckpt_done",
    "final_save",
    "evaluate",
]
DELAY = {
    "index": 0.3,
    "elicit_start": 0.3,
    "elicit_chunk": 0.03,
    "feedback_start": 0.3,
    "feedback_chunk": 0.0,
    "ckpt_write": 0.0,
    "ckpt_done": 0.1,
    "final_save": 0.0,
    "evaluate": 0.2,
}


def write_recipe(path: Path, model_dir: Path) -> Path:
    """16 tasks: elicitation and judging each take 4 chunks; training takes 4 steps, a checkpoint each."""
    path.write_text(
        yaml.safe_dump(
            {
                "name": "kills",
                "seed": 5,
                "student": {"model": str(model_dir), "max_length": 128},
                "teacher": {"kind": "self", "samples": 1, "temperature": 1.0, "max_new_tokens": 32, "batch_size": 1},
                "domain": {
                    "name": "arithmetic",
                    "seed_tasks": TASKS,
                    "eval_tasks": 2,
                    "options": {"corpus_examples": 4},
                },
                "retrieval": {"top_k": 1},
                # the judge writes its verdicts (decoded, chunk by chunk, long enough for kills to land in)
                "feedback": {
                    "verifier": "judge",
                    "judge_attempts": 1,
                    "fallback_to_reference": True,
                    "judge_score": "verdict",
                },
                "update": {"epochs": 1, "batch_size": 4, "learning_rate": 1e-3, "checkpoint_steps": 1},
                "evaluation": {"max_new_tokens": 2},
            }
        )
    )
    return path


class State:
    """What the run directory shows."""

    def __init__(self, path: Path):
        self.path, self.round = path, path / "round-01"
        self.trainer = self.round / ".student.partial" / "trainer"

    def lines(self, name: str) -> int:
        p = self.round / name
        return p.read_bytes().count(b"\n") if p.exists() else 0

    def has(self, name: str) -> bool:
        return (self.round / name).exists()

    def checkpoints(self) -> dict[int, bool]:
        """step -> complete: one being written is under `trainer/.staging/` (incomplete), and is renamed to
        `trainer/checkpoint-N` once whole (its trainer_state.json written)."""
        found = {}
        for folder, renamed in ((self.trainer / ".staging", False), (self.trainer, True)):
            if folder.is_dir():
                found.update(
                    {
                        int(p.name.split("-")[1]): renamed and (p / "trainer_state.json").exists()
                        for p in folder.glob("checkpoint-*")
                    }
                )
        return found

    def last_complete(self) -> int:
        return max([s for s, done in self.checkpoints().items() if done], default=0)

    def landed(self, log: str) -> str:
        """The stage a killed process was in."""
        if "indexed" not in log:
            return "indexing"
        if not self.has("generations.jsonl"):
            return "elicitation" if self.has("grounded.jsonl") else "baseline"
        if not self.has("feedback.jsonl"):
            return "feedback"
        if not self.has("student"):
            writing = (
                any(not done for done in self.checkpoints().values())
                or (self.round / ".student.partial" / "student").exists()
            )
            return "checkpoint writing" if writing else "training"
        return "evaluation" if not self.has("metrics.json") else "after the round"


def trigger(kind: str, state: State, pid: int, log, start: dict) -> bool:
    indexed = "indexed" in log()
    if kind == "index":
        return not indexed and any(str(state.path / "chroma") in f for f in open_files(pid))
    if kind == "elicit_start":
        return indexed and state.has("grounded.jsonl") and not state.has("generations.jsonl")
    if kind == "elicit_chunk":
        return state.lines("generations.partial.jsonl") > start["gen"] or state.has(
            "generations.jsonl"
        )  # the last chunk: the partial file may be gone at once
    if kind == "feedback_start":
        return indexed and state.has("generations.jsonl") and not state.has("feedback.jsonl")
    if kind == "feedback_chunk":
        return state.lines("feedback.judge.partial.jsonl") > start["fb"] or state.has("feedback.jsonl")
    if kind == "ckpt_write":
        return any(s > start["ckpt"] and not done for s, done in state.checkpoints().items())
    if kind == "ckpt_done":
        return state.last_complete() > start["ckpt"]
    if kind == "final_save":
        return (state.round / ".student.partial" / "student").exists()
    if kind == "evaluate":
        return indexed and state.has("student") and not state.has("metrics.json")
    raise ValueError(kind)


def read(log: Path) -> str:
    try:
        return log.read_text(errors="replace")
    except FileNotFoundError:
        return ""


DONE = {
    "elicit_chunk": "generations.jsonl",
    "feedback_chunk": "feedback.jsonl",
    "ckpt_write": "student",
    "ckpt_done": "student",
    "final_save": "student",
}


def kill_at(server: ForkServer, args, log: Path, kind: str, state: State, rng: random.Random) -> str | None:
    """Start a run, kill it at `kind`'s trigger, and say where it landed; None (no run) when an earlier kill
    landed past the stage `kind` aims at (a fast machine can finish a chunk within the random delay)."""
    if kind in DONE and state.has(DONE[kind]):
        return None
    full = {"elicit_chunk": "generations.partial.jsonl", "feedback_chunk": "feedback.judge.partial.jsonl"}
    if kind in full and state.lines(full[kind]) >= TASKS:  # every chunk is in, only the stage's final write is left
        return None
    start = {
        "gen": state.lines("generations.partial.jsonl"),
        "fb": state.lines("feedback.judge.partial.jsonl"),
        "ckpt": state.last_complete(),
    }
    pid = server.start(args, log)
    deadline = time.time() + 120
    while time.time() < deadline and alive(pid) and not trigger(kind, state, pid, lambda: read(log), start):
        time.sleep(0.005)
    assert alive(pid), f"{kind}: the run ended before its trigger: {read(log)[-1500:]}"
    time.sleep(rng.uniform(0, DELAY[kind]))
    os.kill(pid, signal.SIGKILL)
    assert server.wait(pid) == -signal.SIGKILL, kind
    return state.landed(read(log))


@pytest.fixture(scope="module")
def server():
    fork_server = ForkServer(env={"OMP_NUM_THREADS": "1"})  # one thread each: far faster on a shared 2-core box
    yield fork_server
    fork_server.close()


@pytest.mark.integration
def test_twenty_two_kills_then_resume_match_an_uninterrupted_run(server, tmp_path, tiny_model_dir):
    recipe = write_recipe(tmp_path / "recipe.yaml", tiny_model_dir)
    reference = tmp_path / "uninterrupted"
    assert server.run(["run", recipe, "--run-dir", reference], tmp_path / "reference.log") == 0, (
        tmp_path / "reference.log"
    ).read_text()[-3000:]

    run_dir = tmp_path / "killed"
    state, rng, landed = State(run_dir), random.Random(20261), []
    for i, kind in enumerate(PLAN):
        args = ["run", recipe, "--run-dir", run_dir] + (["--resume"] if i else [])
        stage = kill_at(server, args, tmp_path / f"kill-{i:02d}.log", kind, state, rng)
        if stage is not None:
            landed.append((kind, stage))
        if i == 3:  # and a torn write on top: half a record at the end of the partial file
            with open(state.round / "generations.partial.jsonl", "ab") as fh:
                fh.write(b'{"id": "torn", "text": "half')
        if i == 15:  # and a corrupt checkpoint: the newest one's weights cut short
            weights = state.trainer / f"checkpoint-{state.last_complete()}" / "model.safetensors"
            weights.write_bytes(weights.read_bytes()[:-1000])
    later = lambda i: "".join(read(tmp_path / f"kill-{j:02d}.log") for j in range(i, len(PLAN)))  # noqa: E731
    assert "dropped a torn last line" in later(4)
    assert "model.safetensors is truncated" in later(16)  # skipped for the one before it
    final = tmp_path / "final.log"
    assert server.run(["run", recipe, "--run-dir", run_dir, "--resume"], final) == 0, final.read_text()[-3000:]

    hits = Counter(stage for _, stage in landed)
    print("kills landed:", landed)
    assert len(landed) >= 20 and all(hits[stage] >= 2 for stage in STAGES), hits
    for name in DATASETS:
        assert (reference / "round-01" / name).read_bytes() == (run_dir / "round-01" / name).read_bytes(), name
    gens = read_jsonl(run_dir / "round-01" / "generations.jsonl", Generation)
    assert len({g.id for g in gens}) == len(gens) == TASKS  # nothing lost, nothing duplicated
    ours, theirs = (json.loads((d / "metrics.json").read_text())["rounds"][0] for d in (run_dir, reference))
    assert ours["counts"] == theirs["counts"]
    steps = [json.loads((d / "round-01" / "update.json").read_text())["steps"] for d in (reference, run_dir)]
    assert steps[0] == steps[1] == 4
    leftovers = [p.name for p in (run_dir / "round-01").iterdir() if "partial" in p.name or ".tmp-" in p.name]
    assert leftovers == []
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(run_dir / "round-01" / "student")  # a complete checkpoint
