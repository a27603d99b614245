"""White-box distillation (`kdagent.update.distill`) and layer-dropping students (`kdagent.models.shrink`).

Real TRL trainers on config-built llamas sharing the SmolLM2 tokenizer; no mocks.
"""

import warnings
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from kdagent.errors import UserError
from kdagent.recipe import DistillOptions, UpdateConfig
from kdagent.testing import make_job

PROMPTS = [
    [{"role": "user", "content": "What is 2 + 3?"}],
    [{"role": "user", "content": "Name a colour."}],
    [{"role": "user", "content": "Say hello."}],
    [{"role": "user", "content": "Count to three."}],
]
COMPLETIONS = ["2 + 3 = 5. The answer is 5.", "Blue is a colour.", "Hello there!", "One, two, three."]


def _llama(out: Path, tokenizer, layers: int, seed: int, init: float = 0.02) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=init,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tokenizer(smollm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm_path)


@pytest.fixture(scope="module")
def teacher4(tmp_path_factory, tokenizer) -> Path:
    """A config-built 4-layer llama (hidden 64) with the SmolLM2 tokenizer; a wider initialisation than the default
    gives peaked next-token distributions, so the divergences are far from zero."""
    return _llama(tmp_path_factory.mktemp("teacher4"), tokenizer, layers=4, seed=1, init=0.1)


@pytest.fixture(scope="module")
def student2(tmp_path_factory, teacher4) -> Path:
    from kdagent.models.shrink import shrink

    return shrink(teacher4, tmp_path_factory.mktemp("student") / "student2", 2)


def _update(**kw) -> UpdateConfig:
    values = dict(learning_rate=1e-3, epochs=1.0, batch_size=4, gradient_accumulation_steps=1, warmup_ratio=0.0)
    values.update(kw)
    return UpdateConfig(**values)


def _state(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(path / "model.safetensors")


# ---------------------------------------------------------------- the loss


def _direct(student, teacher, divergence, beta, temperature, mask):
    """The divergences written out with softmax/log: summed over the vocabulary, averaged over the masked tokens."""
    p_s = torch.softmax(student / temperature, dim=-1)
    p_t = torch.softmax(teacher / temperature, dim=-1)
    if divergence == "forward_kl":  # KL(teacher || student)
        per_token = (p_t * (p_t.log() - p_s.log())).sum(-1)
    elif divergence == "reverse_kl":  # KL(student || teacher)
        per_token = (p_s * (p_s.log() - p_t.log())).sum(-1)
    else:  # TRL's generalised JSD: m = beta p_t + (1 - beta) p_s; beta KL(p_t || m) + (1 - beta) KL(p_s || m)
        m = beta * p_t + (1 - beta) * p_s
        per_token = beta * (p_t * (p_t.log() - m.log())).sum(-1) + (1 - beta) * (p_s * (p_s.log() - m.log())).sum(-1)
    return (per_token * mask).sum() / mask.sum()


@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.7])
@pytest.mark.parametrize(
    "divergence,beta", [("forward_kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.5), ("jsd", 0.2), ("jsd", 0.9)]
)
def test_divergence_loss_matches_direct_computation(divergence, beta, temperature):
    from kdagent.update.distill import divergence_loss

    g = torch.Generator().manual_seed(0)
    student = torch.randn(2, 5, 11, generator=g) * 2
    teacher = torch.randn(2, 5, 11, generator=g) * 2
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 1, 1, 1, 1]], dtype=torch.float32)
    got = divergence_loss(student, teacher, divergence, beta=beta, temperature=temperature, mask=mask)
    want = _direct(student, teacher, divergence, beta, temperature, mask)
    assert got.shape == ()
    assert abs(got.item() - want.item()) < 1e-5, (got.item(), want.item())
    # no mask: every token counts
    got_all = divergence_loss(student, teacher, divergence, beta=beta, temperature=temperature)
    assert (
        abs(got_all.item() - _direct(student, teacher, divergence, beta, temperature, torch.ones(2, 5)).item()) < 1e-5
    )


