"""The `rloo` updater, added in one file (kdagent/update/rloo.py) through the registry: TRL's RLOOTrainer on
the tiny config-built llama for a couple of steps, rewarded by the skill's verifier; the checkpoint loads."""

from transformers import AutoModelForCausalLM

from kdagent.domains.arithmetic import Arithmetic
from kdagent.plugins import build_plugins
from kdagent.recipe import Recipe
from kdagent.recipe_io import check_names
from kdagent.skills.cot import ChainOfThought
from kdagent.update.updater import UpdateJob, options_for


def test_rloo_trains_a_tiny_model_and_saves_a_checkpoint_that_loads(tiny_model_dir, tmp_path):
    recipe = Recipe.model_validate(
        {
            "name": "rloo",
            "student": {"model": str(tiny_model_dir), "max_length": 128},
            "update": {
                "method": "rloo",
                "epochs": 1,
                "batch_size": 4,
                "learning_rate": 1e-3,
                "options": {"rloo": {"num_generations": 2, "max_completion_length": 8, "beta": 0.0}},
            },
        }
    )
    plugins = build_plugins(load_entry_points=False)
    check_names(recipe, plugins)
    rloo = plugins.updaters["rloo"].obj
    options = options_for(recipe.update, "rloo", rloo)
    assert options.num_generations == 2 and plugins.updaters["rloo"].plugin == "kdagent.update.rloo"
    tasks = Arithmetic().seed_tasks(4, 0)
    out = tmp_path / "student"
    job = UpdateJob(recipe, options, tiny_model_dir, out, seed=0, tasks=tasks, skill=ChainOfThought(), plugins=plugins)
    report = rloo.train(job)
    assert (
        report["steps"] == 2 and report["examples"] == 4 and report["skipped"] == 0
    )  # 4 prompts x 2 completions, batches of 4
    assert 0.0 <= report["reward_mean"] <= 1.0
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 2
    assert not list(tmp_path.glob(".student.*"))
    assert (
        rloo.train(UpdateJob(recipe, options, tiny_model_dir, tmp_path / "none", seed=0, skill=ChainOfThought()))
        is None
    )
