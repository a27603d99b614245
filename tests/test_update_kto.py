"""The `kto` updater, added in one file (kdagent/update/kto.py) through the registry: TRL's KTOTrainer on
the tiny config-built llama for a couple of steps; the checkpoint it saves loads."""

import torch
from transformers import AutoModelForCausalLM

from kdagent.plugins import build_plugins
from kdagent.recipe import Recipe
from kdagent.recipe_io import check_names
from kdagent.records import PreferencePair, Provenance
from kdagent.update.updater import UpdateJob, options_for


def pairs(n: int = 4) -> list[PreferencePair]:
    prov = Provenance(round=1, teacher="test", skill="cot", domain="arithmetic", task_id="t")
    return [
        PreferencePair(
            id=f"p{i}",
            prompt=[{"role": "user", "content": f"What is {i} plus {i}?"}],
            chosen=[{"role": "assistant", "content": f"The answer is {2 * i}."}],
            rejected=[{"role": "assistant", "content": "Banana kettle moon."}],
            margin=1.0,
            provenance=prov,
        )
        for i in range(n)
    ]


def test_kto_trains_a_tiny_model_and_saves_a_checkpoint_that_loads(tiny_model_dir, tmp_path):
    recipe = Recipe.model_validate(
        {
            "name": "kto",
            "student": {"model": str(tiny_model_dir), "max_length": 64},
            "feedback": {"preferences": True},
            "update": {
                "method": "kto",
                "epochs": 1,
                "batch_size": 4,
                "learning_rate": 1e-3,
                "options": {"kto": {"beta": 0.2}},
            },
        }
    )
    plugins = build_plugins(load_entry_points=False)
    check_names(recipe, plugins)
    kto = plugins.updaters["kto"].obj
    options = options_for(recipe.update, "kto", kto)
    assert options.beta == 0.2 and plugins.updaters["kto"].plugin == "kdagent.update.kto"
    out = tmp_path / "student"
    job = UpdateJob(recipe, options, tiny_model_dir, out, seed=0, pairs=pairs())
    report = kto.train(job)
    assert report["steps"] == 2 and report["examples"] == 8 and report["pairs"] == 4  # 8 unpaired replies, batches of 4
    assert all(loss == loss for loss in report["losses"])  # no NaN
    model = AutoModelForCausalLM.from_pretrained(out)
    before = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(dict(model.named_parameters())[name].float(), dict(before.named_parameters())[name].float())
    assert not list(tmp_path.glob(".student.*"))  # no work folder left behind
    assert kto.train(UpdateJob(recipe, options, tiny_model_dir, tmp_path / "none", seed=0)) is None  # no pairs: skipped


def test_kto_checks_the_recipe(tiny_model_dir):
    import pytest

    from kdagent.errors import UserError

    plugins = build_plugins(load_entry_points=False)
    base = {"name": "kto", "student": {"model": str(tiny_model_dir)}, "update": {"method": "kto"}}
    with pytest.raises(UserError, match="'kto' trains on preference pairs"):
        check_names(Recipe.model_validate(base), plugins)
    with pytest.raises(UserError, match="update.options.kto.loss_type"):
        check_names(
            Recipe.model_validate(
                {
                    **base,
                    "feedback": {"preferences": True},
                    "update": {"method": "kto", "options": {"kto": {"loss_type": "sigmoid"}}},
                }
            ),
            plugins,
        )
