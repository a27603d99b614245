"""Teacher kinds with options of their own and declared capabilities: a plugin's kind, registered through a real
pluggy plugin object, takes `teacher.options` validated by its own model and runs through a real `run_recipe`; a
wrong option is one line naming `teacher.options.<field>`; the judge picks its path from what a teacher declares."""

import json

import pytest
from pydantic import BaseModel, ConfigDict, Field

from kdagent.errors import UserError
from kdagent.feedback.judge import judge_with_stats
from kdagent.hookspecs import hookimpl
from kdagent.loop.runner import run_recipe
from kdagent.plugins import _collect, build_plugins
from kdagent.recipe import Recipe, TeacherConfig
from kdagent.recipe_io import check_names, masked_dump
from kdagent.records import Generation, Task
from kdagent.teachers import BRANCH_LOGPROBS, CHOICE_LOGPROBS, PREFILL, can
from kdagent.teachers.kinds import kind_capabilities, local_teacher_path


class PrefixOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: str = Field(description="Put before every reply.")
    repeat: int = Field(1, ge=1, le=3, description="How many times the prefix is put there.")
    api_token: str = Field("", description="A secret, masked when the recipe is written back.")


class PrefixedTeacher:
    """The current student (the built-in `self` kind, built through the registry), each reply opened by a prefix."""

    options_model = PrefixOptions
    capabilities = frozenset()  # its replies are not the model's own text, so it declares no token probabilities

    def __init__(self, config, student_path, options, plugins):
        inner = config.model_copy(update={"kind": "self", "options": {}})
        self.inner = plugins.create_teacher(inner, student_path)
        self.head = " ".join([options.prefix] * options.repeat)
        self.label = f"prefixed:{options.prefix}x{options.repeat}"

    @staticmethod
    def check(config, options):
        if config.samples < options.repeat:
            raise UserError(f"teacher.options.repeat: at most teacher.samples ({config.samples})")

    def generate(self, prompts, seed, desc="teacher", n=None, temperature=None, stop=None):
        rows = self.inner.generate(prompts, seed, desc=desc, n=n, temperature=temperature, stop=stop)
        return [[f"{self.head} {reply}" for reply in row] for row in rows]

    def close(self):
        self.inner.close()


class PrefixPlugin:
    @hookimpl
    def kdagent_register_teachers(self, register):
        register("prefixed", PrefixedTeacher)


def plugins_with_prefixed():
    plugins = build_plugins(load_entry_points=False)
    plugins.pm.register(PrefixPlugin(), name="prefix_plugin")
    plugins.teachers.clear()
    _collect(plugins, "teachers")
    assert plugins.failures == [] and plugins.teachers["prefixed"].plugin == "prefix_plugin"
    return plugins


def tiny_recipe(model_dir, **teacher) -> Recipe:
    return Recipe.model_validate(
        {
            "name": "prefixed",
            "seed": 3,
            "student": {"model": str(model_dir), "max_length": 256},
            "teacher": {"samples": 2, "temperature": 1.0, "max_new_tokens": 6, "batch_size": 2, **teacher},
            "domain": {"name": "arithmetic", "seed_tasks": 2, "eval_tasks": 2},
            "skills": ["cot"],
            "retrieval": {"enabled": False},
            "feedback": {"fallback_to_reference": True},
            "update": {"epochs": 1, "batch_size": 2, "learning_rate": 1e-3},
            "evaluation": {"max_new_tokens": 4},
        }
    )


