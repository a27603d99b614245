"""The verifier registry: the built-ins and a plugin's verifier register through the same hook; a recipe names
one in feedback.verifier (or feedback.unreferenced), and the feedback stage asks it."""

import pytest

from kdagent.errors import UserError
from kdagent.feedback.verifiers import Verifier
from kdagent.hookspecs import hookimpl
from kdagent.jsonl import read_jsonl
from kdagent.loop.runner import run_recipe
from kdagent.plugins import _collect, build_plugins
from kdagent.recipe import Recipe
from kdagent.recipe_io import check_names
from kdagent.records import Feedback


class Short(Verifier):
    """Passes replies of at most `words` words."""

    def __init__(self, words: int = 3):
        self.words, self.jobs = words, []

    def verify(self, job, generations):
        self.jobs.append(job)
        return [
            Feedback(
                generation_id=g.id,
                task_id=g.task_id,
                verifier="short",
                passed=len(g.text.split()) <= self.words,
                score=float(len(g.text.split()) <= self.words),
            )
            for g in generations
        ]


class ShortPlugin:
    def __init__(self):
        self.short = Short()

    @hookimpl
    def kdagent_register_verifiers(self, register):
        register("short", self.short)


def plugins_with_short():
    plugins = build_plugins(load_entry_points=False)
    plugin = ShortPlugin()
    plugins.pm.register(plugin, name="short-plugin")
    plugins.verifiers.clear()
    _collect(plugins, "verifiers")
    return plugins, plugin.short


def recipe(model_dir="smollm2-135m-instruct", **feedback) -> Recipe:
    return Recipe.model_validate(
        {
            "name": "tiny",
            "seed": 2,
            "student": {"model": str(model_dir), "max_length": 256},
            "teacher": {"kind": "self", "samples": 1, "temperature": 1.0, "max_new_tokens": 4, "batch_size": 4},
            "domain": {"name": "arithmetic", "seed_tasks": 2, "eval_tasks": 2, "options": {"corpus_examples": 4}},
            "retrieval": {"enabled": False},
            "feedback": feedback,
            "update": {"method": "none"},
            "evaluation": {"max_new_tokens": 4, "bootstrap": 0},
        }
    )


def test_the_built_in_verifiers_register_through_the_hook():
    plugins = build_plugins(load_entry_points=False)
    assert set(plugins.verifiers) == {"reference", "judge", "self_consistency"}
    assert {e.plugin for e in plugins.verifiers.values()} == {"kdagent.feedback.verifiers"}
    assert plugins.verifiers["reference"].obj.needs_reference and not plugins.verifiers["judge"].obj.needs_reference


def test_a_recipe_names_registered_verifiers():
    plugins, _ = plugins_with_short()
    check_names(recipe(verifier="short"), plugins)
    check_names(recipe(verifier="reference", unreferenced="short"), plugins)
    check_names(recipe(verifier="reference", unreferenced="drop"), plugins)
    with pytest.raises(UserError, match=r"feedback.verifier: unknown verifier 'shrt' .*did you mean 'short'\?"):
        check_names(recipe(verifier="shrt"), plugins)
    with pytest.raises(UserError, match="feedback.unreferenced: 'reference' needs a reference answer"):
        check_names(recipe(unreferenced="reference"), plugins)


def test_a_plugin_verifier_checks_the_samples_inside_the_loop(tmp_path, tiny_model_dir):
    plugins, short = plugins_with_short()
    run_recipe(recipe(tiny_model_dir, verifier="short"), tmp_path / "run", plugins)
    feedback = read_jsonl(tmp_path / "run" / "round-01" / "feedback.jsonl", Feedback)
    assert len(feedback) == 2 and {f.verifier for f in feedback} == {"short"}
    (job,) = short.jobs
    assert (
        job.skill.name == "cot"
        and job.round == 1
        and set(job.tasks) == {f.task_id for f in feedback}
        and callable(job.judge)
    )
