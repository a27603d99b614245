import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SHARED_DATA = REPO.parent / "shared" / "data"
KDAGENT = str(Path(sys.executable).with_name("kdagent"))


def kdagent(*args, cwd=REPO):
    return subprocess.run([KDAGENT, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_uninstalled_domain_exits_2_listing_the_installed_ones(tmp_path):
    recipe = tmp_path / "tax.yaml"
    recipe.write_text("name: tax\ndomain:\n  name: tax-law\nskills: [label]\n")
    result = kdagent("validate", str(recipe))
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert "domain.name: unknown domain 'tax-law'" in line
    for name in ("arithmetic", "finance", "law", "medicine"):  # the domains installed by the set-up
        assert name in line.split("registered:")[1]


def test_missing_data_dir_exits_2_naming_the_path(tmp_path):
    missing = tmp_path / "no-data"
    base = ["recipes/law.yaml", "--set", f"domain.options.data_dir={missing}"]
    for args in (
        ["validate", *base],
        ["run", *base, "--run-dir", str(tmp_path / "run")],
    ):  # run fails before any model loads
        result = kdagent(*args)
        assert result.returncode == 2, result.stderr
        assert f"domain.options.data_dir: folder {missing} not found" in result.stderr.strip().splitlines()[-1]
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["law", "medicine", "finance"])
def test_domain_recipes_validate_from_the_repository_root(name):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent (the recipes read ../shared/data)")
    result = kdagent("validate", f"recipes/{name}.yaml")
    assert result.returncode == 0, result.stderr
    assert f"name: {name}" in result.stdout and "data_dir: ../shared/data" in result.stdout
