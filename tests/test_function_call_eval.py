"""The `function_call` kind of the evaluation format: grading against `possible_answer`, the BFCL loader, and
`kdagent eval` on real BFCL items with the embedded model."""

import json
import subprocess
import sys

import pytest

from conftest import run_cli
from kdagent.evaluate.function_call import grade_call, load_bfcl, messages
from kdagent.records import Task

ANSWER = [{"get_weather": {"city": ["Paris", "Paris, France"], "days": [3, ""], "units": ["", "celsius"]}}]


def call(name, **arguments):
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


@pytest.mark.parametrize(
    "reply, correct, why",
    [
        (call("get_weather", city="Paris"), True, ""),
        (
            call("get_weather", city=" paris,FRANCE. ", days=3.0, units="Celsius"),
            True,
            "",
        ),  # case, spaces, punctuation, 3 == 3.0
        ("Sure! " + call("get_weather", city="Paris", days=3), True, ""),
        (call("get_weather", days=3), False, "missing city"),
        (call("get_weather", city="Lyon"), False, 'not an allowed value: city="Lyon"'),
        (call("get_weather", city="Paris, Texas"), False, "not an allowed value"),
        (call("get_weather", city="Paris", days=4), False, "not an allowed value: days=4"),
        (
            call("get_weather", city="Paris", days=True),
            False,
            "not an allowed value: days=true",
        ),  # a bool is not the number 1
        (call("get_weather", city="Paris", wind=True), False, "unexpected wind"),
        (call("get_time", city="Paris"), False, "called 'get_time'; expected 'get_weather'"),
        ("It is sunny in Paris.", False, "no function call in the reply"),
        ('<tool_call>{"name": "get_weather", "arguments": {"city": }</tool_call>', False, "not valid JSON"),
    ],
)
def test_grading_follows_the_allowed_values(reply, correct, why):
    got, made, reason = grade_call(reply, ANSWER)
    assert got is correct and why in reason
    assert (reason == "") is correct


def test_lists_and_objects_compare_element_by_element():
    answer = [{"f": {"xs": [[1, 2]], "opts": [{"a": "X"}]}}]
    assert grade_call(call("f", xs=[1.0, 2], opts={"a": "x"}), answer)[0]
    assert not grade_call(call("f", xs=[2, 1], opts={"a": "x"}), answer)[0]
    assert not grade_call(call("f", xs=[1, 2], opts={"a": "x", "b": 1}), answer)[0]


def test_the_prompt_offers_the_tools_in_openai_or_bare_form():
    spec = {
        "name": "get_weather",
        "description": "Weather by city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    for tools in ([spec], [{"type": "function", "function": spec}]):
        task = Task(
            id="t", prompt="Weather in Paris?", answer="", kind="function_call", tools=tools, possible_answer=ANSWER
        )
        system, user = messages(task)
        assert (
            json.dumps(spec) in system["content"]
            and "<tool_call>" in system["content"]
            and user["content"] == "Weather in Paris?"
        )


def test_bfcl_loader_and_eval_on_real_items(shared_data, tmp_path):
    bfcl = shared_data / "bfcl"
    records = load_bfcl(bfcl / "BFCL_v4_live_simple.json", bfcl / "possible_answer" / "BFCL_v4_live_simple.json")
    assert len(records) == 258 and all(
        r["kind"] == "function_call" and r["tools"] and r["possible_answer"] for r in records
    )
    assert records[0]["prompt"].startswith("Can you retrieve the details for the user with the ID 7890")
    assert records[0]["possible_answer"] == [{"get_user_info": {"user_id": [7890], "special": ["black"]}}]

    data = tmp_path / "bfcl.jsonl"
    converted = subprocess.run(
        [
            sys.executable,
            "-m",
            "kdagent.evaluate.function_call",
            str(bfcl / "BFCL_v4_live_simple.json"),
            str(bfcl / "possible_answer" / "BFCL_v4_live_simple.json"),
            str(data),
        ],
        capture_output=True,
        text=True,
    )
    assert converted.returncode == 0, converted.stderr[-2000:]
    assert [json.loads(line) for line in data.read_text().splitlines()] == records


@pytest.mark.integration
def test_eval_grades_function_calls_of_the_embedded_model_on_bfcl(shared_data, tmp_path):
    bfcl = shared_data / "bfcl"
    data = tmp_path / "bfcl.jsonl"
    data.write_text(
        "".join(
            json.dumps(r) + "\n"
            for r in load_bfcl(
                bfcl / "BFCL_v4_live_simple.json", bfcl / "possible_answer" / "BFCL_v4_live_simple.json"
            )[:6]
        )
    )
    result = run_cli(
        "eval", "--model", "smollm2-135m-instruct", "--data", str(data), "--json", "--max-new-tokens", "48"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["n"] == 6 and 0 <= summary["accuracy"] <= 1
