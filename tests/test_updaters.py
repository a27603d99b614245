"""The updater registry: built-ins and a plugin's updater register through the same hook; a recipe names
one and gives it options that its own model validates; the memory plan and the loop ask the registry."""

import shutil

import pytest
from pydantic import BaseModel, ConfigDict, Field

from kdagent.errors import UserError
from kdagent.hookspecs import hookimpl
from kdagent.loop.runner import run_recipe
from kdagent.memory import memory_plan
from kdagent.plugins import build_plugins
from kdagent.recipe import Recipe, recipe_json_schema
from kdagent.recipe_io import check_names
from kdagent.update.updater import Updater, options_for, training_mb


class CopyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    note: str = Field("unchanged", description="Written into the report.")
    extra_mb: int = Field(0, ge=0, description="Added to the memory estimate.")


class Copy(Updater):
    options_model = CopyOptions
    skipped = "no tasks"

    def __init__(self):
        self.jobs = []

    def check(self, recipe, options):
        if options.note == "refuse":
            raise UserError("update.options.copy.note: refused")

    def memory_mb(self, recipe, options, student, teacher, act_bytes):
        return training_mb(recipe, student, act_bytes) + options.extra_mb

    def train(self, job):
        self.jobs.append(job)
        if not job.tasks:
            return None
        shutil.copytree(job.student, job.out)
        return {"steps": 0, "note": job.options.note, "tasks": len(job.tasks)}


class CopyPlugin:
    def __init__(self):
        self.copy = Copy()

    @hookimpl
    def kdagent_register_updaters(self, register):
        register("copy", self.copy)


def plugins_with_copy():
    plugins = build_plugins(load_entry_points=False)
    plugin = CopyPlugin()
    plugins.pm.register(plugin, name="copy-plugin")
    plugins.updaters.clear()
    from kdagent.plugins import _collect

    _collect(plugins, "updaters")
    return plugins, plugin.copy


def recipe(model_dir="smollm2-135m-instruct", **update) -> Recipe:
    return Recipe.model_validate(
        {
            "name": "tiny",
            "seed": 2,
            "student": {"model": str(model_dir), "max_length": 256},
            "teacher": {"kind": "self", "samples": 1, "temperature": 1.0, "max_new_tokens": 4, "batch_size": 4},
            "domain": {"name": "arithmetic", "seed_tasks": 2, "eval_tasks": 2, "options": {"corpus_examples": 4}},
            "retrieval": {"enabled": False},
            "update": {"epochs": 1, "batch_size": 2, **update},
            "evaluation": {"max_new_tokens": 4, "bootstrap": 0},
        }
    )


def test_the_built_in_updaters_register_through_the_hook():
    plugins = build_plugins(load_entry_points=False)
    assert {"sft", "dpo", "distill", "grpo"} <= set(plugins.updaters)
    for name in ("sft", "dpo", "distill", "grpo"):
        entry = plugins.updaters[name]
        assert (
            isinstance(entry.obj, Updater)
            and entry.plugin == f"kdagent.update.{name}"
            and entry.distribution == "kdagent"
        )
    rows = {(r["kind"], r["name"]) for r in plugins.as_rows()}
    assert ("updater", "dpo") in rows