def test_divergence_loss_is_what_the_distillation_trainer_computes():
    """TRL's DistillationTrainer projects hidden states through the lm_head chunk by chunk; with an identity head its
    loss is the loss on these logits, and it must equal `divergence_loss` (one definition for both TRL trainers)."""
    from trl.trainer.distillation_trainer import _chunked_divergence_loss

    from kdagent.update.distill import divergence_loss, trl_beta

    g = torch.Generator().manual_seed(1)
    student = torch.randn(2, 5, 11, generator=g)
    teacher = torch.randn(2, 5, 11, generator=g)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]])
    eye = torch.eye(11)
    for divergence, beta in [("forward_kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.3)]:
        for temperature in (1.0, 1.5):
            theirs, _, n = _chunked_divergence_loss(
                student, teacher, eye, eye, mask, trl_beta(divergence, beta), temperature=temperature
            )
            ours = divergence_loss(student, teacher, divergence, beta=beta, temperature=temperature, mask=mask)
            assert n.item() == 6
            assert abs(theirs.item() - ours.item()) < 1e-5, (divergence, temperature, theirs.item(), ours.item())


def test_divergence_names_and_beta_mapping():
    from kdagent.update.distill import divergence_loss, trl_beta

    assert trl_beta("forward_kl", 0.3) == 0.0
    assert trl_beta("reverse_kl", 0.3) == 1.0
    assert trl_beta("jsd", 0.3) == 0.3
    with pytest.raises(UserError, match="unknown divergence"):
        trl_beta("kl")
    with pytest.raises(UserError, match="between 0 and 1"):
        trl_beta("jsd", 1.5)
    same = torch.zeros(1, 2, 3)
    assert divergence_loss(same, same, "forward_kl").item() == pytest.approx(0.0, abs=1e-7)


# ---------------------------------------------------------------- shrink


def test_layers_to_keep():
    from kdagent.models.shrink import layers_to_keep

    assert layers_to_keep(6, 30) == [0, 6, 12, 17, 23, 29]
    assert layers_to_keep(2, 4) == [0, 3]
    assert layers_to_keep(1, 2) == [0]
    assert layers_to_keep(4, 4) == [0, 1, 2, 3]
    assert layers_to_keep([3, 0], 4) == [0, 3]
    assert layers_to_keep([0, -1], 30) == [0, 29]
    for bad in (0, 5, [], [4], [1, 1], [-5]):
        with pytest.raises(UserError):
            layers_to_keep(bad, 4)


def _check_shrunk(src: Path, dst: Path, keep: list[int]):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(dst)
    assert model.config.num_hidden_layers == len(keep)
    assert len(model.model.layers) == len(keep)
    before, after = _state(src), _state(dst)
    for new, old in enumerate(keep):
        names = [k for k in before if k.startswith(f"model.layers.{old}.")]
        assert names
        for name in names:
            assert torch.equal(after[name.replace(f"model.layers.{old}.", f"model.layers.{new}.")], before[name]), name
    for name in ("model.embed_tokens.weight", "model.norm.weight"):
        assert torch.equal(after[name], before[name])
    assert not any(k.startswith(f"model.layers.{len(keep)}.") for k in after)
    torch.testing.assert_close(model.lm_head.weight, before["model.embed_tokens.weight"])  # tied, as in the source
    with torch.no_grad():
        logits = model(torch.tensor([[1, 2, 3, 4]])).logits
    assert torch.isfinite(logits).all()
    assert (dst / "tokenizer_config.json").is_file()
    assert not list(dst.parent.glob(f".{dst.name}.tmp-*"))
    return model


def test_shrink_tiny_model_keeps_one_layer(tiny_model_dir, tmp_path):
    from kdagent.models.shrink import shrink

    dst = shrink(tiny_model_dir, tmp_path / "one", 1)
    _check_shrunk(tiny_model_dir, dst, [0])


def test_shrink_four_layers_to_first_and_last(teacher4, tmp_path):
    from transformers import AutoTokenizer

    from kdagent.models.shrink import shrink

    dst = tmp_path / "two"
    dst.mkdir()
    (dst / "old-file").write_text("replaced")
    assert shrink(teacher4, dst, [0, 3]) == dst
    model = _check_shrunk(teacher4, dst, [0, 3])
    assert not (dst / "old-file").exists()
    assert AutoTokenizer.from_pretrained(dst).get_vocab() == AutoTokenizer.from_pretrained(teacher4).get_vocab()
    # the renumbered layers work with the KV cache: greedy generation runs
    out = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 7)
    with pytest.raises(UserError, match="must not replace its source"):
        shrink(teacher4, teacher4, 2)


def test_shrink_cuts_per_layer_config_fields(tmp_path, tokenizer):
    """Qwen2 (llama-family) carries `layer_types`, one entry per layer: it is cut down with the layers."""
    from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from kdagent.models.shrink import shrink

    torch.manual_seed(2)
    types = ["full_attention", "sliding_attention", "sliding_attention", "full_attention"]
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        layer_types=types,
        use_sliding_window=True,
        sliding_window=8,
        tie_word_embeddings=False,
    )
    Qwen2ForCausalLM(config).save_pretrained(tmp_path / "qwen")
    tokenizer.save_pretrained(tmp_path / "qwen")
    dst = shrink(tmp_path / "qwen", tmp_path / "qwen-small", [1, 3])
    model = AutoModelForCausalLM.from_pretrained(dst)
    assert model.config.num_hidden_layers == 2
    assert model.config.layer_types == ["sliding_attention", "full_attention"]
    before, after = _state(tmp_path / "qwen"), _state(dst)
    assert torch.equal(after["lm_head.weight"], before["lm_head.weight"])
    assert torch.equal(after["model.layers.0.self_attn.q_proj.bias"], before["model.layers.1.self_attn.q_proj.bias"])
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([list(range(1, 13))])).logits).all()