def test_a_plugin_teacher_takes_its_own_options_through_run_recipe(tmp_path, tiny_model_dir):
    plugins = plugins_with_prefixed()
    options = {"prefix": "Teacher-says:", "repeat": 2, "api_token": "s3cret"}
    recipe = tiny_recipe(tiny_model_dir, kind="prefixed", options=options)
    run_recipe(recipe, tmp_path / "run", plugins)

    gens = [Generation.model_validate_json(line) for line in (tmp_path / "run/round-01/generations.jsonl").open()]
    assert len(gens) == 4  # 2 tasks x 2 samples
    assert {g.teacher for g in gens} == {"prefixed:Teacher-says:x2"}
    assert all(g.text.startswith("Teacher-says: Teacher-says: ") for g in gens)
    written = (tmp_path / "run/recipe.yaml").read_text()
    assert "prefix: 'Teacher-says:'" in written and "s3cret" not in written  # the kind's options, secrets masked
    assert masked_dump(recipe)["teacher"]["options"] == {"prefix": "Teacher-says:", "repeat": 2, "api_token": "***"}


@pytest.mark.parametrize(
    "options, message",
    [
        ({"prefix": ["a"]}, r"^teacher\.options\.prefix: Input should be a valid string$"),
        ({"prefix": "p", "repeat": 0}, r"^teacher\.options\.repeat: Input should be greater than or equal to 1$"),
        ({"prefix": "p", "colour": "red"}, r"^unknown key 'teacher\.options\.colour' \(valid keys: prefix, repeat, "),
        (
            {"prefix": "p", "repet": 2},
            r"^unknown key 'teacher\.options\.repet' \(did you mean 'teacher\.options\.repeat'\?\)$",
        ),
        ({}, r"^teacher\.options\.prefix: Field required$"),
        (
            {"prefix": "p", "repeat": 3},
            r"^teacher\.options\.repeat: at most teacher\.samples \(2\)$",
        ),  # the kind's check
    ],
)
def test_a_wrong_option_is_one_line_naming_the_field_before_anything_loads(tmp_path, tiny_model_dir, options, message):
    plugins = plugins_with_prefixed()
    with pytest.raises(UserError, match=message) as info:
        run_recipe(tiny_recipe(tiny_model_dir, kind="prefixed", options=options), tmp_path / "run", plugins)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run" / "round-01").exists()


def test_a_kind_without_an_options_model_takes_no_options_and_the_built_in_checks_live_in_their_kinds(tiny_model_dir):
    plugins = build_plugins(load_entry_points=False)
    with pytest.raises(UserError, match=r"^teacher\.options: the 'self' teacher takes no options \(got 'prefix'\)$"):
        check_names(tiny_recipe(tiny_model_dir, options={"prefix": "x"}), plugins)
    with pytest.raises(UserError, match=r"^teacher\.base_url: the 'openai' teacher needs an endpoint"):
        check_names(tiny_recipe(tiny_model_dir, kind="openai", model="served"), plugins)
    with pytest.raises(UserError, match=r"^teacher\.model: unknown chat model 'nope' for the 'langchain' teacher"):
        check_names(tiny_recipe(tiny_model_dir, kind="langchain", model="nope"), plugins)
    check_names(tiny_recipe(tiny_model_dir), plugins)

    # what a kind declares is known before a teacher is built
    self_config = TeacherConfig()
    assert local_teacher_path(self_config, plugins, tiny_model_dir) == tiny_model_dir
    assert local_teacher_path(TeacherConfig(kind="hf", model=str(tiny_model_dir)), plugins, None) == tiny_model_dir
    assert local_teacher_path(TeacherConfig(kind="openai", model="m", base_url="http://x/v1"), plugins, None) is None
    assert {PREFILL, CHOICE_LOGPROBS} <= kind_capabilities(self_config, plugins)
    assert kind_capabilities(TeacherConfig(kind="openai"), plugins) == frozenset()


class Declaring:
    """A real local teacher that declares only `capabilities`; what it does not declare fails when called."""

    def __init__(self, real, capabilities, sent):
        self.real, self.capabilities, self.sent, self.label = real, frozenset(capabilities), sent, real.label

    def generate(self, prompts, *args, **kw):
        self.sent.extend(prompts)
        return self.real.generate(prompts, *args, **kw)

    def choice_logprobs(self, *args, **kw):
        assert CHOICE_LOGPROBS in self.capabilities, "choice_logprobs called, not declared"
        return self.real.choice_logprobs(*args, **kw)

    def branch_logprobs(self, *args, **kw):
        assert BRANCH_LOGPROBS in self.capabilities, "branch_logprobs called, not declared"
        return self.real.branch_logprobs(*args, **kw)


