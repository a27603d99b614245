"""A teacher that is a pool of OpenAI-compatible endpoints (`teacher.base_url: [url, url]`).

The round test runs two real `transformers serve` processes on 127.0.0.1 serving the tiny config-built
model (real tokenizer, 2 layers) and SIGKILLs one while it is answering: the elicitation stage completes on
the other and writes the same records as a run on one healthy server. The scripted server (real HTTP,
OpenAI protocol) shows what a real server cannot be made to do on cue: go down and come back."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import free_port, wait_healthy
from kdagent.jsonl import read_jsonl
from kdagent.recipe import TeacherConfig
from kdagent.records import Generation, GroundedTask, Task
from kdagent.skills.cot import ChainOfThought
from kdagent.synth.elicit import elicit
from kdagent.teachers.chat import openai_teacher
from openai_server import ScriptedServer


def _start_servers(model_dir: Path, logs: Path, count: int) -> list[tuple[str, subprocess.Popen]]:
    """`transformers serve` processes on free ports of 127.0.0.1 (started, not yet waited for)."""
    exe = Path(sys.executable).with_name("transformers")
    if not exe.exists():
        pytest.skip("`transformers serve` is not installed (transformers[serving], part of kdagent's test extra)")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}  # two servers share the cores
    servers = []
    for i in range(count):
        port = free_port()
        with open(logs / f"serve-{i}.log", "w") as fh:
            proc = subprocess.Popen(
                [str(exe), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
            )
        servers.append((f"http://127.0.0.1:{port}", proc))
    return servers


def _wait_until_healthy(servers, logs: Path) -> None:
    for i, (url, proc) in enumerate(servers):
        wait_healthy(f"{url}/health", proc, logs / f"serve-{i}.log", "transformers serve")


@pytest.fixture
def served_model(tiny_llama, tmp_path) -> Path:
    """The tiny llama with untied embeddings (tied, it repeats the prompt's last token: blank replies)."""
    model, tokenizer = tiny_llama(tie_word_embeddings=False)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


@pytest.fixture
def two_servers(served_model, tmp_path):
    servers = _start_servers(served_model, tmp_path, 2)
    try:
        _wait_until_healthy(servers, tmp_path)
        yield [url for url, _ in servers], [proc for _, proc in servers]
    finally:
        for _, proc in servers:  # only the processes this test started, also when one never became healthy
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _elicit(config: TeacherConfig, grounded, partial: Path):
    teacher = openai_teacher(config, None)
    gens = elicit(
        lambda: teacher,
        ChainOfThought(),
        grounded,
        round_=1,
        seed=7,
        teacher_settings={"samples": config.samples},
        partial=partial,
        chunk=4,
    )
    return teacher, gens


def test_a_pool_member_killed_mid_round_loses_and_duplicates_nothing(two_servers, served_model, tmp_path):
    (url_a, url_b), (proc_a, _) = two_servers
    grounded = [
        GroundedTask(
            task=Task(
                id=f"t{i}",
                prompt=f"Tom has {i} pens and gets {i + 3} more. How many pens does he have?",
                answer=str(2 * i + 3),
            )
        )
        for i in range(12)
    ]
    # greedy, so that any server gives a prompt the same reply
    settings = dict(
        kind="openai",
        model=str(served_model),
        samples=1,
        temperature=0.0,
        max_new_tokens=24,
        timeout_s=30,
        max_retries=2,
    )
    pool_config = TeacherConfig(**settings, base_url=[f"{url_a}/v1", f"{url_b}/v1"], concurrency=1)

    killed: dict = {}
    started = time.monotonic()

    def kill_a_while_it_answers(pool):
        a = pool.endpoints[0]
        while time.monotonic() - started < 60:
            with pool._cond:  # the pool's own view: A has answered twice and holds a request now
                if a.served >= 2 and a.in_flight:
                    os.kill(proc_a.pid, signal.SIGKILL)
                    killed.update(served=a.served)
                    return
            time.sleep(0.002)

    teacher = openai_teacher(pool_config, None)
    threading.Thread(target=kill_a_while_it_answers, args=(teacher.chat,), daemon=True).start()
    pooled = elicit(
        lambda: teacher,
        ChainOfThought(),
        grounded,
        round_=1,
        seed=7,
        teacher_settings={"samples": 1},
        partial=tmp_path / "pool.partial.jsonl",
        chunk=4,
    )
    pool_seconds = time.monotonic() - started
    stats = teacher.chat.stats()
    assert killed, "A was never caught holding a request"
    assert proc_a.wait(timeout=10) == -signal.SIGKILL
    assert teacher.failures == []  # the request A held was sent again to B
    assert stats[f"{url_a}/v1"]["failed"] >= 1 and not stats[f"{url_a}/v1"]["in_rotation"]
    assert stats[f"{url_a}/v1"]["served"] + stats[f"{url_b}/v1"]["served"] == 12  # each reply returned once
    assert any("taken out of rotation" in e for e in teacher.chat.events)

    started = time.monotonic()
    single, reference = _elicit(
        TeacherConfig(**settings, base_url=f"{url_b}/v1", concurrency=2), grounded, tmp_path / "one.partial.jsonl"
    )
    one_seconds = time.monotonic() - started
    assert single.failures == []
    keys = [(g.task_id, g.sample) for g in pooled]
    assert len(keys) == len(set(keys)) == 12 and {k for k, _ in keys} == {
        g.task.id for g in grounded
    }  # nothing lost, nothing twice
    assert [g.model_dump() for g in pooled] == [g.model_dump() for g in reference]  # the same records, text and ids
    assert len(read_jsonl(tmp_path / "pool.partial.jsonl", Generation)) == 12  # each finished chunk written once
    print(
        f"pool with a kill: {pool_seconds:.1f}s; one healthy server: {one_seconds:.1f}s; A served {killed['served']} before the kill"
    )


class FlakyServer(ScriptedServer):
    """A scripted OpenAI-protocol server that can be taken down (503 on every request, probes included) and brought back."""

    def __init__(self, name: str, delay: float = 0.05):
        self.down = False
        self.name = name

        def reply(request, headers):
            if self.down:
                return 503, "down for maintenance"
            time.sleep(delay)
            return f"{name}: {request['messages'][-1]['content']}"

        super().__init__(reply, model="pooled")
        base = self.httpd.RequestHandlerClass
        server = self

        class Handler(base):
            def do_GET(self):
                if server.down:
                    return self._send(503, {"error": {"message": "down"}})
                return super().do_GET()

        self.httpd.RequestHandlerClass = Handler


def test_a_failed_endpoint_is_probed_and_brought_back_and_each_keeps_its_cap():
    with FlakyServer("a") as a, FlakyServer("b") as b:
        config = TeacherConfig(
            kind="openai",
            model="pooled",
            base_url=[a.url, b.url],
            samples=1,
            max_new_tokens=4,
            concurrency=3,
            timeout_s=5,
            max_retries=2,
        )
        teacher = openai_teacher(config, None)
        pool = teacher.chat
        assert teacher.max_in_flight == 6
        prompts = [[{"role": "user", "content": f"q{i}"}] for i in range(30)]
        replies = teacher.generate(prompts, seed=0)
        assert [r[0].split(": ", 1)[1] for r in replies] == [f"q{i}" for i in range(30)]
        assert a.max_in_flight <= 3 and b.max_in_flight <= 3  # the cap holds on each endpoint
        assert pool.stats()[a.url]["served"] >= 10 and pool.stats()[b.url]["served"] >= 10  # balanced

        a.down = True
        replies = teacher.generate(prompts[:12], seed=1)
        assert teacher.failures == [] and all(r[0].startswith("b: ") for r in replies)
        assert not pool.stats()[a.url]["in_rotation"]
        a.down = False
        time.sleep(1.2)  # past the first back-off: the next request probes A
        replies = teacher.generate(prompts[:12], seed=2)
        assert teacher.failures == [] and any(r[0].startswith("a: ") for r in replies)
        assert pool.stats()[a.url]["in_rotation"]
        assert any("taken out of rotation" in e for e in pool.events) and "back in rotation" in pool.events[-1]


def test_a_pool_with_every_endpoint_down_fails_each_request_fast_and_counts_it():
    config = TeacherConfig(
        kind="openai",
        model="m",
        base_url=[f"http://127.0.0.1:{free_port()}/v1", f"http://127.0.0.1:{free_port()}/v1"],
        samples=1,
        max_new_tokens=4,
        timeout_s=2,
        max_retries=1,
        concurrency=2,
    )
    teacher = openai_teacher(config, None)
    started = time.monotonic()
    replies = teacher.generate([[{"role": "user", "content": "x"}]] * 6, seed=0)
    assert replies == [[""]] * 6 and len(teacher.failures) == 6
    assert time.monotonic() - started < 15


def test_a_pool_is_a_list_of_urls_in_the_recipe_and_each_is_masked_in_the_saved_recipe():
    from kdagent.recipe import Recipe
    from kdagent.recipe_io import masked_dump

    recipe = Recipe.model_validate(
        {
            "name": "x",
            "teacher": {
                "kind": "openai",
                "model": "m",
                "base_url": ["http://user:s3cret@10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1?key=s3cret2"],
            },
        }
    )
    assert masked_dump(recipe)["teacher"]["base_url"] == [
        "http://***@10.0.0.1:8000/v1",
        "http://10.0.0.2:8000/v1?key=***",
    ]
    with pytest.raises(ValueError, match="each endpoint once"):
        TeacherConfig(kind="openai", model="m", base_url=["http://a/v1", "http://a/v1"])
    teacher = openai_teacher(TeacherConfig(kind="openai", model="m", base_url=["http://127.0.0.1:1/v1"]), None)
    assert not hasattr(
        teacher.chat, "endpoints"
    )  # a list of one is a plain endpoint, with the chat model's own retries
