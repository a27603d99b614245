"""The `distill_cached` updater (kdagent/update/distill_cached.py), registered through the hook: a tiny config-built
student learns from the cached top-k of a tiny teacher for a few steps, its checkpoint loads, and a second student
reuses the cache."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import label_examples
from kdagent.errors import UserError
from kdagent.plugins import build_plugins
from kdagent.recipe import LoraConfig, Recipe
from kdagent.recipe_io import check_names
from kdagent.update.updater import UpdateJob, options_for


def _recipe(student, teacher, cache_dir, **options):
    return Recipe.model_validate(
        {
            "name": "distill_cached",
            "student": {"model": str(student), "max_length": 64},
            "teacher": {"kind": "hf", "model": str(teacher)},
            "update": {
                "method": "distill_cached",
                "epochs": 4,
                "batch_size": 4,
                "learning_rate": 3e-3,
                "warmup_ratio": 0.0,
                "options": {"distill_cached": {"top_k": 16, "cache_dir": str(cache_dir), "chunk_size": 4, **options}},
            },
        }
    )


def test_distill_cached_trains_from_the_cache_and_a_second_student_reuses_it(
    tiny_model_dir, peaked_teacher_dir, tmp_path
):
    recipe = _recipe(tiny_model_dir, peaked_teacher_dir, tmp_path / "cache", loss="skew_kl", skew=0.1, ce_weight=0.2)
    plugins = build_plugins(load_entry_points=False)
    check_names(recipe, plugins)
    updater = plugins.updaters["distill_cached"].obj
    assert plugins.updaters["distill_cached"].plugin == "kdagent.update.distill_cached"
    options = options_for(recipe.update, "distill_cached", updater)
    assert (options.loss, options.top_k, options.ce_weight) == ("skew_kl", 16, 0.2)
    out = tmp_path / "student"
    report = updater.train(UpdateJob(recipe, options, tiny_model_dir, out, seed=0, examples=label_examples()))
    assert report["steps"] == 8 and report["examples"] == 8
    assert report["cache"]["hit"] is False and report["cache"]["chunks_built"] == 2
    assert all(loss == loss and loss < 1e4 for loss in report["losses"])  # finite
    assert report["losses"][-1] < report["losses"][0]
    model = AutoModelForCausalLM.from_pretrained(out)
    before = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(dict(model.named_parameters())[name].float(), dict(before.named_parameters())[name].float())
    assert not list(tmp_path.glob(".student.*"))

    # another student (here: the same start, another loss, LoRA) of the same teacher on the same data: a cache hit
    other = _recipe(tiny_model_dir, peaked_teacher_dir, tmp_path / "cache", loss="tvd", ce_weight=0.0)
    other = other.model_copy(
        update={"update": other.update.model_copy(update={"lora": LoraConfig(r=4, alpha=8), "epochs": 1})}
    )
    again = updater.train(
        UpdateJob(
            other,
            options_for(other.update, "distill_cached", updater),
            tiny_model_dir,
            tmp_path / "s2",
            seed=0,
            examples=label_examples(),
        )
    )
    assert again["cache"]["hit"] is True and again["cache"]["path"] == report["cache"]["path"]
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "s2")
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert (
        updater.train(UpdateJob(recipe, options, tiny_model_dir, tmp_path / "none", seed=0)) is None
    )  # nothing to train on


def test_distill_cached_checks_the_recipe(tiny_model_dir, tmp_path):
    plugins = build_plugins(load_entry_points=False)
    base = {"name": "d", "student": {"model": str(tiny_model_dir)}, "update": {"method": "distill_cached"}}
    own = Recipe.model_validate(base)  # the 'self' teacher: white-box and local, but the student itself
    updater = plugins.updaters["distill_cached"].obj
    with pytest.raises(UserError, match="'distill_cached' needs a teacher other than the student"):
        updater.check_models(own, options_for(own.update, "distill_cached", updater), tiny_model_dir, plugins)
    with pytest.raises(UserError, match="update.options.distill_cached.loss"):
        check_names(
            Recipe.model_validate(
                {
                    **base,
                    "teacher": {"kind": "hf", "model": str(tiny_model_dir)},
                    "update": {"method": "distill_cached", "options": {"distill_cached": {"loss": "kl"}}},
                }
            ),
            plugins,
        )
