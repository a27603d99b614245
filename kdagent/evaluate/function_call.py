"""The `function_call` kind of the evaluation format (docs/evaluation.md): the model is offered the record's `tools`
and must emit one call, graded against `possible_answer` as the usual function-calling benchmarks (BFCL's AST
check) grade it.

- The prompt lists the tools as the JSON-schema specs the record gives (OpenAI's `{"type": "function",
  "function": {...}}` or a bare `{"name", "description", "parameters"}`) and asks for one call in kdagent's
  documented call format, `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (kdagent/tools/agent.py).
- `grade_call`: correct when the reply holds a well-formed call, its function name is one of
  `possible_answer`'s, every argument that answer requires is present (an allowed list without `""`), and
  every argument given is among the allowed values. Numbers compare by value (7 equals 7.0; a bool is not a
  number), strings lowercased and without spaces or the characters , . / - _ * ^ (BFCL's string
  standardisation: "April 1, 2024" equals "april 1 2024"), lists and objects element by element.

`load_bfcl` turns a BFCL question file and its answer file into records of this format.
"""

import json
import re
from pathlib import Path

from kdagent.errors import UserError
from kdagent.records import Message, Task
from kdagent.skill import grounding_parts
from kdagent.tools.agent import CLOSE, OPEN, parse_call

INSTRUCTION = (
    "You can call these functions:\n{tools}\n\n"  # {tools} is replaced (the call example holds braces)
    "Answer the user's request with exactly one function call, written as\n"
    f'{OPEN}{{"name": "<function name>", "arguments": {{"<argument>": <value>}}}}{CLOSE}\n'
    "and nothing else."
)


_IGNORED = re.compile(r"[ ,./\-_*^]")


def _standard(text: str) -> str:
    return _IGNORED.sub("", text).lower()


def _spec(tool: dict) -> dict:
    return tool["function"] if isinstance(tool.get("function"), dict) else tool


def check_task(task: Task, source: str) -> None:
    """A UserError naming the task when its `tools` or `possible_answer` cannot be graded."""
    tools, answers = getattr(task, "tools", None), getattr(task, "possible_answer", None)
    if (
        not isinstance(tools, list)
        or not tools
        or not all(isinstance(t, dict) and isinstance(_spec(t).get("name"), str) for t in tools)
    ):
        raise UserError(
            f"{source}: function_call task {task.id!r}: `tools` must be a non-empty list of function specs with a name"
        )
    if (
        not isinstance(answers, list)
        or not answers
        or not all(isinstance(a, dict) and len(a) == 1 and isinstance(next(iter(a.values())), dict) for a in answers)
        or not all(isinstance(v, list) for a in answers for v in next(iter(a.values())).values())
    ):
        raise UserError(
            f"{source}: function_call task {task.id!r}: `possible_answer` must be "
            '[{"function_name": {"argument": [allowed values]}}]'
        )


def messages(task: Task) -> list[Message]:
    tools = "\n".join(json.dumps(_spec(t), ensure_ascii=False) for t in task.tools)
    parts = grounding_parts(task, None) + [task.prompt]
    return [
        {"role": "system", "content": INSTRUCTION.replace("{tools}", tools)},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def _same(value, allowed) -> bool:
    if isinstance(allowed, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(allowed, bool) and value == allowed
    if isinstance(allowed, (int, float)):
        return isinstance(value, (int, float)) and float(value) == float(allowed)
    if isinstance(allowed, str):
        return isinstance(value, str) and _standard(value) == _standard(allowed)
    if isinstance(allowed, list):
        return isinstance(value, list) and len(value) == len(allowed) and all(map(_same, value, allowed))
    if isinstance(allowed, dict):
        return (
            isinstance(value, dict)
            and value.keys() == allowed.keys()
            and all(_same(value[k], allowed[k]) for k in allowed)
        )
    return value == allowed


def grade_call(reply: str, possible_answer: list[dict]) -> tuple[bool, dict | None, str]:
    """(correct, the call made as {"name", "arguments"} or None, why it is wrong or "")."""
    parsed = parse_call(reply)
    if parsed is None:
        return False, None, "no function call in the reply"
    if isinstance(parsed, str):
        return False, None, parsed
    name, arguments = parsed
    call = {"name": name, "arguments": arguments}
    expected = [next(iter(a.values())) for a in possible_answer if next(iter(a)) == name]
    if not expected:
        return False, call, f"called {name!r}; expected {', '.join(repr(next(iter(a))) for a in possible_answer)}"
    why = ""
    for allowed in expected:
        missing = [arg for arg, values in allowed.items() if "" not in values and arg not in arguments]
        unknown = [arg for arg in arguments if arg not in allowed]
        wrong = [
            arg
            for arg in arguments
            if arg in allowed and not any(_same(arguments[arg], v) for v in allowed[arg] if v != "")
        ]
        if not (missing or unknown or wrong):
            return True, call, ""
        why = "; ".join(
            filter(
                None,
                [
                    missing and f"missing {', '.join(missing)}",
                    unknown and f"unexpected {', '.join(unknown)}",
                    wrong and "not an allowed value: " + ", ".join(f"{a}={json.dumps(arguments[a])}" for a in wrong),
                ],
            )
        )
    return False, call, why


def load_bfcl(questions: str | Path, answers: str | Path) -> list[dict]:
    """BFCL records (`{id, question: [[{role, content}]], function: [specs]}`, one a line) with their answers
    (`{id, ground_truth}`) as `function_call` records of the evaluation format. The user turns of the
    first question become the prompt; questions without an answer are left out."""
    truth = {}
    for line in Path(answers).read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            truth[record["id"]] = record["ground_truth"]
    out = []
    for line in Path(questions).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if record["id"] not in truth:
            continue
        turns = record["question"][0]
        prompt = "\n\n".join(m["content"] for m in turns if m.get("role") == "user")
        out.append(
            {
                "id": record["id"],
                "prompt": prompt,
                "answer": json.dumps(truth[record["id"]], ensure_ascii=False),
                "kind": "function_call",
                "tools": record["function"],
                "possible_answer": truth[record["id"]],
            }
        )
    return out


def main(argv=None) -> int:
    """python -m kdagent.evaluate.function_call QUESTIONS ANSWERS OUT.jsonl: BFCL files to the evaluation format."""
    import argparse

    parser = argparse.ArgumentParser(
        description="Convert a BFCL question file and its answer file to kdagent's evaluation format."
    )
    parser.add_argument("questions")
    parser.add_argument("answers")
    parser.add_argument("out")
    args = parser.parse_args(argv)
    records = load_bfcl(args.questions, args.answers)
    Path(args.out).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    print(f"{len(records)} function_call tasks -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
