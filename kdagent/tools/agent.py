"""The tool-calling agent loop, used when eliciting and when evaluating a skill that has tools.

The documented format: the model writes one call per turn as

    <tool_call>{"name": "calculator", "arguments": {"expression": "23 + 19"}}</tool_call>

and stops. kdagent runs the tool and appends its result as a `tool` message; the model goes on until it
replies without a call (its final answer) or the step limit is reached. Tools are the callables registered
through `kdagent_register_tools` (plain functions with keyword arguments, or LangChain tools). A tool that
raises, an unknown tool and a malformed call all become a result starting with "error:", so the model
sees what went wrong and a trajectory is never lost to an exception. Model-written code runs only in the
`python` tool's sandbox (kdagent/tools/sandbox.py); text inside retrieved passages is never parsed as a call.
"""

import inspect
import json
import re
from collections.abc import Callable

from kdagent.records import Message

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_CALL = re.compile(re.escape(OPEN) + r"\s*(.*?)\s*" + re.escape(CLOSE), re.DOTALL)
MAX_RESULT_CHARS = 2000


def format_call(name: str, arguments: dict) -> str:
    return f"{OPEN}{json.dumps({'name': name, 'arguments': arguments}, ensure_ascii=False)}{CLOSE}"


def cut_after_call(text: str) -> str:
    """A reply up to and including its first complete call (a server that swallowed the stop string gets
    it back)."""
    start = text.find(OPEN)
    if start < 0:
        return text.strip()
    end = text.find(CLOSE, start)
    return (text[: end + len(CLOSE)] if end >= 0 else text.rstrip() + CLOSE).strip()


def parse_call(text: str) -> tuple[str, dict] | str | None:
    """(name, arguments) for a reply that makes a call; an "error: ..." string for a malformed call; None
    for a reply without one (a final answer)."""
    if OPEN not in text:
        return None
    match = _CALL.search(text)
    if not match:
        return "error: the tool call is not closed with </tool_call>"
    try:
        call = json.loads(match.group(1))
    except json.JSONDecodeError as exc:
        return f"error: the tool call is not valid JSON ({exc.msg})"
    except RecursionError:
        return "error: the tool call is nested too deeply to read"
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return 'error: a tool call needs {"name": ..., "arguments": {...}}'
    arguments = call.get("arguments", {})
    if not isinstance(arguments, dict):
        return "error: the tool call's arguments must be a JSON object"
    return call["name"], arguments


def run_tool(tools: dict[str, Callable], name: str, arguments: dict) -> str:
    """Run one call; every failure is a result starting with "error:"."""
    if name not in tools:
        return f"error: unknown tool {name!r} (available: {', '.join(sorted(tools))})"
    tool = tools[name]
    try:
        result = tool.invoke(arguments) if hasattr(tool, "invoke") else tool(**arguments)
    except Exception as exc:  # a tool's own failure is the model's feedback, not the run's end
        result = f"error: {type(exc).__name__}: {exc}"
    text = str(result)
    return text if len(text) <= MAX_RESULT_CHARS else text[:MAX_RESULT_CHARS] + " ...[truncated]"


def describe_tools(tools: dict[str, Callable]) -> str:
    """One line per tool: its name, its arguments and the first line of its description."""
    lines = []
    for name, tool in sorted(tools.items()):
        if hasattr(tool, "args") and hasattr(tool, "description"):  # a LangChain tool
            args, doc = ", ".join(tool.args), tool.description
        else:
            args = ", ".join(inspect.signature(tool).parameters)
            doc = inspect.getdoc(tool) or ""
        lines.append(f"- {name}({args}): {doc.strip().splitlines()[0] if doc.strip() else ''}")
    return "\n".join(lines)


def run_agent(
    generate: Callable[[list[list[Message]], int, int], list[list[str]]],
    prompts: list[list[Message]],
    tools: dict[str, Callable],
    n: int,
    max_steps: int,
    seed: int,
) -> list[list[list[Message]]]:
    """For each prompt, `n` trajectories: the assistant and tool messages after the prompt, ending with the
    assistant's final reply (or with the last tool result when all `max_steps` model turns made calls).

    `generate(prompts, n, seed)` samples `n` replies per prompt, stopping after a call's closing tag. The
    first step samples `n` per prompt; each trajectory then continues on its own with one sample a step."""
    trajectories: list[list[list[Message]]] = [[[] for _ in range(n)] for _ in prompts]
    first = generate(prompts, n, seed)
    active = []
    for p, replies in enumerate(first):
        for k, reply in enumerate(replies):
            if _step(trajectories[p][k], reply, tools):
                active.append((p, k))
    for step in range(1, max_steps):  # out of steps, a trajectory ends on its last tool result
        if not active:
            break
        replies = generate([prompts[p] + trajectories[p][k] for p, k in active], 1, seed + step)
        active = [(p, k) for (p, k), (reply,) in zip(active, replies) if _step(trajectories[p][k], reply, tools)]
    return trajectories


def _step(trajectory: list[Message], reply: str, tools: dict[str, Callable]) -> bool:
    """Append the reply (and a tool result if it made a call); True while the trajectory goes on."""
    call = parse_call(reply)
    if call is None:
        trajectory.append({"role": "assistant", "content": reply.strip()})
        return False
    trajectory.append({"role": "assistant", "content": cut_after_call(reply)})
    result = call if isinstance(call, str) else run_tool(tools, *call)
    trajectory.append({"role": "tool", "content": result})
    return True


def final_reply(trajectory: list[Message]) -> str:
    """The final answer of a trajectory ("" when it ended on a tool result)."""
    return trajectory[-1]["content"] if trajectory and trajectory[-1]["role"] == "assistant" else ""
