"""Every hook is documented and tested (as datasette does), the hooks that no other test uses are tested
here, and the example plugin package (examples/kdagent-example-skill) works through real entry points."""

import inspect
import json
import re
import shutil
import subprocess
import sys
import types
import warnings

import pluggy
import pytest

from conftest import REPO, run_cli
from kdagent import hookspecs
from kdagent.domain import Document, Domain
from kdagent.errors import UserError
from kdagent.hookspecs import hookimpl
from kdagent.plugins import _collect, build_plugins
from kdagent.recipe import TeacherConfig
from kdagent.recipe_io import check_names, load_recipe
from kdagent.records import PreferencePair, Provenance, SFTExample, Task

HOOKS_MD = REPO / "docs" / "hooks.md"
EXAMPLE = REPO / "examples" / "kdagent-example-skill"
QUICKSTART = REPO / "recipes" / "quickstart.yaml"
SPECS = sorted(name for name in dir(hookspecs) if name.startswith("kdagent_"))


def hook_sections() -> dict[str, str]:
    """`## kdagent_...` heading -> the text of its section, from docs/hooks.md."""
    parts = re.split(r"^## (\S+)[ \t]*$", HOOKS_MD.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2) if parts[i].startswith("kdagent_")}


# --- Every hook documented, every hook tested ----------------------------------------------------------


def test_every_hook_has_a_section_in_hooks_md():
    sections = hook_sections()
    assert len(SPECS) >= 9
    missing, stale = sorted(set(SPECS) - set(sections)), sorted(set(sections) - set(SPECS))
    assert not missing, f"docs/hooks.md has no '## <hook>' section for {missing}"
    assert not stale, f"docs/hooks.md documents hooks that kdagent/hookspecs.py lacks: {stale}"
    for name in SPECS:
        text = sections[name]
        for arg in inspect.signature(getattr(hookspecs, name)).parameters:  # written `arg` or `arg(...)`
            assert re.search(rf"`{arg}[`(]", text), f"docs/hooks.md: {name} does not document its argument {arg!r}"
        assert "Returns:" in text and "Called:" in text, f"docs/hooks.md: {name} needs 'Returns:' and 'Called:'"
        assert re.search(rf"```python\n.*?def {name}\(.*?```", text, re.DOTALL), f"docs/hooks.md: {name} has no example"


def test_hooks_md_examples_are_valid_implementations():
    """Each section's example runs, and the plugin manager accepts it (names and arguments match the spec)."""
    for name, text in hook_sections().items():
        module = types.ModuleType(f"hooks_md_{name}")
        for block in re.findall(r"```python\n(.*?)```", text, re.DOTALL):
            exec(compile(block, f"docs/hooks.md ({name})", "exec"), module.__dict__)
        plugins = build_plugins(load_entry_points=False)
        plugins.pm.register(module, name=module.__name__)
        plugins.pm.check_pending()
        assert [i.plugin_name for i in getattr(plugins.pm.hook, name).get_hookimpls()][-1] == module.__name__


def test_every_hook_has_a_test():
    """A hook "has a test" when a tests/test_*.py file implements it (`def <hook>(`, a hookimpl that some test
    registers and runs through the plugin manager) or calls it through the manager (`.hook.<hook>(`).
    This test and the two above build the hook names from kdagent.hookspecs and never write one out, so
    they cannot count as a test of any hook."""
    sources = {path.name: path.read_text(encoding="utf-8") for path in (REPO / "tests").glob("test_*.py")}
    for name in SPECS:
        pattern = re.compile(rf"def {name}\(|\.hook\.{name}\(")
        assert any(pattern.search(text) for text in sources.values()), f"no test implements or calls {name}"
    own = "".join(
        inspect.getsource(f)
        for f in (
            test_every_hook_has_a_section_in_hooks_md,
            test_hooks_md_examples_are_valid_implementations,
            test_every_hook_has_a_test,
        )
    )
    assert not [name for name in SPECS if name in own]


# --- Hooks that no other test exercises --------------------------------------------------------------------


