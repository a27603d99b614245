"""`kdagent serve` (through `transformers serve`) answers the OpenAI client; `kdagent chat` holds a conversation
on a real terminal (a pty). Both on the tiny config-built model, served from a run directory's layout."""

import json
import os
import select
import shutil
import subprocess
import time

import pytest

from conftest import KDAGENT, free_port, run_cli, wait_healthy


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_dir):
    """A run directory whose one round kept its student (the files `kdagent serve RUN_DIR` reads)."""
    run = tmp_path_factory.mktemp("served") / "run"
    shutil.copytree(tiny_model_dir, run / "round-01" / "student")
    (run / "metrics.json").write_text(
        json.dumps(
            {
                "baseline": {"n": 1, "accuracy": 0.0},
                "rounds": [
                    {"round": 1, "student": str(run / "round-01" / "student"), "eval": {"n": 1, "accuracy": 0.0}}
                ],
            }
        )
    )
    return run


def test_serve_answers_an_openai_client(run_dir, tmp_path):
    from openai import OpenAI

    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen(
        [KDAGENT, "serve", str(run_dir), "--port", str(port), "--device", "cpu"], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", proc, tmp_path / "serve.log", "kdagent serve")
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        (model,) = client.models.list().data
        assert model.id == str((run_dir / "round-01" / "student").resolve())
        reply = client.chat.completions.create(
            model=model.id, messages=[{"role": "user", "content": "Hello"}], max_tokens=4, temperature=0
        )
        assert reply.choices[0].message.content is not None and reply.usage.completion_tokens >= 1
    finally:
        proc.terminate()  # kdagent exec'd transformers serve: the same process
        proc.wait(timeout=30)
        log.close()
    log_text = (tmp_path / "serve.log").read_text()
    assert "serving" in log_text and "Uvicorn running" in log_text


def test_serve_refuses_a_run_without_a_student(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"baseline": {}, "rounds": []}))
    result = run_cli("serve", str(tmp_path))
    assert result.returncode == 2 and "kept no student" in result.stderr


def test_chat_names_a_run_that_has_not_finished_its_baseline(tmp_path):
    (tmp_path / "recipe.yaml").write_text("name: started\n")  # what a run writes first
    result = run_cli("chat", str(tmp_path))
    assert result.returncode == 2 and "no metrics.json yet" in result.stderr and "unknown model" not in result.stderr


def _read_until(fd: int, marker: bytes, timeout: float) -> bytes:
    seen, deadline = b"", time.time() + timeout
    while marker not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.time()))
        if not ready:
            raise AssertionError(f"no {marker!r} within {timeout} s; saw {seen[-500:]!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    return seen


def test_chat_answers_a_line_on_a_terminal(tiny_model_dir):
    primary, secondary = os.openpty()
    proc = subprocess.Popen(
        [KDAGENT, "chat", str(tiny_model_dir), "--max-new-tokens", "4", "--temperature", "0"],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        close_fds=True,
    )
    os.close(secondary)
    try:
        banner = _read_until(primary, b"you> ", 120)
        assert b"chatting with" in banner
        os.write(primary, b"What is 2 + 2?\n")
        answer = _read_until(primary, b"you> ", 120)  # the reply, then the next prompt
        assert b"model> " in answer
        os.write(primary, b"/exit\n")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(primary)
