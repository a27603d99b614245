"""A teacher and a student with different vocabularies: white-box distillation is refused up front, and
text-level distillation (the teacher's verified replies, learnt with SFT in the student's own tokenizer)
runs a round end to end. The student's tokenizer is a real byte-level BPE trained here, not SmolLM2's."""

import pytest

from kdagent.errors import UserError
from kdagent.jsonl import read_jsonl
from kdagent.loop.runner import run_recipe
from kdagent.plugins import build_plugins
from kdagent.recipe import Recipe
from kdagent.records import SFTExample
from kdagent.teachers.vocab import require_shared_vocabulary, vocabulary_difference


@pytest.fixture(scope="module")
def other_vocab_student(tmp_path_factory, smollm_path):
    """A config-built llama whose tokenizer is a new 600-token BPE (SmolLM2's chat template and special
    tokens kept, every other id different)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from kdagent.domains.arithmetic import Arithmetic

    domain = Arithmetic()
    texts = [f"{t.prompt} {t.solution}" for t in domain.seed_tasks(300, 99)] + [d.text for d in domain.corpus()]
    tokenizer = AutoTokenizer.from_pretrained(smollm_path).train_new_from_iterator(texts, vocab_size=600)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    out = tmp_path_factory.mktemp("other-vocab")
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _recipe(teacher, student, method="sft"):
    return Recipe.model_validate(
        {
            "name": "cross-vocab",
            "seed": 2,
            "student": {"model": str(student), "max_length": 384},
            "teacher": {
                "kind": "hf",
                "model": str(teacher),
                "samples": 8,
                "temperature": 0.7,
                "max_new_tokens": 64,
                "batch_size": 12,
            },
            "domain": {
                "name": "arithmetic",
                "seed_tasks": 12,
                "eval_tasks": 2,
            },  # 96 samples: some pass (about 1 in 12)
            "skills": ["cot"],
            "retrieval": {"enabled": False},
            "feedback": {"fallback_to_reference": False},
            "update": {"method": method, "epochs": 2, "batch_size": 2, "learning_rate": 1e-3},
            "evaluation": {"max_new_tokens": 8},
        }
    )


def test_white_box_distillation_is_refused_before_anything_runs(tmp_path, smollm_path, other_vocab_student):
    size_t, size_s, differ = vocabulary_difference(smollm_path, other_vocab_student)
    assert size_t == 49152 and size_s <= 600 and differ > 49000
    with pytest.raises(
        UserError,
        match=r"needs teacher and student to share a vocabulary: the teacher has 49152 tokens.*use text-level distillation",
    ):
        require_shared_vocabulary(smollm_path, other_vocab_student)
    with pytest.raises(UserError, match="share a vocabulary"):
        run_recipe(
            _recipe(smollm_path, other_vocab_student, method="distill"),
            tmp_path / "run",
            build_plugins(load_entry_points=False),
        )
    assert not (tmp_path / "run").exists()


@pytest.mark.integration
def test_text_level_distillation_across_vocabularies(tmp_path, smollm_path, other_vocab_student):
    from transformers import AutoTokenizer

    metrics = run_recipe(
        _recipe(smollm_path, other_vocab_student), tmp_path / "run", build_plugins(load_entry_points=False)
    )
    (entry,) = metrics["rounds"]
    examples = read_jsonl(tmp_path / "run" / "round-01" / "sft.jsonl", SFTExample)
    assert examples and entry["counts"]["passed"] >= len(examples)
    assert {e.provenance.teacher for e in examples} == {f"hf:{smollm_path}"}  # the teacher's own verified text
    assert entry["update"]["steps"] >= 1 and entry["update"]["losses"][-1] < entry["update"]["losses"][0]
    student = AutoTokenizer.from_pretrained(entry["student"])
    assert len(student) == len(AutoTokenizer.from_pretrained(other_vocab_student))  # still the student's vocabulary
