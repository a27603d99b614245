from pathlib import Path

import pytest
from pydantic import BaseModel

from conftest import REPO, run_cli
from kdagent.errors import UserError
from kdagent.plugins import build_plugins
from kdagent.recipe import Recipe
from kdagent.recipe_io import apply_sets, check_names, load_recipe

QUICKSTART = REPO / "recipes" / "quickstart.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_quickstart_validates_and_prints_resolved_recipe():
    result = run_cli("validate", str(QUICKSTART))
    assert result.returncode == 0, result.stderr
    assert "name: quickstart" in result.stdout
    assert "fallback_to_reference: false" in result.stdout  # defaults are filled in


def test_unknown_top_level_key_exits_2_and_names_it(tmp_path):
    path = write(tmp_path, QUICKSTART.read_text() + "\nbogus_key: 1\n")
    result = run_cli("validate", str(path))
    assert result.returncode == 2
    assert "bogus_key" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_nested_unknown_key_and_wrong_type_name_the_path(tmp_path):
    with pytest.raises(UserError, match=r"unknown key 'teacher\.tempreature'"):
        load_recipe(write(tmp_path, "name: x\nteacher: {tempreature: 0.5}\n"))
    with pytest.raises(UserError, match=r"teacher\.samples: Input should be a valid integer"):
        load_recipe(write(tmp_path, "name: x\nteacher: {samples: many}\n"))
    with pytest.raises(UserError, match=r"skills\[1\]\.options"):
        load_recipe(write(tmp_path, "name: x\nskills: [cot, {name: cot, options: 3}]\n"))


def test_unsafe_yaml_tag_is_refused_and_never_runs(tmp_path):
    canary = tmp_path / "pwned"
    path = write(tmp_path, f"name: x\nseed: !!python/object/apply:os.system ['touch {canary}']\n")
    result = run_cli("validate", str(path))
    assert result.returncode == 2
    assert "python/object" in result.stderr
    assert not canary.exists()


def test_unknown_names_list_what_is_registered(tmp_path):
    plugins = build_plugins(load_entry_points=False)
    for text, pattern in [
        ("skills: [nope]", r"skills\[0\]\.name: unknown skill 'nope' \(registered: .*cot"),
        ("domain: {name: nope}", r"domain\.name: unknown domain 'nope' \(registered: .*arithmetic"),
        (
            "teacher: {kind: nope}",
            r"teacher\.kind: unknown teacher kind 'nope' \(registered: hf, langchain, openai, self",
        ),
    ]:
        recipe = load_recipe(write(tmp_path, f"name: x\n{text}\n"))
        with pytest.raises(UserError, match=pattern):
            check_names(recipe, plugins)
    result = run_cli("validate", str(write(tmp_path, "name: x\nskills: [nope]\n")))
    assert result.returncode == 2 and "unknown skill 'nope'" in result.stderr


def test_set_overrides(tmp_path):
    result = run_cli(
        "validate",
        str(QUICKSTART),
        "--set",
        "teacher.samples=8",
        "--set",
        "update.lora={r: 4}",
        "--set",
        "skills.0.name=cot",
    )
    assert result.returncode == 0, result.stderr
    recipe = Recipe.model_validate(__import__("yaml").safe_load(result.stdout))
    assert recipe.teacher.samples == 8 and recipe.update.lora.r == 4
    bad = run_cli("validate", str(QUICKSTART), "--set", "teacher.samples=-1")
    assert bad.returncode == 2 and "teacher.samples" in bad.stderr
    dtype = run_cli("validate", str(QUICKSTART), "--set", "teacher.dtype=int8")
    assert dtype.returncode == 2 and "teacher.dtype" in dtype.stderr and "bfloat16" in dtype.stderr
    assert apply_sets({"a": [1, 2]}, ["a.1=5", "b.c=true"]) == {"a": [1, 5], "b": {"c": True}}
    with pytest.raises(UserError, match="no item 7"):
        apply_sets({"a": [1]}, ["a.7=1"])
    with pytest.raises(UserError, match="expected path.to.field=value"):
        apply_sets({}, ["novalue"])


def test_missing_recipe_and_non_mapping(tmp_path):
    assert run_cli("validate", str(tmp_path / "absent.yaml")).returncode == 2
    with pytest.raises(UserError, match="expected a mapping"):
        load_recipe(write(tmp_path, "- a\n- b\n"))


def _models(model: type[BaseModel]):
    yield model
    for field in model.model_fields.values():
        for arg in [field.annotation, *getattr(field.annotation, "__args__", ())]:
            inner = getattr(arg, "__args__", ())
            for candidate in [arg, *inner]:
                if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                    yield from _models(candidate)


def test_every_recipe_field_has_a_description_and_forbids_extras():
    seen = set()
    for model in _models(Recipe):
        if model in seen:
            continue
        seen.add(model)
        assert model.model_config.get("extra") == "forbid", model.__name__
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
    assert len(seen) >= 11  # one model per concept


def test_validate_catches_what_run_would_reject(tmp_path):
    cases = [
        ("teacher: {kind: hf}", "teacher.model: the 'hf' teacher needs a model"),
        ("teacher: {kind: openai, model: m}", "teacher.base_url"),
        ("domain: {options: {nope: 1}}", "domain.options: arithmetic: "),
        ("domain: {options: {operations: [div]}}", "unknown operation 'div'"),
        ("skills: [{name: cot, options: {bogus: 1}}]", "skills[0].options: cot: "),
    ]
    for text, message in cases:
        result = run_cli("validate", str(write(tmp_path, f"name: x\n{text}\n")))
        assert result.returncode == 2 and message in result.stderr, (text, result.stderr)


def test_secrets_are_masked_in_the_written_recipe(tmp_path):
    from kdagent.recipe_io import recipe_to_yaml

    recipe = load_recipe(
        write(
            tmp_path,
            "name: x\nteacher: {kind: openai, model: m, base_url: 'https://user:s3cret@host/v1?api-key=s3cret2', api_key_env: MY_KEY}\n"
            "domain: {options: {api_token: s3cret3, operations: [add]}}\n",
        )
    )
    text = recipe_to_yaml(recipe)
    assert (
        "s3cret" not in text
        and "https://***@host/v1?api-key=***" in text
        and "MY_KEY" in text
        and "api_token: '***'" in text
    )
    assert "s3cret" in recipe_to_yaml(recipe, mask=False)
