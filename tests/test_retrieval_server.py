"""The store on a real Chroma server (`chroma run` on 127.0.0.1, started and stopped here): the same
content-hash ids as the embedded store, idempotent re-indexing, the same grounding, and the one-writer rule
across processes, a writer that died included."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import free_port, wait_healthy
from kdagent.domain import Document
from kdagent.domains.arithmetic import Arithmetic
from kdagent.errors import UserError
from kdagent.models import resolve_model
from kdagent.recipe import RetrievalConfig
from kdagent.retrieval.embedder import Embedder
from kdagent.retrieval.store import ChromaStore
from kdagent.synth.tasks import ground

CHROMA = Path(sys.executable).with_name("chroma")


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory):
    """`chroma run` on a free port of 127.0.0.1 over a temporary folder; stopped (this process only) at the end."""
    if not CHROMA.exists():
        pytest.skip(f"no `chroma` command at {CHROMA} (it comes with the chromadb package)")
    folder = tmp_path_factory.mktemp("chroma-server")
    port = free_port()
    log = folder / "chroma.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [str(CHROMA), "run", "--path", str(folder / "data"), "--host", "127.0.0.1", "--port", str(port)],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    wait_healthy(f"{url}/api/v2/heartbeat", proc, log, "`chroma run`", timeout=60, give_up=pytest.skip)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def embedder():
    return Embedder(resolve_model("minilm-l6"))


def test_a_server_store_has_the_embedded_stores_ids_and_grounds_alike(chroma_server, embedder, tmp_path):
    corpus = list(Arithmetic(corpus_examples=16).corpus())
    local = ChromaStore(tmp_path / "local" / "chroma", "arithmetic", embedder)
    remote = ChromaStore(tmp_path / "run" / "chroma", "arithmetic", embedder, server=chroma_server)
    written = local.index(corpus, 800)
    assert remote.index(corpus, 800) == written == remote.count() > 16
    ids = set(remote.collection.get(include=[])["ids"])
    assert ids == set(local.collection.get(include=[])["ids"])  # the same content-hash ids
    assert remote.index(corpus, 800) == written and remote.count() == written  # re-indexing changes nothing
    assert set(remote.collection.get(include=[])["ids"]) == ids
    assert remote.location.startswith(f"{chroma_server}/kdagent-arithmetic-")
    remote.release()

    # the retrieval stage over the server store, reopened as a resumed run would: the embedded store's passages
    reopened = ChromaStore(tmp_path / "run" / "chroma", "arithmetic", embedder, server=chroma_server)
    assert reopened.count() == written
    tasks = Arithmetic().seed_tasks(6, seed=3)
    over_server = ground(tasks, reopened, top_k=2)
    embedded = ground(tasks, local, top_k=2)
    assert [[p.id for p in g.passages] for g in over_server] == [[p.id for p in g.passages] for g in embedded]
    assert all(len(g.passages) == 2 and g.passages[0].source.startswith("worked-example/") for g in over_server)
    for a, b in zip(over_server, embedded):
        assert [p.score for p in a.passages] == pytest.approx([p.score for p in b.passages], abs=1e-4)

    # another run on the same server has a store of its own
    other = ChromaStore(tmp_path / "other-run" / "chroma", "arithmetic", embedder, server=chroma_server)
    assert other.count() == 0 and other.collection.name != reopened.collection.name
    local.release()


WRITER = textwrap.dedent("""
    import sys, time
    from kdagent.retrieval.store import ChromaStore

    class Embedder:  # a constant vector: this process only holds the lock
        def embed(self, texts):
            return [[1.0] + [0.0] * 383 for _ in texts]

    store = ChromaStore(sys.argv[1], "locked", Embedder(), server=sys.argv[2], lease_s=float(sys.argv[3]))
    store.add_texts(["held by the other process"], source="writer")
    print("holding", flush=True)
    time.sleep(600)
