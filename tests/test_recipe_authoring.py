"""Writing a recipe: `kdagent schema` (the JSON Schema an editor checks a recipe against), `kdagent init` (a
starter recipe that validates) and "did you mean" for a misspelt key."""

import json

import pytest
import yaml

from conftest import REPO, run_cli
from kdagent.recipe import load_recipe, recipe_json_schema

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
    assert {"name", "student", "teacher", "domain", "skills", "feedback", "curation", "update", "evaluation", "loop"} <= top
    missing = [f"{where}.{name}" for where, name, prop in _properties(schema) if not prop.get("description")]
    assert not missing, f"fields without a description: {missing}"


def test_every_shipped_recipe_validates_against_the_schema():
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(recipe_json_schema())
    validator.check_schema(validator.schema)
    assert RECIPES
    for path in RECIPES:
        errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
        assert not errors, f"{path.name}: {errors}"
        load_recipe(path)  # and the recipe models agree
    # what load_recipe accepts, the schema accepts: no name, a bare skill name, failure_mining: true
    assert validator.is_valid({"skills": ["cot", {"name": "label", "options": {"phrasings": 2}}], "loop": {"failure_mining": True}})
    # what load_recipe refuses, the schema refuses
    for bad in ({"traning": {}}, {"update": {"learning_rte": 1.0e-4}}, {"teacher": {"samples": "many"}}, {"skills": []},
                {"loop": {"failure_mining": "sometimes"}}):
        assert not validator.is_valid(bad), bad
