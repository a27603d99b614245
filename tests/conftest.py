import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
KDAGENT = str(Path(sys.executable).with_name("kdagent"))


@pytest.fixture(scope="session")
def smollm_path() -> Path:
    """The embedded SmolLM2-135M-Instruct (materialised once under KDAGENT_HOME by the set-up)."""
    from kdagent.models import resolve_model

    return resolve_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tiny_llama(smollm_path):
    """Builds a config-built llama (2 layers, hidden 64) with the real SmolLM2 tokenizer, seeded:
    `tiny_llama(**config_overrides)` returns (model, tokenizer)."""

    def build(**overrides):
        import torch
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        tokenizer = AutoTokenizer.from_pretrained(smollm_path)
        config = LlamaConfig(
            **{
                "vocab_size": len(tokenizer),
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "max_position_embeddings": 1024,
                "tie_word_embeddings": True,
                "bos_token_id": tokenizer.bos_token_id,
                "eos_token_id": tokenizer.eos_token_id,
                "pad_token_id": tokenizer.pad_token_id,
                **overrides,
            }
        )
        return LlamaForCausalLM(config), tokenizer

    return build


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_llama) -> Path:
    """The tiny llama (`tiny_llama`), saved as a checkpoint."""
    model, tokenizer = tiny_llama()
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def peaked_teacher_dir(tmp_path_factory, tiny_llama) -> Path:
    """A 3-layer tiny llama whose output head is scaled up: a peakier distribution than the init's near-uniform
    one, so a teacher's top-k log-probabilities have a shape to learn."""
    import torch

    model, tokenizer = tiny_llama(num_hidden_layers=3)
    with torch.no_grad():
        model.lm_head.weight.mul_(8)
    out = tmp_path_factory.mktemp("peaked-teacher")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def label_examples(n: int = 8) -> list:
    """n curated SFT examples of a three-label task, for the distillation updaters."""
    from kdagent.records import Provenance, SFTExample

    prov = Provenance(round=1, teacher="test", skill="label", domain="finance", task_id="t")
    labels = ["positive", "negative", "neutral"]
    return [
        SFTExample(
            id=f"e{i}",
            prompt=[{"role": "user", "content": f"Is this positive, negative or neutral? Item {i}."}],
            completion=[{"role": "assistant", "content": labels[i % 3]}],
            provenance=prov,
        )
        for i in range(n)
    ]


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent")
    return SHARED_DATA


def run_cli(*args, env=None, cwd=None):
    import subprocess

    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([KDAGENT, *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=900)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(
    url: str, proc: subprocess.Popen, log: Path, what: str, timeout: float = 180, give_up=pytest.fail
) -> None:
    """Wait until `url` answers 200; `give_up` (pytest.fail or pytest.skip) with the log's tail when the server
    process exits first, or with `what` when it does not answer within `timeout` seconds (the process then killed)."""
    deadline = time.time() + timeout
    while True:
        if proc.poll() is not None:
            give_up(f"{what} exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.time() > deadline:
            proc.kill()
            proc.wait()
            give_up(f"{what} did not answer on {url} in {timeout:.0f} s: {log.read_text()[-500:]}")
        time.sleep(0.3)


@pytest.fixture(scope="session")
def openai_server(smollm_path, tmp_path_factory):
    """`transformers serve` on 127.0.0.1 serving the embedded model: a real OpenAI-compatible server."""
    exe = Path(sys.executable).with_name("transformers")
    if not exe.exists():
        pytest.fail("transformers[serving] is not installed (it is part of kdagent's test extra)")
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [str(exe), "serve", str(smollm_path), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    wait_healthy(f"{url}/health", proc, log, "transformers serve")
    yield url, str(smollm_path)
    proc.terminate()
    proc.wait(timeout=30)