@pytest.mark.integration
def test_shrink_smollm2_to_six_layers(smollm_path, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from kdagent.models.shrink import shrink

    assert AutoConfig.from_pretrained(smollm_path).num_hidden_layers == 30
    dst = shrink(smollm_path, tmp_path / "smol6", 6)
    config = AutoConfig.from_pretrained(dst)
    assert config.num_hidden_layers == 6 and config.hidden_size == 576
    model = AutoModelForCausalLM.from_pretrained(dst)
    ids = AutoTokenizer.from_pretrained(dst)("The cat sat", return_tensors="pt").input_ids[:, :3]
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, 3, 49152) and torch.isfinite(logits).all()


# ---------------------------------------------------------------- train_distill


def _mean_divergence(
    student_dir: Path, teacher_dir: Path, tokenizer, divergence: str, temperature: float = 1.0
) -> float:
    """`divergence_loss` of the student against the teacher on the reference completions (completion tokens only)."""
    from transformers import AutoModelForCausalLM

    from kdagent.update.distill import divergence_loss

    student = AutoModelForCausalLM.from_pretrained(student_dir)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir)
    total, tokens = 0.0, 0.0
    for prompt, completion in zip(PROMPTS, COMPLETIONS):
        head = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": completion}], tokenize=False)
        n_head = len(tokenizer(head, add_special_tokens=False).input_ids)
        ids = torch.tensor([tokenizer(full, add_special_tokens=False).input_ids])
        mask = torch.zeros(ids.shape)
        mask[0, n_head - 1 : -1] = 1  # logits at i predict token i + 1: the completion tokens
        with torch.no_grad():
            total += (
                divergence_loss(
                    student(ids).logits, teacher(ids).logits, divergence, temperature=temperature, mask=mask
                ).item()
                * mask.sum().item()
            )
        tokens += mask.sum().item()
    return total / tokens  # averaged over all completion tokens, as the trainer's batch loss is