""")


def _writer(folder: Path, server: str, lease_s: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(folder), server, str(lease_s)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_one_writer_at_a_time_on_a_server_and_a_dead_writer_frees_the_store(chroma_server, embedder, tmp_path):
    folder = tmp_path / "run" / "chroma"
    holder = _writer(folder, chroma_server, lease_s=3.0)
    try:
        store = ChromaStore(folder, "locked", embedder, server=chroma_server)
        assert store.count() == 1  # reading is never refused
        with pytest.raises(UserError, match=rf"being written by another process \(pid {holder.pid} on "):
            store.add_texts(["a second writer"], source="test")
        time.sleep(3.5)  # past the first lease: the holder is alive and renews it, so still refused
        with pytest.raises(UserError, match="being written by another process"):
            store.index([Document("d", "a second writer")], 100)
        os.kill(holder.pid, signal.SIGKILL)  # the holder dies without releasing, its lease still running
        holder.wait()
        assert store.index([Document("d", "a second writer")], 100) == 1  # same host, pid gone: taken at once
        assert store.count() == 2
        store.release()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()

    # a writer on another machine that died: its lease has to run out
    store = ChromaStore(folder, "locked", embedder, server=chroma_server)
    locks = store.client.get_collection("kdagent-writers")
    locks.add(
        ids=[store.collection.name],
        embeddings=[[1.0]],
        documents=["x"],
        metadatas=[{"token": "elsewhere", "host": "other-machine", "pid": 1, "expires": time.time() + 2}],
    )
    with pytest.raises(UserError, match=r"\(pid 1 on other-machine\)"):
        store.add_texts(["too early"], source="test")
    time.sleep(2.2)
    store.add_texts(["after the lease"], source="test")
    store.release()
    assert locks.get(ids=[store.collection.name])["ids"] == []  # released: the record is gone
    again = ChromaStore(folder, "locked", embedder, server=chroma_server)
    again.add_texts(["the next writer goes straight in"], source="test")
    again.release()


def test_the_recipe_names_a_server_by_url_and_an_unreachable_one_is_one_line(embedder, tmp_path):
    assert RetrievalConfig(server="http://127.0.0.1:8000").server == "http://127.0.0.1:8000"
    with pytest.raises(ValueError, match="http"):
        RetrievalConfig(server="127.0.0.1:8000")
    port = free_port()
    with pytest.raises(UserError, match=rf"cannot reach the Chroma server at http://127.0.0.1:{port} .*chroma run"):
        ChromaStore(tmp_path / "chroma", "c", embedder, server=f"http://127.0.0.1:{port}")


def test_a_run_with_retrieval_server_keeps_its_passages_on_the_server(chroma_server, tiny_model_dir, tmp_path):
    """`kdagent run` opens its store on the server the recipe names: the corpus is indexed there, grounding
    reads it from there, and no embedded Chroma database is written in the run directory."""
    import chromadb

    from kdagent.loop.runner import run_recipe
    from kdagent.plugins import build_plugins
    from kdagent.recipe import Recipe

    recipe = Recipe.model_validate(
        {
            "name": "served",
            "seed": 0,
            "student": {"model": str(tiny_model_dir), "max_length": 128},
            "teacher": {"kind": "self", "samples": 1, "max_new_tokens": 4, "batch_size": 4},
            "domain": {"name": "arithmetic", "seed_tasks": 3, "eval_tasks": 2, "options": {"corpus_examples": 8}},
            "skills": ["cot"],
            "retrieval": {"embedder": "minilm-l6", "top_k": 1, "server": chroma_server},
            "update": {"method": "none"},
            "evaluation": {"max_new_tokens": 4, "skill_tasks": 0, "bootstrap": 0},
        }
    )
    run_recipe(recipe, tmp_path / "run", build_plugins(load_entry_points=False))
    assert not list((tmp_path / "run").rglob("chroma.sqlite3"))  # nothing embedded
    host, port = chroma_server.rsplit(":", 1)
    client = chromadb.HttpClient(host=host.split("//")[1], port=int(port))
    ours = [c for c in client.list_collections() if getattr(c, "name", c).startswith("kdagent-arithmetic-")]
    assert ours and max(client.get_collection(getattr(c, "name", c)).count() for c in ours) > 0
    grounded = [
        json.loads(line) for line in (tmp_path / "run" / "round-01" / "grounded.jsonl").read_text().splitlines()
    ]
    assert len(grounded) == 3 and all(g["passages"] for g in grounded)