def test_the_judge_picks_its_path_from_the_declared_capabilities(tiny_model_dir):
    from kdagent.teachers.hf import HFTeacher

    real = HFTeacher(tiny_model_dir, TeacherConfig(max_new_tokens=6, batch_size=2), "self:tiny")
    assert can(real, PREFILL, CHOICE_LOGPROBS, BRANCH_LOGPROBS) and real.path == tiny_model_dir
    tasks = [Task(id=f"t{i}", prompt=f"item-{i}: what is 2 + 3?", answer="5") for i in range(2)]
    items = [
        (t, Generation(id=f"g{i}", task_id=t.id, round=1, sample=0, teacher="x", skill="cot", messages=[], text="5"))
        for i, t in enumerate(tasks)
    ]

    def judge(capabilities):
        sent = []
        feedback, stats = judge_with_stats(Declaring(real, capabilities, sent), items, seed=1, max_attempts=1)
        return feedback, stats, sent

    branched, stats, sent = judge({PREFILL, CHOICE_LOGPROBS, BRANCH_LOGPROBS})
    assert stats.expected_scores == 2 and sent == []  # by expectation, nothing decoded
    chosen, stats, sent = judge({PREFILL, CHOICE_LOGPROBS})  # the same expectation, one continuation at a time
    assert stats.expected_scores == 2 and sent == []
    assert [f.score for f in chosen] == pytest.approx([f.score for f in branched], abs=1e-4)
    _, stats, sent = judge({PREFILL})  # no token probabilities: the verdict is written, its opening prefilled
    assert stats.expected_scores == 0 and stats.attempts == 1 and all(p[-1]["role"] == "assistant" for p in sent)
    _, stats, sent = judge(set())  # methods present but not declared: a plain API-style judge
    assert stats.expected_scores == 0 and all(p[-1]["role"] == "user" for p in sent)
    real.close()
    with pytest.raises(ValueError, match="unknown teacher capability 'logits'"):
        can(real, "logits")


def test_the_schema_describes_teacher_options():
    field = TeacherConfig.model_fields["options"]
    assert field.description and "options_model" in field.description
    assert json.dumps(Recipe.model_json_schema()).count("teacher kind's own options") == 1


def test_the_example_in_docs_plugins_md_is_a_working_kind(tiny_model_dir):
    import re
    import types

    from conftest import REPO

    docs = (REPO / "docs" / "plugins.md").read_text().split("### Teacher kinds", 1)[1]
    module = types.ModuleType("docs_prefixed")
    exec(re.search(r"```python\n(.*?)```", docs, re.S).group(1), module.__dict__)
    plugins = build_plugins(load_entry_points=False)
    plugins.pm.register(module, name="docs_prefixed")
    plugins.teachers.clear()
    _collect(plugins, "teachers")
    check_names(tiny_recipe(tiny_model_dir, kind="prefixed", options={"prefix": "T:"}), plugins)
    with pytest.raises(UserError, match=r"^teacher\.options\.prefix: Input should be a valid string$"):
        check_names(tiny_recipe(tiny_model_dir, kind="prefixed", options={"prefix": 3}), plugins)
    config = TeacherConfig(kind="prefixed", options={"prefix": "T:"}, samples=2, max_new_tokens=3)
    teacher = plugins.create_teacher(config, tiny_model_dir)
    (replies,) = teacher.generate([[{"role": "user", "content": "2 + 2?"}]], seed=0)
    teacher.close()
    assert teacher.label == "prefixed:T:" and len(replies) == 2 and all(r.startswith("T: ") for r in replies)