def test_train_distill_off_policy_loss_decreases(teacher4, student2, tmp_path, tokenizer, monkeypatch):
    """lmbda=0 with reference completions: GKD on fixed data, so the loss must fall. Temperature 2 applies to the
    loss as it does in `divergence_loss` (TRL's GKD alone would leave its loss at temperature 1). Trained in
    fp32 (no bf16 autocast on the CPU), so the first loss equals the direct fp32 computation."""
    monkeypatch.setenv("KDAGENT_CPU_BF16", "0")
    from transformers import AutoModelForCausalLM

    from kdagent.update.distill import train_distill

    out = tmp_path / "distilled"
    before = _mean_divergence(student2, teacher4, tokenizer, "forward_kl", temperature=2.0)
    metrics = train_distill(
        make_job(
            student2,
            out,
            update=_update(epochs=6.0),
            max_length=256,
            seed=0,
            options=DistillOptions(divergence="forward_kl", lmbda=0.0, temperature=2.0, max_completion_length=16),
        ),
        teacher4,
        PROMPTS,
        completions=COMPLETIONS,
    )
    assert metrics["trainer"] == "gkd" and metrics["trl_beta"] == 0.0
    assert metrics["examples"] == 4 and metrics["skipped"] == 0
    assert metrics["steps"] == 6 and len(metrics["losses"]) == 6
    assert metrics["losses"][0] > metrics["losses"][-1], metrics["losses"]
    after = _mean_divergence(out, teacher4, tokenizer, "forward_kl", temperature=2.0)
    assert after < before, (before, after)
    # the first logged loss is `divergence_loss` of the untrained student on the completion tokens (rounded to 1e-4)
    assert metrics["losses"][0] == pytest.approx(before, abs=1e-4), (metrics["losses"][0], before)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 2 and model.config.use_cache
    assert not list(tmp_path.glob(".distilled.*"))


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd"])
def test_train_distill_on_policy_each_divergence(teacher4, student2, tmp_path, divergence):
    """lmbda=1: TRL's DistillationTrainer, the student samples every completion."""
    import math

    from transformers import AutoModelForCausalLM

    from kdagent.update.distill import train_distill

    out = tmp_path / "on-policy"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = train_distill(
            make_job(
                student2,
                out,
                update=_update(batch_size=2),
                max_length=128,
                seed=0,
                options=DistillOptions(
                    divergence=divergence, beta=0.5, lmbda=1.0, temperature=1.2, max_completion_length=8
                ),
            ),
            teacher4,
            PROMPTS,
        )
    # TRL's generation reads transformers' deprecated `is_gradient_checkpointing`: silenced, nothing else is
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
    assert metrics["trainer"] == "distillation"
    assert metrics["steps"] == 2 and len(metrics["losses"]) == 2
    assert all(math.isfinite(x) and x >= 0 for x in metrics["losses"])
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 2


def test_train_distill_mixed_without_completions(teacher4, student2, tmp_path):
    """0 < lmbda < 1 and no completions: GKD, off-policy steps sampled from the teacher; small prompt sets fit."""
    from transformers import AutoModelForCausalLM

    from kdagent.update.distill import train_distill

    out = tmp_path / "mixed"
    metrics = train_distill(
        make_job(
            student2,
            out,
            update=_update(batch_size=8, epochs=2.0),
            max_length=128,
            seed=0,
            options=DistillOptions(divergence="jsd", beta=0.3, lmbda=0.5, temperature=0.8, max_completion_length=8),
        ),
        teacher4,
        PROMPTS[:3],
    )
    assert metrics["trainer"] == "gkd" and metrics["trl_beta"] == 0.3
    assert metrics["steps"] == 2 and all(x > 0 for x in metrics["losses"])
    AutoModelForCausalLM.from_pretrained(out)


def test_train_distill_skips_prompts_too_long(teacher4, student2, tmp_path):
    from kdagent.update.distill import train_distill

    long_prompt = [{"role": "user", "content": "word " * 200}]
    metrics = train_distill(
        make_job(
            student2,
            tmp_path / "s",
            update=_update(batch_size=2),
            max_length=64,
            seed=0,
            options=DistillOptions(divergence="reverse_kl", lmbda=1.0, max_completion_length=8),
        ),
        teacher4,
        [long_prompt, *PROMPTS[:2]],
    )
    assert metrics["examples"] == 2 and metrics["skipped"] == 1 and metrics["steps"] == 1
    with pytest.raises(UserError, match="longer than"):
        train_distill(
            make_job(
                student2,
                tmp_path / "t",
                update=_update(),
                max_length=64,
                seed=0,
                options=DistillOptions(lmbda=1.0, max_completion_length=8),
            ),
            teacher4,
            [long_prompt],
        )


