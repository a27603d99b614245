"""Hostile recipes are refused, not crashed on: an alias bomb, nesting deeper than any recipe needs, a file or
a `--set` value far larger than any recipe, an alias that refers to itself, a run name that leaves runs/.
Each is one line on stderr and exit status 2, with bounded work: well inside a minute and 150 MB (the command's own peak RSS), where the unbounded loader ran for minutes over hundreds of MB.
And no error line is longer than a few hundred characters, with secrets masked before the line is cut."""

import json
import subprocess
import sys
import uuid

import pytest

from conftest import run_cli
from kdagent.errors import UserError, one_line, register_secret
from kdagent.jsonl import read_jsonl

# The classic "billion laughs": 342 bytes that expand to 9**9 (387 million) strings.
ALIAS_BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]\n" for prev, name in zip("abcdefgh", "bcdefghi")
)

# `kdagent` run inside one Python process that reports its exit status, time and peak memory. Arguments come
# on stdin: a 1 MB `--set` value is longer than Linux lets one command-line argument be.
_MEASURED = """
import json, sys, time
args = json.load(sys.stdin)
start = time.monotonic()
from kdagent.cli import main
try:
    main(args)
    code = 0
except SystemExit as exc:
    code = exc.code
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so it would report the forking pytest's size
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"code": code, "seconds": time.monotonic() - start, "peak_mb": hwm / 1024}))
"""


def _measured(*args, env=None):
    result = subprocess.run(
        [sys.executable, "-c", _MEASURED],
        input=json.dumps(list(args)),
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.stdout.strip(), result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def _assert_refused_quickly(args, *needles):
    report, stderr = _measured(*args)
    assert report["code"] == 2, stderr[-2000:]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in stderr, stderr[-2000:]
    assert len(stderr) < 1000, len(stderr)
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    # bounded work, not a speed measurement: the unbounded loader ran for minutes and took hundreds of MB
    assert report["seconds"] < 60, report
    assert report["peak_mb"] < 150, report


def _write(tmp_path, text: str):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return str(path)


def test_the_alias_bomb_is_refused_before_it_expands(tmp_path):
    assert len(ALIAS_BOMB) < 400
    _assert_refused_quickly(
        ["validate", _write(tmp_path, "name: x\n" + ALIAS_BOMB)], "YAML aliases expand to more than"
    )
    # under a field that takes any value, where it used to be expanded and printed whole
    nested = "name: x\ndomain:\n  name: arithmetic\n  options:\n" + "".join(
        f"    {line}\n" for line in ALIAS_BOMB.splitlines()
    )
    _assert_refused_quickly(["validate", _write(tmp_path, nested)], "YAML aliases expand to more than")


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000,
        "name: x\nseed: " + "{a: " * 50_000,
        "name: x\n" + "".join(" " * i + "a:\n" for i in range(1000)),  # block style, by indentation
    ],
    ids=["flow sequences", "flow mappings", "block mappings"],
)
def test_deep_nesting_is_refused_without_a_traceback(tmp_path, text):
    _assert_refused_quickly(["validate", _write(tmp_path, text)], "nesting deeper than 64 levels")


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path):
    _assert_refused_quickly(
        ["validate", _write(tmp_path, "name: x\nseed: &s [1, *s]\n")], "the alias *s refers to itself"
    )


def test_a_recipe_over_1_mb_is_refused_before_it_is_read(tmp_path):
    text = "name: x\n# " + "padding " * 140_000 + "\n"
    _assert_refused_quickly(["validate", _write(tmp_path, text)], f"{len(text)} bytes, over the limit of 1048576")


def test_a_recipe_of_many_nodes_is_refused(tmp_path):
    text = "name: x\nx: [" + ",".join(["1"] * 60_000) + "]\n"
    _assert_refused_quickly(["validate", _write(tmp_path, text)], "more than 50000 YAML nodes")


def test_a_1_mb_set_value_and_a_set_alias_bomb_are_refused(tmp_path):
    recipe = _write(tmp_path, "name: x\n")
    _assert_refused_quickly(
        ["validate", recipe, "--set", "name=" + "x" * 2**20],
        "--set name: the value is 1048576 characters, over the limit",
    )
    bomb = "{" + ", ".join(ALIAS_BOMB.strip().splitlines()) + "}"
    _assert_refused_quickly(
        ["validate", recipe, "--set", f"domain.options={bomb}"],
        "--set domain.options: YAML aliases expand to more than",
    )