class Tiny(Domain):
    name = "tiny"

    def __init__(self, size: int = 4):
        self.size = size

    def corpus(self):
        return [Document("tiny.txt", "Two and two make four.")]

    def seed_tasks(self, n, seed):
        return [
            Task(id=f"s{i}", prompt=f"{i} + {seed % 10}?", answer=str(i + seed % 10)) for i in range(min(n, self.size))
        ]

    def eval_tasks(self, n):
        return [Task(id=f"e{i}", prompt=f"{i} + 100?", answer=str(i + 100)) for i in range(n)]


class Echo:
    def __init__(self, config, student_path, plugins):
        self.config, self.student_path, self.plugins = config, student_path, plugins
        self.label = "echo"

    def generate(self, prompts, seed, desc="teacher", n=None, temperature=None, **kwargs):
        return [[p[-1]["content"]] * (n or self.config.samples) for p in prompts]

    def close(self):
        pass


def word_count(text: str) -> int:
    """How many words a text has."""
    return len(text.split())


class Registrations:
    @hookimpl
    def kdagent_register_domains(self, register):
        register("tiny", Tiny)

    @hookimpl
    def kdagent_register_teachers(self, register):
        register("echo", Echo)

    @hookimpl
    def kdagent_register_tools(self, register):
        register("word_count", word_count)


def test_domain_teacher_and_tool_registration(tmp_path):
    plugins = build_plugins(load_entry_points=False)
    plugins.pm.register(Registrations(), name="registrations")
    for kind in ("domains", "teachers", "tools"):
        getattr(plugins, kind).clear()
        _collect(plugins, kind)
    assert plugins.failures == []
    rows = {(r["kind"], r["name"]): r["plugin"] for r in plugins.as_rows()}
    assert rows[("domain", "tiny")] == rows[("teacher", "echo")] == rows[("tool", "word_count")] == "registrations"
    assert rows[("domain", "arithmetic")] == "kdagent.domains.arithmetic"  # built-ins registered first

    # a recipe can name them; options reach the factory, and a wrong one is a UserError naming the field
    recipe = load_recipe(QUICKSTART, ["domain.name=tiny", "domain.options.size=2", "teacher.kind=echo"])
    check_names(recipe, plugins)
    domain = plugins.instantiate("domains", "tiny", "domain.options", recipe.domain.options)
    assert [t.id for t in domain.seed_tasks(10, seed=3)] == ["s0", "s1"] and len(domain.eval_tasks(3)) == 3
    with pytest.raises(UserError, match=r"domain.options: tiny: .*colour"):
        plugins.instantiate("domains", "tiny", "domain.options", {"colour": "red"})

    # a teacher factory that takes `plugins` receives the registry
    teacher = plugins.create_teacher(TeacherConfig(kind="echo", samples=2), tmp_path)
    assert teacher.plugins is plugins and teacher.student_path == tmp_path
    assert teacher.generate([[{"role": "user", "content": "hi"}]], seed=0) == [["hi", "hi"]]

    assert plugins.tools["word_count"].obj("three small words") == 3


class RoundRecorder:
    def __init__(self):
        self.calls = []

    @hookimpl
    def kdagent_round_start(self, round, run_dir):  # fewer arguments than the spec
        self.calls.append(("start", round, run_dir))

    @hookimpl
    def kdagent_round_end(self, recipe, metrics, round):  # any order, chosen by name
        self.calls.append(("end", round, recipe.name, metrics["eval"]["accuracy"]))


def test_round_hooks_receive_what_the_runner_passes(tmp_path):
    plugins = build_plugins(load_entry_points=False)
    recorder = RoundRecorder()
    plugins.pm.register(recorder)
    recipe = load_recipe(QUICKSTART)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pluggy warns when a call lacks an argument of the spec
        plugins.round_start(round=1, run_dir=tmp_path, recipe=recipe)  # the keywords kdagent/loop/runner.py uses
        plugins.round_end(round=1, run_dir=tmp_path, recipe=recipe, metrics={"round": 1, "eval": {"accuracy": 0.5}})
    assert recorder.calls == [("start", 1, tmp_path), ("end", 1, "quickstart", 0.5)]


