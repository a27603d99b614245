"""The saved student is what users expect of a Hugging Face checkpoint: fp32 weights, or bfloat16 with
`update.save_dtype: bfloat16` (kdagent loads those back into fp32 to train again and to evaluate on the CPU),
files 0644 and folders 0755, the KV cache on, the base model's name and not a GGUF file's."""

import json
import shutil

import pytest
import torch

from kdagent.models.files import safetensors_header
from kdagent.recipe import UpdateConfig
from kdagent.records import Provenance, SFTExample
from kdagent.testing import make_job
from kdagent.update.common import load_student, model_name
from kdagent.update.sft import train_sft


def examples(n=4):
    prov = Provenance(round=1, teacher="t", skill="cot", domain="d", task_id="t")
    return [
        SFTExample(
            id=str(i),
            prompt=[{"role": "user", "content": f"What is {i} + 1?"}],
            completion=[{"role": "assistant", "content": f"The answer is {i + 1}."}],
            provenance=prov,
        )
        for i in range(n)
    ]


@pytest.fixture
def gguf_named_base(tiny_model_dir, tmp_path):
    """The tiny model with the display name a GGUF conversion leaves in its config."""
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "_model_name_or_path": "Tiny 1M Q4 Mix"}))
    return base


def dtypes(folder) -> set[str]:
    _, header = safetensors_header(folder / "model.safetensors")
    return {t["dtype"] for k, t in header.items() if k != "__metadata__"}


def test_a_student_is_saved_in_bfloat16_readable_named_and_with_its_cache_on(gguf_named_base, tmp_path):
    out = tmp_path / "round-01" / "student"
    out.parent.mkdir()
    train_sft(
        make_job(
            gguf_named_base,
            out,
            update=UpdateConfig(learning_rate=1e-3, epochs=1, batch_size=2, save_dtype="bfloat16"),
            max_length=64,
            seed=0,
            examples=examples(),
        )
    )
    assert dtypes(out) == {"BF16"}
    config = json.loads((out / "config.json").read_text())
    assert config["dtype"] == "bfloat16" and config["use_cache"] is True
    assert config["_name_or_path"] == "base" and "_model_name_or_path" not in config
    assert (out.stat().st_mode & 0o777) == 0o755
    assert {f.name: f.stat().st_mode & 0o777 for f in out.iterdir()} == {f.name: 0o644 for f in out.iterdir()}

    # training the next round loads it into fp32 and keeps the name; the local folder is where it loads from
    tokenizer, model = load_student(out)
    assert {p.dtype for p in model.parameters()} == {torch.float32} and model.config.name_or_path == str(out)
    again = tmp_path / "round-02" / "student"
    again.parent.mkdir()
    train_sft(
        make_job(
            out,
            again,
            update=UpdateConfig(learning_rate=1e-3, epochs=1, batch_size=2, save_dtype="bfloat16"),
            max_length=64,
            seed=0,
            examples=examples(),
        )
    )
    assert json.loads((again / "config.json").read_text())["_name_or_path"] == "base"

    # evaluation on the CPU runs it in fp32
    from kdagent.generation.engine import load_causal_lm

    model, _ = load_causal_lm(again, device="cpu")
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_a_student_is_saved_in_float32_by_default(tiny_model_dir, tmp_path):
    """The default keeps the loop's numbers those of fp32 weights: bf16 rounding changes greedy replies."""
    out = tmp_path / "student"
    train_sft(
        make_job(
            tiny_model_dir,
            out,
            update=UpdateConfig(learning_rate=1e-3, epochs=1, batch_size=2),
            max_length=64,
            seed=0,
            examples=examples(2),
        )
    )
    assert dtypes(out) == {"F32"} and json.loads((out / "config.json").read_text())["dtype"] == "float32"


def test_the_embedded_student_is_named_by_its_hub_id(smollm_path):
    assert model_name(smollm_path) == "HuggingFaceTB/SmolLM2-135M-Instruct"
