"""Two processes on one run directory, or on one Chroma store: the second is refused with a clear message
and writes nothing; the first is not disturbed."""

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import KDAGENT, run_cli
from kdagent.domain import Document
from kdagent.errors import UserError
from kdagent.retrieval.store import ChromaStore


@pytest.mark.integration
def test_a_second_run_on_the_same_run_directory_is_refused(tmp_path, tiny_model_dir):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "name": "two",
                "student": {"model": str(tiny_model_dir)},
                "retrieval": {"enabled": False},
                "teacher": {"kind": "self", "samples": 1, "max_new_tokens": 32, "batch_size": 1},
                "domain": {"seed_tasks": 24, "eval_tasks": 8},
                "evaluation": {"max_new_tokens": 32},
            }
        )
    )
    run_dir = tmp_path / "run"
    first = subprocess.Popen(
        [KDAGENT, "run", str(recipe), "--run-dir", str(run_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.time() + 120
        while not (run_dir / "recipe.yaml").exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended early"
        before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
        for extra in ([], ["--resume"]):
            second = run_cli("run", str(recipe), "--run-dir", str(run_dir), *extra)
            assert second.returncode == 2, second.stderr[-2000:]
            assert second.stderr.strip().splitlines() == [
                f"Error: run directory {run_dir.resolve()} is in use by another kdagent process (pid {first.pid}); "
                "wait for it to finish or use another --run-dir"
            ]
        assert first.poll() is None  # the first run goes on
        assert all(p.stat().st_mtime_ns == t for p, t in before.items() if p.exists())  # the second touched nothing
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()


class _Embedder:
    def embed(self, texts):
        return [[1.0, float(len(t) % 7), 0.5] for t in texts]


HOLDER = """
import sys
from kdagent.domain import Document
from kdagent.retrieval.store import ChromaStore
class E:
    def embed(self, texts):
        return [[1.0, float(len(t) % 7), 0.5] for t in texts]
store = ChromaStore(sys.argv[1], "shared", E())
store.index([Document("a", "the first process's passage")], 100)
print("holding", flush=True)
sys.stdin.read()
store.release()
"""


def test_a_second_process_writing_the_same_chroma_store_is_refused(tmp_path):
    path = tmp_path / "chroma"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        store = ChromaStore(path, "shared", _Embedder())
        with pytest.raises(
            UserError,
            match=r"Chroma store .*chroma is being written by another process; wait for it or use another store",
        ):
            store.index([Document("b", "the second process's passage")], 100)
        assert store.count() == 1  # nothing of the second writer's got in
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert store.index([Document("b", "the second process's passage")], 100) == 1  # free once the first is done
    assert store.count() == 2
    store.release()
