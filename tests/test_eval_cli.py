import json

import pytest

from conftest import run_cli
from kdagent.jsonl import read_jsonl, write_jsonl


@pytest.mark.integration
def test_eval_scores_the_embedded_model_in_the_evaluation_format(tmp_path):
    data = tmp_path / "eval.jsonl"
    write_jsonl(
        data,
        [
            {
                "id": "n1",
                "prompt": "What is 2 + 3? Reply with just the number.",
                "context": None,
                "choices": None,
                "answer": "5",
                "kind": "numeric",
            },
            {
                "id": "n2",
                "prompt": "What is 10 - 4? Reply with just the number.",
                "context": None,
                "choices": None,
                "answer": "6",
                "kind": "numeric",
            },
            {
                "id": "c1",
                "prompt": "Is the sky blue on a clear day?",
                "context": None,
                "choices": ["yes", "no"],
                "answer": "yes",
                "kind": "choice",
            },
            {
                "id": "c2",
                "prompt": "Which one is an animal?",
                "context": None,
                "choices": ["table", "dog", "cloud"],
                "answer": "dog",
                "kind": "choice",
                "extra": 1,
            },
        ],
    )
    result = run_cli(
        "eval", "--model", "smollm2-135m-instruct", "--data", str(data), "--json", "--max-new-tokens", "16"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["n"] == 4 and 0 <= summary["accuracy"] <= 1
    assert summary["by_kind"]["choice"]["n"] == 2 and "macro_f1" in summary
    assert (
        summary["gold_histogram"] == {"dog": 1, "yes": 1}
        and sum(summary["histogram"].values()) == 2
        and "balanced_accuracy" in summary
    )
    assert set(summary["ci"]) == {"accuracy", "macro_f1", "balanced_accuracy"}
    assert summary["by_kind"]["choice"]["accuracy"] >= 0.5  # the real model knows a dog is an animal

    limited = json.loads(
        run_cli(
            "eval",
            "--model",
            "smollm2-135m-instruct",
            "--data",
            str(data),
            "--json",
            "--limit",
            "1",
            "--max-new-tokens",
            "8",
        ).stdout
    )
    assert limited["n"] == 1
    unsampled = json.loads(
        run_cli(
            "eval",
            "--model",
            "smollm2-135m-instruct",
            "--data",
            str(data),
            "--json",
            "--limit",
            "1",
            "--bootstrap",
            "0",
        ).stdout
    )
    assert "ci" not in unsampled


def test_eval_rejects_bad_input(tmp_path):
    missing = run_cli("eval", "--model", "smollm2-135m-instruct", "--data", str(tmp_path / "none.jsonl"))
    assert missing.returncode == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "prompt": "x"}\n')
    result = run_cli("eval", "--model", "smollm2-135m-instruct", "--data", str(bad))
    assert result.returncode == 2 and "answer" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_torn_last_line_is_dropped(tmp_path, capsys):
    path = tmp_path / "x.jsonl"
    write_jsonl(path, [{"a": 1}, {"a": 2}])
    with open(path, "a") as fh:
        fh.write('{"a": 3, "b"')
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    assert "torn last line" in capsys.readouterr().err


@pytest.mark.parametrize(
    "records, message",
    [
        (
            [{"id": "1", "prompt": "a", "answer": "1"}, {"id": "1", "prompt": "b", "answer": "2"}],
            "duplicate task id '1'",
        ),
        (
            [{"id": "1", "prompt": "a", "answer": "x", "kind": "choice", "choices": ["y", "z"]}],
            "is not one of its choices",
        ),
        (
            [{"id": "1", "prompt": "a", "answer": "", "kind": "function_call"}],
            "function_call task '1': `tools` must be",
        ),
        (
            [
                {
                    "id": "1",
                    "prompt": "a",
                    "answer": "",
                    "kind": "function_call",
                    "tools": [{"name": "f"}],
                    "possible_answer": {"f": {}},
                }
            ],
            "`possible_answer` must be",
        ),
        ([{"id": "1", "prompt": "a", "answer": "maybe", "kind": "refusal"}], "'comply' or 'refuse'"),
        ([], "no tasks"),
    ],
)
def test_eval_set_problems_are_exit_2_before_loading(tmp_path, records, message):
    data = tmp_path / "e.jsonl"
    write_jsonl(data, records)
    result = run_cli("eval", "--model", "no-such-model", "--data", str(data))  # the data is checked first
    assert result.returncode == 2 and message in result.stderr, result.stderr
