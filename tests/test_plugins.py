import json
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, run_cli
from kdagent import hookspecs
from kdagent.hookspecs import hookimpl
from kdagent.plugins import build_plugins
from kdagent.records import Provenance, SFTExample, Task

FIXTURES = REPO / "tests" / "fixtures"


@pytest.fixture(scope="module")
def installed_plugins(tmp_path_factory):
    """The fixture plugin packages, installed for real by pip into a folder put on PYTHONPATH."""
    target = tmp_path_factory.mktemp("site")
    sources = tmp_path_factory.mktemp("src")  # build from copies, so nothing is written into the repository
    names = ["kdagent-hello", "kdagent-broken", "kdagent-misspelt"]
    for name in names:
        shutil.copytree(FIXTURES / name, sources / name, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "--target",
        str(target),
        *[str(sources / name) for name in names],
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    assert list(target.glob("kdagent_hello-*.dist-info"))
    return target


def plugins_json(env):
    result = run_cli("plugins", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_builtins_are_listed_with_their_distribution():
    data = plugins_json({"KDAGENT_PLUGINS": ""})
    rows = {(r["kind"], r["name"]): r for r in data["registered"]}
    for key in [
        ("skill", "cot"),
        ("domain", "arithmetic"),
        ("teacher", "self"),
        ("teacher", "hf"),
        ("teacher", "openai"),
        ("teacher", "langchain"),
        ("skill", "qa"),
        ("tool", "calculator"),
    ]:
        assert rows[key]["distribution"] == "kdagent"
    text = run_cli("plugins", env={"KDAGENT_PLUGINS": ""}).stdout
    assert "cot" in text and "kdagent (kdagent.skills.cot)" in text


def test_entry_point_plugin_is_discovered_and_broken_one_reported(installed_plugins):
    data = plugins_json({"PYTHONPATH": str(installed_plugins)})
    rows = {(r["kind"], r["name"]): r for r in data["registered"]}
    assert rows[("skill", "hello")]["distribution"] == "kdagent-hello"
    assert rows[("tool", "shout")]["plugin"] == "hello"
    assert ("skill", "cot") in rows  # built-ins still there
    failures = {f["plugin"]: f["error"] for f in data["failures"]}
    assert "broken (kdagent-broken)" in failures
    assert "kdagent_this_module_does_not_exist" in failures["broken (kdagent-broken)"]
    assert "kdagent_registr_skills" in failures["misspelt (kdagent-misspelt)"]  # unknown hook, named
    # the CLI keeps working with a broken plugin installed
    assert (
        run_cli(
            "validate", str(REPO / "recipes" / "quickstart.yaml"), env={"PYTHONPATH": str(installed_plugins)}
        ).returncode
        == 0
    )


@pytest.mark.parametrize(
    "allow, hello, broken",
    [
        ("", False, False),
        ("hello", True, False),
        ("kdagent-hello", True, False),
        ("broken,hello", True, True),
        ("other", False, False),
    ],
)
def test_allowlist(installed_plugins, allow, hello, broken):
    data = plugins_json({"PYTHONPATH": str(installed_plugins), "KDAGENT_PLUGINS": allow})
    names = {r["name"] for r in data["registered"]}
    assert ("hello" in names) is hello
    assert "cot" in names  # built-ins always load
    assert any(f["plugin"].startswith("broken") for f in data["failures"]) is broken


def test_uninstalled_plugin_disappears(installed_plugins):
    names = {r["name"] for r in plugins_json({})["registered"]}  # without the folder on the path
    assert "hello" not in names


def _imports_after(args):
    code = (
        "import sys\nfrom kdagent.cli import main\n"
        f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
        "print('HEAVY=' + ','.join(m for m in ('torch', 'transformers', 'trl', 'chromadb') if m in sys.modules))"
    )
    return (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        .stdout.strip()
        .splitlines()[-1]
        .removeprefix("HEAVY=")
    )


def test_help_plugins_and_validate_do_not_import_heavy_libraries():
    assert _imports_after(["--help"]) == ""
    assert _imports_after(["plugins"]) == ""
    assert _imports_after(["validate", str(REPO / "recipes" / "quickstart.yaml")]) == ""


class Doubler:
    @hookimpl
    def kdagent_transform_task(self, task):
        return task.model_copy(update={"prompt": task.prompt + " (again)"})


class Vetoer:
    @hookimpl
    def kdagent_veto_example(self, example, recipe):
        return "too short" if len(example.completion[0]["content"]) < 5 else None


def test_transform_chain_and_veto_through_real_hooks():
    plugins = build_plugins(load_entry_points=False)
    plugins.pm.register(Doubler())
    plugins.pm.register(Doubler())
    plugins.pm.register(Vetoer())
    task = Task(id="t", prompt="Q", answer="1")
    assert plugins.transform_task(task, recipe=None).prompt == "Q (again) (again)"
    prov = Provenance(round=1, teacher="t", skill="cot", domain="d", task_id="t")
    short = SFTExample(
        id="e",
        prompt=[{"role": "user", "content": "Q"}],
        completion=[{"role": "assistant", "content": "1"}],
        provenance=prov,
    )
    assert plugins.veto_reasons(short, recipe=None) == ["too short"]
    assert (
        plugins.veto_reasons(
            short.model_copy(update={"completion": [{"role": "assistant", "content": "long enough"}]}), None
        )
        == []
    )


def test_duplicate_registration_is_reported_not_fatal():
    class Clash:
        @hookimpl
        def kdagent_register_skills(self, register):
            register("cot", object)

    plugins = build_plugins(load_entry_points=False)
    plugins.pm.register(Clash(), name="clash")
    from kdagent.plugins import _collect

    plugins.skills.clear()
    _collect(plugins, "skills")
    assert plugins.skills["cot"].plugin == "kdagent.skills.cot"
    assert any("already registered" in e for _, e in plugins.failures)


def test_every_hook_is_documented():
    docs = (REPO / "docs" / "plugins.md").read_text()
    specs = [name for name in dir(hookspecs) if name.startswith("kdagent_")]
    assert len(specs) >= 8
    for name in specs:
        assert getattr(hookspecs, name).__doc__, f"{name} has no docstring"
        assert f"`{name}" in docs, f"{name} is missing from docs/plugins.md"
