"""The Python API: docs/api.md's examples run as written (on the embedded model), `import kdagent` stays light,
and overrides merge into the sections they name."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import kdagent
from kdagent.errors import UserError

REPO = Path(__file__).resolve().parent.parent


def test_import_is_light():
    code = "import sys, kdagent; kdagent.load_recipe; print(sorted(m for m in ('torch', 'transformers', 'trl', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert callable(kdagent.evaluate) and callable(kdagent.run) and callable(kdagent.write_report)


def test_overrides_merge_and_errors_name_the_field():
    recipe = kdagent.load_recipe(REPO / "recipes" / "quickstart.yaml", update={"epochs": 1}, loop={"rounds": 2})
    assert recipe.update.epochs == 1 and recipe.update.learning_rate == 1e-4 and recipe.loop.rounds == 2
    assert kdagent.load_recipe(recipe, name="again").name == "again"
    with pytest.raises(UserError, match="update.epoks"):
        kdagent.load_recipe({"update": {"epoks": 1}})


@pytest.mark.integration
def test_the_documented_example_runs(tmp_path, smollm_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "api.md").read_text(), re.S)
    assert len(blocks) >= 3
    (tmp_path / "recipes").symlink_to(REPO / "recipes")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/api.md", "exec"), namespace)
    assert (tmp_path / "runs" / "api-example" / "report.html").is_file()
    student = (tmp_path / namespace["student"]).resolve()
    assert (
        not student.is_relative_to(tmp_path) or (student / "README.md").is_file()
    )  # a student the run trained has its card
    assert namespace["summary"]["n"] == 2
