"""Writing a recipe: `kdagent schema` (the JSON Schema an editor checks a recipe against), `kdagent init` (a
starter recipe that validates) and "did you mean" for a misspelt key."""

import inspect
import json
import re

import pytest
import yaml

from conftest import REPO, run_cli
from kdagent.plugins import build_plugins
from kdagent.recipe import recipe_json_schema
from kdagent.recipe_io import load_recipe

RECIPES = sorted((REPO / "recipes").glob("*.yaml"))


def _properties(schema: dict):
    """(where, name, property) of every property of the schema and of its definitions."""
    for where, node in [("recipe", schema), *schema["$defs"].items()]:
        for name, prop in node.get("properties", {}).items():
            yield where, name, prop


def test_schema_prints_json_schema_with_a_description_on_every_field():
    result = run_cli("schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema == json.loads(json.dumps(recipe_json_schema()))
    assert schema["$schema"].startswith("https://json-schema.org/") and schema["additionalProperties"] is False
    top = set(schema["properties"])
    assert {
        "name",
        "student",
        "teacher",
        "domain",
        "skills",
        "feedback",
        "curation",
        "update",
        "evaluation",
        "loop",
    } <= top
    missing = [f"{where}.{name}" for where, name, prop in _properties(schema) if not prop.get("description")]
    assert not missing, f"fields without a description: {missing}"


def test_every_shipped_recipe_validates_against_the_schema():
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(recipe_json_schema())
    validator.check_schema(validator.schema)
    assert RECIPES
    for path in RECIPES:
        errors = [
            f"{'.'.join(map(str, e.path))}: {e.message}"
            for e in validator.iter_errors(yaml.safe_load(path.read_text()))
        ]
        assert not errors, f"{path.name}: {errors}"
        load_recipe(path)  # and the recipe models agree
    # what load_recipe accepts, the schema accepts: no name, a bare skill name, failure_mining: true
    assert validator.is_valid(
        {"skills": ["cot", {"name": "label", "options": {"phrasings": 2}}], "loop": {"failure_mining": True}}
    )
    # what load_recipe refuses, the schema refuses
    for bad in (
        {"traning": {}},
        {"update": {"learning_rte": 1.0e-4}},
        {"teacher": {"samples": "many"}},
        {"skills": []},
        {"loop": {"failure_mining": "sometimes"}},
    ):
        assert not validator.is_valid(bad), bad


@pytest.mark.parametrize(
    "domain, reads_data",
    [
        ("finance", True),
        ("medicine", True),
        ("law", True),
        ("math", True),
        ("arithmetic", False),
        ("assistant", False),
        ("instructions", False),
    ],
)
def test_init_writes_a_commented_starter_recipe_that_validates(tmp_path, request, domain, reads_data):
    args = ["--data-dir", str(request.getfixturevalue("shared_data"))] if reads_data else []
    out = tmp_path / f"my-{domain}.yaml"
    result = run_cli("init", "--domain", domain, "--output", str(out), *args)
    assert result.returncode == 0, result.stderr
    assert str(out) in result.stdout and out.is_file()
    text = out.read_text()
    assert text.startswith(f"# A starter recipe for the {domain} domain")
    assert "# Seed tasks taken from the domain per round." in text  # each field with its description
    validated = run_cli("validate", str(out))
    assert validated.returncode == 0, validated.stderr
    resolved = yaml.safe_load(validated.stdout)
    assert resolved["name"] == f"my-{domain}" and resolved["domain"]["name"] == domain
    if reads_data:
        assert resolved["domain"]["options"]["data_dir"] == args[1]
    # every option of the domain is in the file: set, or commented out with its default
    domain_section = text.split("\ndomain:\n", 1)[1].split("\n\n", 1)[0]
    for option in inspect.signature(build_plugins().domains[domain].obj).parameters:
        assert re.search(rf"^  (  |#   |  # ){option}: ", domain_section, re.M), option


def test_init_takes_the_domains_skill_or_the_one_asked_for(tmp_path):
    out = tmp_path / "a.yaml"
    assert run_cli("init", "--domain", "assistant", "-o", str(out)).returncode == 0
    recipe = load_recipe(out)
    assert (
        recipe.skills[0].name == "alignment" and recipe.update.method == "dpo" and recipe.feedback.preferences
    )  # the skill's starter
    out = tmp_path / "t.yaml"
    assert run_cli("init", "--skill", "tool_use", "-o", str(out)).returncode == 0
    recipe = load_recipe(out)
    assert recipe.domain.name == "arithmetic" and [s.name for s in recipe.skills] == ["tool_use"]
    text = out.read_text()
    assert "#   max_steps: 4" in text  # the skill's options, commented out with their defaults
    # uncommenting the listed options keeps the recipe valid
    out.write_text(text.replace("    # options:", "    options:").replace("    #   ", "      "))
    assert load_recipe(out).skills[0].options == {
        "tools": None,
        "max_steps": 4,
        "demonstration": True,
        "allow_unisolated_python": False,
    }


def test_init_never_overwrites_and_reports_bad_names_in_one_line(tmp_path):
    out = tmp_path / "mine.yaml"
    out.write_text("name: mine\n")
    result = run_cli("init", "--output", str(out))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "exists" in result.stderr and out.read_text() == "name: mine\n"
    for args, pattern in (
        (["--domain", "nope"], "unknown domain 'nope'"),
        (["--skill", "nope"], "unknown skill 'nope'"),
    ):
        result = run_cli("init", *args, "--output", str(tmp_path / "x.yaml"))
        assert result.returncode == 2 and pattern in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "x.yaml").exists()


