"""Bad input to `kdagent run`: exit status 2 and one line on stderr naming the problem, no traceback, and
nothing loaded or written. And malformed records of the user's files (not UTF-8, not JSON, not in the
format) are quarantined with their line numbers while the rest proceeds."""

import json

import pytest
import yaml

from conftest import run_cli
from kdagent.plugins import build_plugins

GOOD = [{"id": f"e{i}", "prompt": f"What is {i} + {i}?", "answer": str(2 * i), "kind": "numeric"} for i in range(1, 4)]


def _recipe(tmp_path, model_dir, extra: str = "", **fields) -> str:
    data = {"name": "bad", "student": {"model": str(model_dir)}, "retrieval": {"enabled": False}, **fields}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data) + extra)
    return str(path)


def _write(path, lines: list[bytes]):
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return str(path)


def _assert_refused(result, run_dir, *needles):
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "recipe.yaml").exists()  # nothing ran


CASES = {
    "unknown key": ("bogus_key: 1\n", {}, ["unknown key 'bogus_key'"]),
    "nested unknown key": ("", {"teacher": {"tempreature": 0.5}}, ["unknown key 'teacher.tempreature'"]),
    "wrong type": ("", {"teacher": {"samples": "many"}}, ["teacher.samples: Input should be a valid integer"]),
    "out of range": ("", {"teacher": {"samples": 0}}, ["teacher.samples"]),
    "unsafe yaml tag": (
        "seed: !!python/object/apply:os.system ['touch {marker}']\n",
        {},
        ["not safe, valid YAML", "python/object"],
    ),
    "unknown skill": ("", {"skills": ["nope"]}, ["skills[0].name: unknown skill 'nope' (registered: ", "cot"]),
    "unknown domain": (
        "",
        {"domain": {"name": "nope"}},
        ["domain.name: unknown domain 'nope' (registered: ", "arithmetic"],
    ),
    "unknown teacher": (
        "",
        {"teacher": {"kind": "nope"}},
        ["teacher.kind: unknown teacher kind 'nope' (registered: hf, langchain, openai, self"],
    ),
    "unknown tool": (
        "",
        {"skills": [{"name": "tool_use", "options": {"tools": ["shell"]}}]},
        ["unknown tool 'shell'", "calculator"],
    ),
    "missing eval file": (
        "",
        {"evaluation": {"data": "{tmp}/absent.jsonl"}},
        ["evaluation.data: ", "absent.jsonl not found"],
    ),
    "missing corpus folder": (
        "",
        {"retrieval": {"corpus_dir": "{tmp}/absent"}},
        ["retrieval.corpus_dir: ", "is not a folder"],
    ),
    "bad domain option": (
        "",
        {"domain": {"options": {"operations": ["div"]}}},
        ["domain.options: arithmetic: ", "unknown operation 'div'"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_recipe_is_one_line_and_exit_2_before_any_model_loads(case, tmp_path, tiny_model_dir):
    extra, fields, needles = CASES[case]
    marker = tmp_path / "PWNED"
    fields = json.loads(json.dumps(fields).replace("{tmp}", str(tmp_path)))
    if case == "unsafe yaml tag":
        (tmp_path / "recipe.yaml").write_text(
            f"name: bad\nstudent: {{model: {tiny_model_dir}}}\n" + extra.format(marker=marker)
        )
        recipe = str(tmp_path / "recipe.yaml")
    else:
        recipe = _recipe(tmp_path, tiny_model_dir, extra, **fields)
    run_dir = tmp_path / "run"
    _assert_refused(run_cli("run", recipe, "--run-dir", str(run_dir)), run_dir, *needles)
    assert not marker.exists()


def test_missing_recipe_file(tmp_path):
    _assert_refused(
        run_cli("run", str(tmp_path / "absent.yaml"), "--run-dir", str(tmp_path / "run")),
        tmp_path / "run",
        "absent.yaml not found",
    )


def test_empty_and_fully_filtered_datasets_are_refused_with_a_count_per_filter(tmp_path, tiny_model_dir):
    run_dir = tmp_path / "run"
    empty = _write(tmp_path / "empty.jsonl", [])
    _assert_refused(
        run_cli("run", _recipe(tmp_path, tiny_model_dir, evaluation={"data": empty}), "--run-dir", str(run_dir)),
        run_dir,
        "empty.jsonl: no tasks",
    )

    broken = _write(tmp_path / "broken.jsonl", [b"\xff\xfe{", b"not json", b'{"id": "x", "prompt": "no answer"}'])
    result = run_cli("run", _recipe(tmp_path, tiny_model_dir, evaluation={"data": broken}), "--run-dir", str(run_dir))
    _assert_refused(result, run_dir, "broken.jsonl: no tasks left: 3 of 3 records quarantined (line 1: not UTF-8")

    # every seed task also in the evaluation set: decontamination drops them all
    domain = build_plugins(load_entry_points=False).create("domains", "arithmetic")
    seeds = domain.seed_tasks(4, 0 * 1000 + 1)
    leaked = _write(
        tmp_path / "leaked.jsonl",
        [json.dumps({"id": t.id, "prompt": t.prompt, "answer": t.answer, "kind": "numeric"}).encode() for t in seeds],
    )
    result = run_cli(
        "run",
        _recipe(tmp_path, tiny_model_dir, domain={"seed_tasks": 4}, evaluation={"data": leaked}),
        "--run-dir",
        str(run_dir),
    )
    _assert_refused(result, run_dir, "no seed tasks left for round 1 (the domain gave 4; dropped: contaminated_task 4")

    long = _write(
        tmp_path / "long.jsonl",
        [json.dumps({"id": "l", "prompt": "why " * 1100, "answer": "1", "kind": "numeric"}).encode()],
    )
    result = run_cli("run", _recipe(tmp_path, tiny_model_dir, evaluation={"data": long}), "--run-dir", str(run_dir))
    _assert_refused(
        result, run_dir, "evaluation: no tasks left: all 1 are longer than the student's context (1024 tokens"
    )


def test_malformed_records_are_quarantined_with_their_line_numbers_and_the_rest_is_used(tmp_path, tiny_model_dir):
    lines = [
        json.dumps(GOOD[0]).encode(),
        b'{"id": "e9", "prompt": "caf\xe9?", "answer": "1"}',
        json.dumps(GOOD[1]).encode(),
        b'{"id": "e8", "prompt": ',
        b"[1, 2]",
        json.dumps({"id": "e7", "prompt": "no answer"}).encode(),
        json.dumps(GOOD[2]).encode(),
    ]
    data = _write(tmp_path / "eval.jsonl", lines)
    result = run_cli("eval", "--model", str(tiny_model_dir), "--data", data, "--json", "--max-new-tokens", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["n"] == 3  # the three good records were scored
    for line, why in [
        (2, "not UTF-8"),
        (4, "not valid JSON"),
        (5, "a JSON list, not an object"),
        (6, "not in the evaluation format: answer"),
    ]:
        assert f"eval.jsonl:{line}: {why}" in result.stderr, (line, result.stderr[-2000:])
    assert "quarantined 4 of 7 records" in result.stderr

    from kdagent.evaluate.runner import load_tasks

    quarantine = []
    assert [t.id for t in load_tasks(data, quarantine)] == ["e1", "e2", "e3"]
    assert [(q["line"], q["error"].split(" (")[0]) for q in quarantine][:3] == [
        (2, "not UTF-8"),
        (4, "not valid JSON"),
        (5, "a JSON list, not an object"),
    ]
    assert quarantine[1]["text"] == '{"id": "e8", "prompt": '  # kept as it was, for the user to fix
