"""Models load from safetensors only; pickle-based weights are refused unless the user opts in (and even
then torch loads them with weights_only); remote code never runs. Each planted payload would create a
marker file: the marker must never appear."""

import json
import pickle
import shutil

import pytest

from conftest import run_cli
from kdagent.errors import UserError


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def pickled_model(tmp_path, tiny_model_dir):
    """The tiny model's config and tokenizer with a malicious pytorch_model.bin instead of safetensors."""
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    marker = tmp_path / "PWNED"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"model.embed_tokens.weight": _Payload(marker)}))
    return folder, marker


def test_pickle_weights_are_refused_before_loading(tmp_path, pickled_model):
    from kdagent.models import resolve_model

    folder, marker = pickled_model
    with pytest.raises(
        UserError,
        match=r"has no safetensors weights \(found pytorch_model.bin\): kdagent loads safetensors only.*KDAGENT_ALLOW_PICKLE=1",
    ):
        resolve_model(str(folder))
    data = tmp_path / "eval.jsonl"
    data.write_text(json.dumps({"id": "a", "prompt": "2 + 3?", "answer": "5", "kind": "numeric"}) + "\n")
    result = run_cli("eval", "--model", str(folder), "--data", str(data))
    assert (
        result.returncode == 2
        and "no safetensors weights" in result.stderr
        and len(result.stderr.strip().splitlines()) == 1
    )
    assert not marker.exists()


def test_opting_in_still_loads_with_weights_only(monkeypatch, pickled_model):
    from kdagent.generation.engine import load_causal_lm
    from kdagent.models import resolve_model

    folder, marker = pickled_model
    monkeypatch.setenv("KDAGENT_ALLOW_PICKLE", "1")
    assert resolve_model(str(folder)) == folder.resolve()  # the opt-in is honoured...
    with pytest.raises(Exception, match="(?i)weights_only|unpickl"):
        load_causal_lm(folder, "cpu")  # ...but torch's weights_only loader refuses the payload
    assert not marker.exists()


def test_remote_code_never_runs(tmp_path, tiny_model_dir):
    from kdagent.generation.engine import load_causal_lm

    folder = tmp_path / "remote"
    shutil.copytree(tiny_model_dir, folder)
    marker = tmp_path / "PWNED"
    (folder / "evil_model.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "evil_model.EvilModel", "AutoConfig": "evil_model.EvilConfig"}
    (folder / "config.json").write_text(json.dumps(config))
    try:
        load_causal_lm(
            folder, "cpu"
        )  # trust_remote_code is off: the built-in class loads, the module is never imported
    except Exception:
        pass  # refusing is just as good
    assert not marker.exists()