def test_train_distill_refuses_other_vocabulary(student2, tmp_path):
    from kdagent.models import resolve_model
    from kdagent.update.distill import train_distill

    out = tmp_path / "never"
    with pytest.raises(UserError, match="share a vocabulary"):
        train_distill(
            make_job(student2, out, update=_update(), max_length=128, seed=0, options=DistillOptions()),
            resolve_model("minilm-l6"),
            PROMPTS,
        )
    assert not out.exists() and not list(tmp_path.glob(".never.*"))


def test_train_distill_refuses_bad_settings(teacher4, student2, tmp_path):
    from kdagent.update.distill import train_distill

    for kwargs in [dict(divergence="tvd"), dict(lmbda=1.5), dict(temperature=0.0)]:
        with pytest.raises(ValidationError, match=next(iter(kwargs))):  # refused by the options model
            DistillOptions(**kwargs)
    options = DistillOptions(max_completion_length=128)
    with pytest.raises(UserError, match="max_completion_length"):  # the options with the student's max_length
        train_distill(
            make_job(student2, tmp_path / "x", update=_update(), max_length=128, options=options), teacher4, PROMPTS
        )
    assert not (tmp_path / "x").exists()


@pytest.mark.integration
def test_distill_the_embedded_30_layer_model_into_a_shrunk_student(smollm_path, tmp_path, tokenizer):
    """Logit distillation from a larger teacher into a smaller one: the embedded SmolLM2-135M (30 layers) teaches a
    4-layer student cut from it by `shrink` (generalised JSD, beta 0.5, on the reference completions). The loss
    falls, the student moves towards the teacher on the completion tokens, and it loads with from_pretrained."""
    from transformers import AutoModelForCausalLM

    from kdagent.models.shrink import shrink
    from kdagent.update.distill import train_distill

    student = shrink(smollm_path, tmp_path / "smollm2-4l", 4)
    out = tmp_path / "distilled"
    before = _mean_divergence(student, smollm_path, tokenizer, "jsd")
    metrics = train_distill(
        make_job(
            student,
            out,
            update=_update(learning_rate=1e-4, epochs=4.0, batch_size=2),
            max_length=128,
            seed=0,
            options=DistillOptions(divergence="jsd", beta=0.5, lmbda=0.0, max_completion_length=16),
        ),
        smollm_path,
        PROMPTS,
        completions=COMPLETIONS,
    )
    assert metrics["examples"] == 4 and metrics["skipped"] == 0 and metrics["steps"] == 8
    losses = metrics["losses"]
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2, losses
    after = _mean_divergence(out, smollm_path, tokenizer, "jsd")
    assert after < 0.8 * before, (before, after)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 4


@pytest.mark.parametrize("lmbda", [0.0, 1.0])
def test_train_distill_with_lora_saves_a_merged_checkpoint(teacher4, student2, tmp_path, lmbda):
    """LoRA (peft) through either trainer, GKD (lmbda below 1) and DistillationTrainer (lmbda 1): the adapter
    trains, is merged, and the student is a plain checkpoint whose base weights moved."""
    from safetensors import safe_open

    from kdagent.recipe import LoraConfig
    from kdagent.update.distill import train_distill

    out = tmp_path / "lora"
    metrics = train_distill(
        make_job(
            student2,
            out,
            update=_update(batch_size=2, lora=LoraConfig(r=4, alpha=8, dropout=0.0), save_dtype="float32"),
            max_length=128,
            seed=0,
            options=DistillOptions(divergence="jsd", beta=0.5, lmbda=lmbda, max_completion_length=8),
        ),
        teacher4,
        PROMPTS,
        completions=COMPLETIONS if lmbda < 1 else None,
    )
    assert metrics["steps"] == 2 and all(x == x for x in metrics["losses"])  # ran, no NaN
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and not any("lora" in k for k in keys)
    moved = [k for k, v in _state(out).items() if not torch.equal(v, _state(student2)[k])]
    assert moved and all("proj" in k for k in moved)  # only the adapted projections changed