def test_an_argument_the_spec_lacks_is_refused():
    class Wrong:
        @hookimpl
        def kdagent_round_start(self, round, epoch):
            pass

    with pytest.raises(pluggy.PluginValidationError, match="epoch"):
        build_plugins(load_entry_points=False).pm.register(Wrong())


# --- The example package, installed for real -----------------------------------------------------------------


@pytest.fixture(scope="module")
def example_site(tmp_path_factory):
    """examples/kdagent-example-skill installed by pip into a folder that tests put on the path."""
    target = tmp_path_factory.mktemp("example-site")
    source = (
        tmp_path_factory.mktemp("example-src") / EXAMPLE.name
    )  # build from a copy: nothing written into the repository
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
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
        str(source),
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    assert list(target.glob("kdagent_example_skill-*.dist-info"))
    return target


@pytest.fixture
def example_plugins(example_site, monkeypatch):
    """A plugin manager that loads the installed example package (and no other installed plugin)."""
    monkeypatch.syspath_prepend(str(example_site))
    monkeypatch.setenv("KDAGENT_PLUGINS", "kdagent-example-skill")
    return build_plugins()


def test_example_is_listed_by_kdagent_plugins(example_site):
    result = run_cli("plugins", "--json", env={"PYTHONPATH": str(example_site)})
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    rows = {(r["kind"], r["name"]): r for r in data["registered"]}
    assert rows[("skill", "last_word")]["distribution"] == "kdagent-example-skill"
    assert rows[("skill", "last_word")]["plugin"] == "last_word"
    assert not [f for f in data["failures"] if "example" in f["plugin"] or "last_word" in f["plugin"]]
    text = run_cli("plugins", env={"PYTHONPATH": str(example_site)}).stdout
    assert re.search(r"^skill\s+last_word\s+kdagent-example-skill \(last_word\)$", text, re.MULTILINE)
    # allowed one entry point at a time
    only_pii = run_cli("plugins", "--json", env={"PYTHONPATH": str(example_site), "KDAGENT_PLUGINS": "pii_filter"})
    assert "last_word" not in {r["name"] for r in json.loads(only_pii.stdout)["registered"]}


def test_recipe_names_the_example_skill(example_site):
    args = (
        "validate",
        str(QUICKSTART),
        "--set",
        "skills.0.name=last_word",
        "--set",
        "skills.0.options.instruction=End with it.",
    )
    ok = run_cli(*args, env={"PYTHONPATH": str(example_site)})
    assert ok.returncode == 0, ok.stderr
    assert "name: last_word" in ok.stdout and "End with it." in ok.stdout
    missing = run_cli(*args)  # not installed
    assert missing.returncode == 2 and "unknown skill 'last_word'" in missing.stderr
    wrong = run_cli(
        "validate",
        str(QUICKSTART),
        "--set",
        "skills.0.name=last_word",
        "--set",
        "skills.0.options.colour=red",
        env={"PYTHONPATH": str(example_site)},
    )
    assert wrong.returncode == 2 and "skills[0].options: last_word:" in wrong.stderr


def test_example_entry_points_load(example_plugins):
    assert example_plugins.failures == []
    for name in ("last_word", "pii_filter", "round_log"):
        assert example_plugins.distributions[name] == "kdagent-example-skill"
        assert example_plugins.pm.get_plugin(name) is not None