def test_init_leaves_an_optional_data_dir_out_when_the_folder_is_absent(tmp_path):
    out = tmp_path / "law.yaml"
    result = run_cli("init", "--domain", "law", "--output", str(out), "--data-dir", str(tmp_path / "absent"))
    assert result.returncode == 0, result.stderr
    assert load_recipe(out).domain.options == {}  # the package's own seed and held-out tasks
    assert f"#   data_dir: {tmp_path / 'absent'}" in out.read_text()
    result = run_cli(
        "init", "--domain", "math", "--output", str(tmp_path / "math.yaml"), "--data-dir", str(tmp_path / "absent")
    )
    assert result.returncode == 2 and "--data-dir" in result.stderr and not (tmp_path / "math.yaml").exists()


@pytest.mark.parametrize(
    "body, expected",
    [
        (
            "traning: {epochs: 1}",
            "unknown key 'traning' (did you mean 'update'?)",
        ),  # a misspelt synonym: training lives under update
        ("update: {learning_rte: 1.0e-4}", "unknown key 'update.learning_rte' (did you mean 'update.learning_rate'?)"),
    ],
)
def test_a_misspelt_key_exits_2_with_one_line_naming_the_path_and_the_closest_key(tmp_path, body, expected):
    path = tmp_path / "r.yaml"
    path.write_text(f"name: x\n{body}\n")
    result = run_cli("validate", str(path))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [f"Error: invalid recipe {path}: {expected}"]


def test_did_you_mean_finds_keys_where_they_belong_and_lists_valid_keys_otherwise(tmp_path):
    from kdagent.errors import UserError

    path = tmp_path / "r.yaml"
    for body, expected in [
        ("teacher: {tempreature: 0.5}", "'teacher.tempreature' (did you mean 'teacher.temperature'?)"),
        ("skills: [{name: cot, optons: {}}]", "'skills[0].optons' (did you mean 'skills[0].options'?)"),
        (
            "evaluation: {gate: {max_regresion: 0.1}}",
            "'evaluation.gate.max_regresion' (did you mean 'evaluation.gate.max_regression'?)",
        ),
        ("rounds: 2", "'rounds' (did you mean 'loop.rounds'?)"),  # a right key in the wrong place
        ("update: {lr: 1.0e-4}", "'update.lr' (did you mean 'update.learning_rate'?)"),  # another tool's name for it
        ("update: {xyzzy: 1}", "'update.xyzzy' (valid keys under update: method, learning_rate, epochs"),
    ]:
        path.write_text(f"name: x\n{body}\n")
        with pytest.raises(UserError) as err:
            load_recipe(path)
        assert f"unknown key {expected}" in str(err.value), str(err.value)
    path.write_text("name: x\n")
    with pytest.raises(
        UserError, match=r"unknown key 'update\.learnin_rate' \(did you mean 'update\.learning_rate'\?\)"
    ):
        load_recipe(path, ["update.learnin_rate=1.0e-4"])  # --set paths too


def test_did_you_mean_for_misspelt_names(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: x\nskills: [lable]\ndomain: {name: arithmetic}\n")
    result = run_cli("validate", str(path))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "skills[0].name: unknown skill 'lable' (registered: " in result.stderr and result.stderr.rstrip().endswith(
        "did you mean 'label'?"
    )
