"""The sft updater on a config-built tiny model: the loss decreases, the checkpoint loads, LoRA merges."""

import contextlib

from transformers import AutoModelForCausalLM

from kdagent.recipe import LoraConfig, UpdateConfig
from kdagent.records import Provenance, SFTExample
from kdagent.testing import make_job
from kdagent.update.sft import train_sft


def examples(n=8):
    prov = Provenance(round=1, teacher="t", skill="cot", domain="d", task_id="t")
    return [
        SFTExample(
            id=str(i),
            prompt=[{"role": "user", "content": f"What is {i} + 1?"}],
            completion=[{"role": "assistant", "content": f"{i} + 1 = {i + 1}. The answer is {i + 1}."}],
            provenance=prov,
        )
        for i in range(n)
    ]


def test_sft_loss_decreases_and_checkpoint_loads(tmp_path, tiny_model_dir):
    out = tmp_path / "student"
    report = train_sft(
        make_job(
            tiny_model_dir,
            out,
            update=UpdateConfig(learning_rate=3e-3, epochs=4, batch_size=4),
            max_length=128,
            seed=0,
            examples=examples(),
        )
    )
    assert report["steps"] == 8 and report["examples"] == 8
    assert report["losses"][0] > report["losses"][-1]
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 2
    assert not list(tmp_path.glob(".student.*"))  # no work folder left behind


def test_sft_with_lora_saves_a_merged_checkpoint(tmp_path, tiny_model_dir):
    out = tmp_path / "student"
    report = train_sft(
        make_job(
            tiny_model_dir,
            out,
            update=UpdateConfig(learning_rate=1e-2, epochs=1, batch_size=2, lora=LoraConfig(r=4, alpha=8)),
            max_length=128,
            seed=0,
            examples=examples(4),
        )
    )
    assert report["steps"] == 2
    model = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in name for name, _ in model.named_parameters())


def test_compact_head_scores_only_labelled_positions_with_the_same_loss_and_gradients(tiny_model_dir):
    """TRL's fused LM head projects every position on the CPU; inside compact_head_on_cpu (which every
    updater trains under) it projects only the labelled ones, with the same loss and gradients."""
    import torch
    import trl.trainer.utils as trl_utils
    from trl.trainer.utils import add_fused_lm_head

    from kdagent.update.common import compact_head_on_cpu

    cpu = torch.device("cpu")
    assert not trl_utils._use_triton(cpu)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    add_fused_lm_head(model)
    torch.manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (3, 40))
    labels = ids.clone()
    labels[:, :30] = -100  # a prompt of 30 tokens: no loss there
    labels[1, 38:] = -100
    rows, apply = [], trl_utils._ChunkedLogProbFunction.apply

    def counted(hidden, *args):
        rows.append(hidden.shape[0])
        return apply(hidden, *args)

    results = []
    for compact in (False, True):
        model.zero_grad()
        trl_utils._ChunkedLogProbFunction.apply = counted
        try:
            with compact_head_on_cpu() if compact else contextlib.nullcontext():
                assert trl_utils._use_triton(cpu) is compact
                loss = model(input_ids=ids, labels=labels, fused_lm_head=True).loss
        finally:
            trl_utils._ChunkedLogProbFunction.apply = apply
        loss.backward()
        results.append((loss.item(), model.model.layers[0].mlp.down_proj.weight.grad.clone()))
    assert rows == [3 * 39, int((labels[:, 1:] != -100).sum())]  # every shifted position, then the labelled ones
    assert not trl_utils._use_triton(cpu)  # TRL's choice is restored
    assert abs(results[0][0] - results[1][0]) < 1e-5
    assert torch.allclose(results[0][1], results[1][1], atol=1e-6)


def test_checkpoints_are_written_aside_and_renamed_into_place(tmp_path, tiny_model_dir, monkeypatch):
    """Every Trainer checkpoint is written under `trainer/.staging/` and renamed to `checkpoint-N` once whole:
    while one is being written (here: as its RNG state, among the last files, is saved) no `checkpoint-N` of
    that step exists yet, and each one that does is complete; old ones are rotated as the Trainer would."""
    from transformers import Trainer

    from kdagent.update.common import checkpoint_problem

    trainer_dir = tmp_path / ".student.partial" / "trainer"
    seen = []
    save_rng = Trainer._save_rng_state

    def watched(self, output_dir):
        step = self.state.global_step
        visible = sorted(p.name for p in trainer_dir.iterdir() if p.name.startswith("checkpoint-"))
        seen.append((step, output_dir, visible, [checkpoint_problem(trainer_dir / v) for v in visible]))
        return save_rng(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_rng_state", watched)
    report = train_sft(
        make_job(
            tiny_model_dir,
            tmp_path / "student",
            update=UpdateConfig(learning_rate=1e-3, epochs=2, batch_size=4, checkpoint_steps=1),
            max_length=128,
            seed=0,
            examples=examples(),
        )
    )
    assert report["steps"] == 4 and [s[0] for s in seen] == [1, 2, 3, 4]
    for step, output_dir, visible, problems in seen:
        assert output_dir == str(trainer_dir / ".staging" / f"checkpoint-{step}")
        assert f"checkpoint-{step}" not in visible and all(p is None for p in problems)
        assert visible == [f"checkpoint-{s}" for s in range(max(1, step - 2), step)]  # save_total_limit 2


def test_every_private_attribute_kdagent_patches_is_in_the_installed_libraries():
    """An upgrade of transformers or TRL that removes or changes one of them fails here, not in a user's run."""
    from kdagent.update.common import PRIVATE_HOOKS, private_hook_problem, require_private_hooks

    assert [private_hook_problem(*hook) for hook in PRIVATE_HOOKS] == [None] * len(PRIVATE_HOOKS)
    require_private_hooks()


def test_the_supported_versions_are_pyproject_bounds_and_the_installed_ones_are_within_them():
    import tomllib
    from importlib.metadata import version
    from pathlib import Path

    from packaging.requirements import Requirement

    from kdagent.update.common import SUPPORTED

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    bounds = {r.name: r.specifier for r in map(Requirement, pyproject["project"]["dependencies"])}
    for name, spec in SUPPORTED.items():
        assert bounds[name] == Requirement(name + spec).specifier, name
        assert any(s.operator == "<" for s in bounds[name]), f"{name} has no upper bound"
        assert version(name) in bounds[name], f"installed {name} {version(name)} is outside {spec}"


def test_a_library_without_a_patched_attribute_is_one_line_naming_the_supported_versions(monkeypatch):
    """As after an upgrade that dropped TRL's `_use_triton`: training refuses before it patches anything."""
    import pytest
    import trl.trainer.utils as trl_utils

    from kdagent.errors import UserError
    from kdagent.update.common import compact_head_on_cpu, require_private_hooks

    require_private_hooks("trl.trainer.utils")
    monkeypatch.delattr(trl_utils, "_use_triton")
    with pytest.raises(UserError, match=r"^trl [\d.]+: trl.trainer.utils._use_triton is not there; .*trl>=1.16,<1.17$"):
        with compact_head_on_cpu():
            pass
    monkeypatch.undo()
    monkeypatch.setattr(trl_utils, "_use_triton", lambda device, other: False)
    with pytest.raises(UserError, match=r"takes \(device, other\), not \(device\)"):
        require_private_hooks()