@pytest.mark.parametrize("name", ["../../outside", "/tmp/absolute", "..", "a\\b"])
def test_a_run_name_cannot_leave_runs(tmp_path, name):
    result = run_cli("validate", _write(tmp_path, json.dumps({"name": name})))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "is not a plain folder name" in result.stderr


def test_an_error_line_is_cut_to_a_few_hundred_characters_with_its_length(tmp_path):
    result = run_cli("validate", _write(tmp_path, "name: x\n"), "--set", "y" * 5000)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]
    assert len(result.stderr) < 600 and "characters in all)" in result.stderr


def _fragments(secret: str, size: int = 6) -> list[str]:
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


def test_a_secret_across_a_cut_is_masked_whole():
    secret = uuid.uuid4().hex
    register_secret(secret)
    for start in range(0, 1000 - len(secret)):  # the secret at every place, across both cuts among them
        text = "x" * start + secret + "y" * (1000 - len(secret) - start)
        line = one_line(text, 500)
        assert len(line) <= 500 and "1000 characters in all" not in line  # masked first: 971 characters
        assert not any(f in line for f in _fragments(secret)), (start, line)


def test_a_secret_is_masked_in_its_url_encoded_and_basic_auth_forms_and_when_short(monkeypatch):
    import base64
    from urllib.parse import quote, quote_plus

    secret = "sk-" + uuid.uuid4().hex[:20] + "/+= &?"
    register_secret(secret)
    for user in ("", "a", "ab", "user"):  # every alignment of the value within the base64 groups
        header = "Authorization: Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()
        core = base64.b64encode(f"{user}:{secret}".encode()).decode()[len(user) // 3 * 4 + 8 : -8]
        assert core not in one_line(header), (user, one_line(header))
    for form in (quote(secret, safe=""), quote_plus(secret), quote(secret)):
        assert "***" in one_line(f"GET https://api.example/v1?key={form}&x=1") and form not in one_line(f"?key={form}")
    monkeypatch.setenv("KDAGENT_TEST_SHORT_KEY", "q7Zk1")  # named by the recipe: masked though short
    from kdagent.errors import register_environment_secrets

    register_environment_secrets(["KDAGENT_TEST_SHORT_KEY"])
    assert one_line("the server said: bad key q7Zk1") == "the server said: bad key ***"


def test_a_secret_across_a_cut_of_a_cli_error_is_masked_whole(tmp_path):
    secret = uuid.uuid4().hex
    # blocks of the secret side by side where an unmasked line of this length would be cut (after its first
    # few hundred characters, before its last hundred or so); masked, it is still long enough to be cut
    block = "-".join([secret] * 12)
    assignment = block + "y" * 400 + block
    result = run_cli(
        "validate", _write(tmp_path, "name: x\n"), "--set", assignment, env={"KDAGENT_TEST_SECRET_TOKEN": secret}
    )
    assert result.returncode == 2 and "characters in all)" in result.stderr, result.stderr[-2000:]
    assert len(result.stderr.strip()) <= len("Error: ") + 500 and "***" in result.stderr
    assert not any(f in result.stderr for f in _fragments(secret)), result.stderr


def test_json_nested_too_deeply_is_a_bad_record_not_a_crash(tmp_path):
    path = tmp_path / "eval.jsonl"
    path.write_text(json.dumps({"id": "ok"}) + "\n" + "[" * 100_000 + "]" * 100_000 + "\n")
    quarantine = []
    assert read_jsonl(path, quarantine=quarantine) == [{"id": "ok"}]
    assert quarantine[0]["line"] == 2 and "nested too deeply" in quarantine[0]["error"]
    with pytest.raises(UserError, match=r"eval\.jsonl:1: not valid JSON \(nested too deeply to read\)"):
        path.write_text("[" * 100_000 + "]" * 100_000 + "\n" + json.dumps({"id": "ok"}) + "\n")
        read_jsonl(path)
