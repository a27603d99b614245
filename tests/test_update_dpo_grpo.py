"""DPO and GRPO wrappers: real TRL trainers on the tiny 2-layer llama, a few steps each, no mocks."""

import warnings

import pytest
import torch

from kdagent.recipe import DPOOptions, GRPOOptions, LoraConfig, UpdateConfig
from kdagent.records import PreferencePair, Provenance
from kdagent.testing import make_job
from kdagent.update.dpo import dpo_loss_types, train_dpo
from kdagent.update.grpo import generation_batch_size, train_grpo

PARAM = "model.layers.0.self_attn.q_proj.weight"


def _pairs(n: int = 8) -> list[PreferencePair]:
    prov = Provenance(round=0, teacher="test", skill="cot", domain="math", task_id="t")
    return [
        PreferencePair(
            id=f"p{i}",
            prompt=[{"role": "user", "content": f"What is {i} plus {i}?"}],
            chosen=[{"role": "assistant", "content": "The answer is yes."}],
            rejected=[{"role": "assistant", "content": "Banana kettle moon."}],
            margin=1.0,
            provenance=prov,
        )
        for i in range(n)
    ]


def _param(folder, name=PARAM) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    return dict(model.named_parameters())[name].detach().clone()


def _no_temp_left(out_dir) -> bool:
    return not list(out_dir.parent.glob(f".{out_dir.name}.tmp-*")) and not list(
        out_dir.parent.glob(f".{out_dir.name}.partial")
    )


def _dpo(model_dir, out, options: DPOOptions, update: UpdateConfig | None = None) -> dict:
    """train_dpo on the tiny model and the eight pairs: by default three epochs of two steps at 1e-3."""
    update = update or UpdateConfig(learning_rate=1e-3, epochs=3, batch_size=4)
    job = make_job(model_dir, out, update=update, max_length=64, seed=0, options=options, pairs=_pairs())
    return train_dpo(job)


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge"])
def test_dpo_learns_and_saves(tiny_model_dir, tmp_path, loss_type):
    out = tmp_path / "student"
    stale = tmp_path / ".student.tmp-999999"  # as a killed run would leave it
    stale.mkdir()
    metrics = _dpo(tiny_model_dir, out, DPOOptions(loss_type=loss_type))
    assert metrics["examples"] == 8 and metrics["steps"] == 6
    assert len(metrics["losses"]) == 6
    assert metrics["losses"][0] > metrics["losses"][-1], metrics["losses"]
    assert metrics["rewards_margin"] > 0
    assert _no_temp_left(out)
    assert not torch.equal(_param(out), _param(tiny_model_dir))


def test_dpo_learning_rate_of_its_own_overrides_the_update_one(tiny_model_dir, tmp_path):
    out = tmp_path / "student"
    metrics = _dpo(tiny_model_dir, out, DPOOptions(learning_rate=1e-9))  # the update's rate is 1e-3
    assert metrics["learning_rate"] == 1e-9 and metrics["steps"] == 6
    moved = (_param(out) - _param(tiny_model_dir)).abs().max().item()
    assert 0 < moved < 1e-6, moved  # six Adam steps of at most about 1e-9 each, not of 1e-3


def test_dpo_unknown_loss_type_lists_the_valid_ones(tiny_model_dir, tmp_path):
    assert {"sigmoid", "ipo", "hinge"} <= set(dpo_loss_types())
    with pytest.raises(ValueError, match="sigmoid.*ipo"):
        _dpo(tiny_model_dir, tmp_path / "s", DPOOptions(loss_type="nope"), UpdateConfig())
    assert not (tmp_path / "s").exists()


def test_dpo_ipo_with_lora_saves_a_merged_checkpoint(tiny_model_dir, tmp_path):
    out = tmp_path / "student"
    update = UpdateConfig(learning_rate=1e-3, epochs=1, batch_size=4, lora=LoraConfig(r=4, alpha=8))
    metrics = _dpo(tiny_model_dir, out, DPOOptions(beta=0.1, loss_type="ipo"), update)
    assert metrics["steps"] == 2 and all(loss == loss for loss in metrics["losses"])  # ran, no NaN
    assert _no_temp_left(out)
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and not any("lora" in k for k in keys)  # a plain checkpoint: the adapter was merged
    assert not torch.equal(_param(out), _param(tiny_model_dir))  # and the merge moved the base weights


SEEN: list[tuple[str, str]] = []


def count_a(prompts, completions, answer, **kwargs):
    """Reward: how often the letter 'a' appears; random completions differ, so groups have non-zero spread."""
    for prompt, ans in zip(prompts, answer, strict=True):
        SEEN.append((prompt[-1]["content"], ans))
    return [float(c[0]["content"].count("a")) for c in completions]


def test_grpo_generation_batch_holds_whole_groups():
    assert generation_batch_size(8, 1, 4) == 8
    assert generation_batch_size(3, 1, 4) == 12  # 4 optimiser steps per generation
    assert generation_batch_size(2, 2, 4, world_size=2) == 8