def test_the_built_ins_options_keep_their_recipe_blocks():
    r = recipe(method=["sft", "dpo"], dpo={"beta": 0.3})
    plugins = build_plugins(load_entry_points=False)
    assert options_for(r.update, "dpo", plugins.updaters["dpo"].obj).beta == 0.3
    assert options_for(r.update, "sft", plugins.updaters["sft"].obj).model_dump() == {}
    with pytest.raises(UserError, match=r"update.options.dpo: the options of 'dpo' go under update.dpo"):
        options_for(recipe(method="dpo", options={"dpo": {"beta": 0.2}}).update, "dpo", plugins.updaters["dpo"].obj)
    # the checks the built-ins make of the recipe
    with pytest.raises(UserError, match="set feedback.preferences: true"):
        check_names(recipe(method="dpo"), plugins)
    with pytest.raises(
        UserError, match=r"update.grpo.max_completion_length: 300 must be below student.max_length \(256\)"
    ):
        check_names(recipe(method="grpo", grpo={"max_completion_length": 300}), plugins)
    black_box = {"teacher": {"kind": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"}}
    with pytest.raises(UserError, match="'distill' is white-box and needs a local teacher.*'openai' teacher is not"):
        check_names(Recipe.model_validate({**recipe(method="distill").model_dump(), **black_box}), plugins)


def test_a_plugin_updater_is_named_and_checked_by_the_recipe():
    plugins, _ = plugins_with_copy()
    check_names(recipe(method="copy", options={"copy": {"note": "baseline"}}), plugins)
    with pytest.raises(UserError, match=r"unknown key 'update.options.copy.colour' \(valid keys: note, extra_mb\)$"):
        check_names(recipe(method="copy", options={"copy": {"colour": "red"}}), plugins)
    with pytest.raises(
        UserError, match=r"unknown key 'update.options.copy.nte' \(did you mean 'update.options.copy.note'\?\)"
    ):
        check_names(recipe(method="copy", options={"copy": {"nte": "x"}}), plugins)
    with pytest.raises(UserError, match=r"update.options.copy.extra_mb: Input should be greater than or equal to 0"):
        check_names(recipe(method="copy", options={"copy": {"extra_mb": -1}}), plugins)
    with pytest.raises(UserError, match="update.options.copy.note: refused"):
        check_names(recipe(method="copy", options={"copy": {"note": "refuse"}}), plugins)
    with pytest.raises(
        UserError, match=r"update.method: unknown updater 'cpy' \(registered: copy, .*dpo, grpo.*did you mean 'copy'\?"
    ):
        check_names(recipe(method=["sft", "cpy"]), plugins)
    with pytest.raises(UserError, match=r"update.options.kopy: unknown updater 'kopy'"):
        check_names(recipe(method="sft", options={"kopy": {}}), plugins)


def test_the_memory_plan_asks_each_updater(tiny_model_dir):
    plugins, copy = plugins_with_copy()
    updaters = {"copy": copy}
    small = memory_plan(recipe(tiny_model_dir, method="copy"), tiny_model_dir, None, "cpu", updaters)["stages_mb"]
    big_plan = memory_plan(
        recipe(tiny_model_dir, method="copy", options={"copy": {"extra_mb": 5000}}),
        tiny_model_dir,
        None,
        "cpu",
        updaters,
    )
    big = big_plan["stages_mb"]
    assert big["update"] == small["update"] + 5000 and big["update"] == big_plan["update_methods_mb"]["copy"]


def test_the_schema_takes_any_updater_name():
    update = recipe_json_schema()["$defs"]["UpdateConfig"]["properties"]
    assert "enum" not in str(update["method"]) and "registered updater" in update["method"]["description"]
    assert update["options"]["type"] == "object"


def test_a_plugin_updater_trains_inside_the_loop(tmp_path, tiny_model_dir):
    plugins, copy = plugins_with_copy()
    r = recipe(tiny_model_dir, method="copy", options={"copy": {"note": "baseline"}})
    (entry,) = run_recipe(r, tmp_path / "run", plugins)["rounds"]
    assert entry["update"] == {"steps": 0, "note": "baseline", "tasks": 2}
    (job,) = copy.jobs
    assert job.options == CopyOptions(note="baseline") and job.round == 1 and job.seed == 3
    assert job.skill.name == "cot" and job.domain is not None and job.plugins is plugins
    assert (tmp_path / "run" / "round-01" / "student" / "config.json").exists()


def test_white_box_updaters_ask_the_teachers_kind_not_its_name(tmp_path, tiny_model_dir):
    """`distill` and `distill_cached` take any kind that declares a local model with token log-probs (here a
    plugin's kind), and refuse, before any model loads, a teacher that runs the student itself."""
    from kdagent.teachers import LOCAL_PATH, TOKEN_LOGPROBS
    from kdagent.teachers.kinds import declare

    other = tmp_path / "other-teacher"
    shutil.copytree(tiny_model_dir, other)

    class LocalKind:
        @staticmethod
        @hookimpl
        def kdagent_register_teachers(register):
            @declare(local_path=lambda config, student: other, capabilities=(LOCAL_PATH, TOKEN_LOGPROBS))
            def local(config, student_path):
                raise AssertionError("not built by a check")

            register("local-copy", local)

    plugins = build_plugins(load_entry_points=False)
    plugins.pm.register(LocalKind(), name="local-kind")
    plugins.teachers.clear()
    from kdagent.plugins import _collect

    _collect(plugins, "teachers")
    for method in ("distill", "distill_cached"):
        r = recipe(tiny_model_dir, method=method)
        ours = Recipe.model_validate({**r.model_dump(), "teacher": {"kind": "local-copy"}})
        check_names(ours, plugins)  # the plugin's kind is white-box and local
        updater = plugins.updaters[method].obj
        updater.check_models(ours, options_for(ours.update, method, updater), tiny_model_dir, plugins)
        check_names(r, plugins)  # 'self' is white-box and local too, but it is the student:
        with pytest.raises(UserError, match=rf"update.method {method!r} needs a teacher other than the student"):
            run_recipe(r, tmp_path / f"run-{method}", plugins)
        assert not (tmp_path / f"run-{method}" / "round-01").exists()