def test_example_skill_prompt_and_verifier(example_plugins):
    skill = example_plugins.instantiate("skills", "last_word", "skills[0].options", {})
    assert skill.name == "last_word"
    task = Task(id="t", prompt="What is 6 * 7?", answer="42")
    content = skill.messages(task)[0]["content"]
    assert content.startswith("What is 6 * 7?") and content.endswith("as its very last word.")
    cases = {
        "Six sevens make 42.": True,
        "6 * 7 = **42**": True,
        "42.0": True,
        "42 is what I get.": False,
        "Six sevens make 41.": False,
        "": False,
    }
    for reply, passed in cases.items():
        verdict = skill.verify(task, reply)
        assert verdict.passed is passed and verdict.score == float(passed), reply
    assert skill.verify(task, "So: 42!").predicted == "42"
    assert skill.verify(Task(id="m", prompt="Cost?", answer="1234"), "It costs $1,234.").passed
    city = Task(id="c", prompt="Where?", answer="New York", kind="choice", choices=["Boston", "New York"])
    assert skill.verify(city, "The city is new york.").passed and not skill.verify(city, "The city is York.").passed
    assert "Options: Boston, New York" in skill.messages(city)[0]["content"]
    custom = example_plugins.instantiate("skills", "last_word", "skills[0].options", {"instruction": "End with it."})
    assert custom.messages(task)[0]["content"].endswith("End with it.")
    with pytest.raises(UserError, match=r"skills\[0\].options: last_word:"):
        example_plugins.instantiate("skills", "last_word", "skills[0].options", {"colour": "red"})


def _sft(prompt: str, completion: str) -> SFTExample:
    prov = Provenance(round=1, teacher="self", skill="last_word", domain="arithmetic", task_id="t")
    return SFTExample(
        id="e",
        prompt=[{"role": "user", "content": prompt}],
        completion=[{"role": "assistant", "content": completion}],
        provenance=prov,
    )


def test_example_pii_veto(example_plugins):
    veto = example_plugins.pm.get_plugin("pii_filter").kdagent_veto_example
    email = _sft("Who do I write to?", "Write to jane.doe@example.com and the answer is 4.")
    assert veto(email) == "pii_filter: an email address in the completion"
    assert "jane" not in veto(email)  # the reason never repeats the data
    assert example_plugins.veto_reasons(email, recipe=None) == ["pii_filter: an email address in the completion"]
    for phone in ("Call +44 20 7946 0958 first.", "Ring (555) 123-4567.", "Ring 555-123-4567."):
        assert veto(_sft(phone, "4")) == "pii_filter: a phone number in the prompt", phone
    clean = _sft(
        "Tom has 12 + 30 apples, bought on 2024-01-15. How many?",
        "12 + 30 = 42, so 1,042 - 1,000 = 42. The answer is 42.",
    )
    assert veto(clean) is None
    assert example_plugins.veto_reasons(clean, recipe=None) == []
    pair = PreferencePair(
        id="p",
        prompt=clean.prompt,
        chosen=clean.completion,
        rejected=[{"role": "assistant", "content": "Ask bob@corp.io"}],
        margin=1.0,
        provenance=clean.provenance,
    )
    assert example_plugins.veto_reasons(pair, recipe=None) == ["pii_filter: an email address in the rejected"]


def test_example_round_log(example_plugins, tmp_path, monkeypatch):
    monkeypatch.delenv("KDAGENT_ROUND_LOG", raising=False)
    recipe = load_recipe(QUICKSTART)
    metrics = {"round": 1, "eval": {"accuracy": 0.25}, "counts": {"sft_examples": 3}}
    example_plugins.pm.hook.kdagent_round_start(round=1, run_dir=tmp_path, recipe=recipe)
    example_plugins.pm.hook.kdagent_round_end(round=1, run_dir=tmp_path, recipe=recipe, metrics=metrics)
    lines = [json.loads(line) for line in (tmp_path / "round_log.jsonl").read_text().splitlines()]
    assert [(x["event"], x["round"], x["recipe"]) for x in lines] == [
        ("round_start", 1, "quickstart"),
        ("round_end", 1, "quickstart"),
    ]
    assert lines[1]["accuracy"] == 0.25 and lines[1]["metrics"] == metrics

    elsewhere = tmp_path / "logs" / "rounds.jsonl"
    monkeypatch.setenv("KDAGENT_ROUND_LOG", str(elsewhere))
    example_plugins.round_end(round=2, run_dir=tmp_path, recipe=recipe, metrics={"round": 2, "eval": {"accuracy": 0.5}})
    assert json.loads(elsewhere.read_text())["accuracy"] == 0.5
    assert len((tmp_path / "round_log.jsonl").read_text().splitlines()) == 2  # the default file is left alone