def test_grpo_trains_on_varying_rewards(tiny_model_dir, tmp_path):
    SEEN.clear()
    out = tmp_path / "student"
    words = ["apple", "banana", "cherry", "date"]
    prompts = [[{"role": "user", "content": f"Say {w}."}] for w in words]
    update = UpdateConfig(learning_rate=1e-3, epochs=1, batch_size=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = train_grpo(
            make_job(
                tiny_model_dir,
                out,
                update=update,
                max_length=128,
                seed=0,
                options=GRPOOptions(num_generations=4, max_completion_length=16),
            ),
            prompts,
            count_a,
            extra_columns={"answer": words},
        )
    # TRL's generation reads transformers' deprecated `is_gradient_checkpointing`: silenced in common.train
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
    assert metrics["examples"] == 4 and metrics["skipped"] == 0
    assert metrics["steps"] == 2
    assert len(metrics["rewards"]) == 2 and metrics["reward_mean"] > 0
    assert max(metrics["reward_stds"]) > 0 and metrics["frac_reward_zero_std"] < 1
    # the extra column reached the reward function, row-aligned with its prompt, once per completion
    assert len(SEEN) == 16 and all(f"Say {ans}." == p for p, ans in SEEN)
    assert _no_temp_left(out)
    assert not torch.equal(_param(out), _param(tiny_model_dir))


def even_tokens(prompts, completions, completion_ids, **kwargs):
    """Reward: the share of completion tokens with an even id. Half the vocabulary qualifies, so the near-uniform
    random model's completions score about 0.5 with real spread, and a policy can push it to 1."""
    return [sum(t % 2 == 0 for t in ids) / len(ids) for ids in completion_ids]


def test_grpo_raises_a_learnable_reward(tiny_model_dir, tmp_path):
    # temperature 0.1 sharpens the logits TRL samples and scores with, so a high learning rate moves the policy
    # within 6 steps; an untrained run (learning rate ~0) stays near 0.5 throughout
    prompts = [[{"role": "user", "content": f"Say {w}."}] for w in ["apple", "banana", "cherry", "date"]]
    update = UpdateConfig(learning_rate=5e-2, epochs=3, batch_size=8)
    metrics = train_grpo(
        make_job(
            tiny_model_dir,
            tmp_path / "student",
            update=update,
            max_length=128,
            seed=0,
            options=GRPOOptions(num_generations=4, max_completion_length=16),
        ),
        prompts,
        even_tokens,
        temperature=0.1,
    )
    rewards = metrics["rewards"]
    assert metrics["steps"] == 6 and len(rewards) == 6
    assert 0.2 < rewards[0] < 0.8, rewards  # step 1 scores the untrained model's samples
    assert sum(rewards[-2:]) / 2 > rewards[0] + 0.25, rewards
    # GRPO's loss is no progress measure (group-normalised advantages keep it near 0): the reward is. The
    # student that raised it is saved whole, and loads with from_pretrained.
    assert _no_temp_left(tmp_path / "student")
    assert not torch.equal(_param(tmp_path / "student"), _param(tiny_model_dir))


def test_grpo_with_lora_saves_a_merged_checkpoint(tiny_model_dir, tmp_path):
    out = tmp_path / "student"
    prompts = [[{"role": "user", "content": f"Say {w}."}] for w in ["apple", "banana", "cherry", "date"]]
    update = UpdateConfig(learning_rate=5e-2, epochs=1, batch_size=8, lora=LoraConfig(r=4, alpha=8, dropout=0.0))
    metrics = train_grpo(
        make_job(
            tiny_model_dir,
            out,
            update=update,
            max_length=128,
            seed=0,
            options=GRPOOptions(num_generations=4, max_completion_length=16),
        ),
        prompts,
        even_tokens,
        temperature=0.1,
    )
    assert metrics["steps"] == 2 and max(metrics["reward_stds"]) > 0
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and not any("lora" in k for k in keys)  # the adapter was merged into a plain checkpoint
    assert not torch.equal(_param(out), _param(tiny_model_dir))


def test_grpo_rejects_too_few_prompts_and_bad_columns(tiny_model_dir, tmp_path):
    prompts = [[{"role": "user", "content": "Hi."}]]
    with pytest.raises(ValueError, match="prompts"):
        train_grpo(
            make_job(
                tiny_model_dir,
                tmp_path / "s",
                update=UpdateConfig(batch_size=8),
                max_length=64,
                seed=0,
                options=GRPOOptions(max_completion_length=32),
            ),
            prompts,
            count_a,
        )
    long = [[{"role": "user", "content": "word " * 50}]] * 2
    with pytest.raises(ValueError, match="only 0 of 2 prompts fit in 8 tokens"):  # too long: skipped, none left
        train_grpo(
            make_job(
                tiny_model_dir,
                tmp_path / "s",
                update=UpdateConfig(batch_size=4),
                max_length=40,
                seed=0,
                options=GRPOOptions(max_completion_length=32),
            ),
            long,
            count_a,
        )
    with pytest.raises(ValueError, match="max_completion_length"):
        train_grpo(
            make_job(
                tiny_model_dir,
                tmp_path / "s",
                update=UpdateConfig(),
                max_length=32,
                seed=0,
                options=GRPOOptions(max_completion_length=32),
            ),
            prompts,
            count_a,
        )
    with pytest.raises(ValueError, match="extra column"):
        train_grpo(
            make_job(
                tiny_model_dir,
                tmp_path / "s",
                update=UpdateConfig(),
                max_length=64,
                seed=0,
                options=GRPOOptions(max_completion_length=32),
            ),
            prompts,
            count_a,
            extra_columns={"answer": []},
        )
