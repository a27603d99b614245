"""Score a model on tasks in the evaluation format (docs/evaluation.md)."""

import json
from pathlib import Path

from pydantic import ValidationError

from kdagent.errors import UserError
from kdagent.evaluate import function_call
from kdagent.evaluate.grading import (
    accuracy,
    balanced_accuracy,
    bootstrap_ci,
    format_number,
    is_refusal,
    label_histogram,
    last_number,
    macro_f1,
    numbers_match,
)
from kdagent.records import Message, Task
from kdagent.skill import plain_messages

SUPPORTED_KINDS = ("numeric", "choice", "function_call", "refusal")


def check_tasks(tasks: list[Task], source: str) -> None:
    """Problems a user can cause in an evaluation set, as one-line UserErrors, before any model loads."""
    if not tasks:
        raise UserError(f"{source}: no tasks")
    unsupported = sorted({t.kind for t in tasks} - set(SUPPORTED_KINDS))
    if unsupported:
        raise UserError(
            f"{source}: task kind {', '.join(unsupported)} is not supported yet (supported: {', '.join(SUPPORTED_KINDS)})"
        )
    seen: set[str] = set()
    for task in tasks:
        if task.id in seen:
            raise UserError(f"{source}: duplicate task id {task.id!r}")
        seen.add(task.id)
        if task.kind == "choice" and (not task.choices or task.answer not in task.choices):
            raise UserError(f"{source}: choice task {task.id!r}: answer {task.answer!r} is not one of its choices")
        if task.kind == "refusal" and task.answer not in ("comply", "refuse"):
            raise UserError(f"{source}: refusal task {task.id!r}: answer must be 'comply' or 'refuse'")
        if task.kind == "function_call":
            function_call.check_task(task, source)


def load_tasks(path: Path, quarantine: list | None = None) -> list[Task]:
    """An evaluation file, checked. Lines that are not UTF-8, not JSON or not in the evaluation format are
    quarantined (appended to `quarantine` with their line numbers, and reported on stderr) and the rest is
    used; a file with no task left is a UserError that counts them."""
    from kdagent.jsonl import read_numbered, report_quarantine

    bad: list = []
    records = read_numbered(path, quarantine=bad)
    tasks = []
    for number, record in records:
        try:
            tasks.append(Task.model_validate(record))
        except ValidationError as exc:
            err = exc.errors()[0]
            bad.append(
                {
                    "file": str(path),
                    "line": number,
                    "error": f"not in the evaluation format: {'.'.join(map(str, err['loc']))}: {err['msg']}",
                    "text": json.dumps(record, ensure_ascii=False)[:2000],
                }
            )
    bad.sort(key=lambda b: b["line"])
    total = len(tasks) + len(bad)
    if not tasks and bad:
        raise UserError(
            f"{path}: no tasks left: {len(bad)} of {total} records quarantined (line {bad[0]['line']}: {bad[0]['error']})"
        )
    report_quarantine(bad, total, path, None)
    if quarantine is not None:
        quarantine += bad
    check_tasks(tasks, str(path))
    return tasks


def evaluate(
    engine,
    tasks: list[Task],
    skill=None,
    max_new_tokens: int = 128,
    batch_size: int = 16,
    desc: str = "evaluate",
    bootstrap: int = 1000,
    phrasing: str = "own",
):
    """Returns (summary, predictions). Free-answer kinds are prompted through `skill` when one is given. The summary
    has `n` and `accuracy`; on choice tasks also `macro_f1`, `balanced_accuracy` and the label counts of the
    predictions and of the gold answers (`histogram`, `gold_histogram`); with `bootstrap` resamples, each score's
    95% interval in `ci`."""
    check_tasks(tasks, "evaluation")
    predictions: dict[str, dict] = {}

    free = [t for t in tasks if t.kind in ("numeric", "refusal")]
    trajectories: dict[str, list[Message]] = {}
    if free:
        prompts = [skill.messages(t) if (skill and t.kind == "numeric") else plain_messages(t) for t in free]
        if skill is not None and skill.tools:  # the agent loop, greedy: the model's calls are run
            from kdagent.tools.agent import CLOSE, final_reply, run_agent

            def generate(ps, n, seed):
                return engine.generate(
                    ps,
                    n=n,
                    temperature=0.0,
                    max_new_tokens=max_new_tokens,
                    batch_size=batch_size,
                    desc=desc,
                    stop=[CLOSE],
                )

            runs = run_agent(generate, prompts, skill.tools, 1, skill.max_steps, 0)
            trajectories = {t.id: run[0] for t, run in zip(free, runs)}
            replies = [[final_reply(run[0])] for run in runs]
        else:
            replies = engine.generate(
                prompts, n=1, temperature=0.0, max_new_tokens=max_new_tokens, batch_size=batch_size, desc=desc
            )
        for task, (reply,) in zip(free, replies):
            if task.kind == "numeric":
                value = last_number(reply)
                correct = numbers_match(value, task.answer)
                predicted = None if value is None else format_number(value)
            else:
                predicted = "refuse" if is_refusal(reply) else "comply"
                correct = predicted == task.answer
            predictions[task.id] = {
                "id": task.id,
                "kind": task.kind,
                "answer": task.answer,
                "predicted": predicted,
                "correct": correct,
                "reply": reply,
            }
            if task.id in trajectories:
                predictions[task.id]["trajectory"] = trajectories[task.id]
                predictions[task.id]["tool_calls"] = sum(m["role"] == "tool" for m in trajectories[task.id])

    calls = [t for t in tasks if t.kind == "function_call"]
    if calls:  # offered the record's tools, one call, greedy
        replies = engine.generate(
            [function_call.messages(t) for t in calls],
            n=1,
            temperature=0.0,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            desc=f"{desc} (function calls)",
            stop=[function_call.CLOSE],
        )
        for task, (reply,) in zip(calls, replies):
            correct, call, why = function_call.grade_call(reply, task.possible_answer)
            predictions[task.id] = {
                "id": task.id,
                "kind": "function_call",
                "answer": task.answer,
                "predicted": call,
                "correct": correct,
                "reply": reply,
                **({"why": why} if why else {}),
            }

    choice = [t for t in tasks if t.kind == "choice"]
    if choice:
        if phrasing == "unseen":  # the phrasing no training example used (kdagent/phrasings.py)
            from kdagent.phrasings import unseen_content

            prompts = [[{"role": "user", "content": unseen_content(t)}] for t in choice]
        else:
            prompts = [plain_messages(t) for t in choice]
        scores = engine.choice_logprobs(prompts, [t.choices for t in choice], batch_size=batch_size)
        for task, row in zip(choice, scores):
            best = max(range(len(row)), key=row.__getitem__)
            gold = getattr(task, "answer_index", None)
            correct = best == gold if isinstance(gold, int) else task.choices[best] == task.answer
            predictions[task.id] = {
                "id": task.id,
                "kind": "choice",
                "answer": task.answer,
                "predicted": task.choices[best],
                "correct": correct,
                "scores": row,
            }

    ordered = [predictions[t.id] for t in tasks]
    summary: dict = {"n": len(ordered), "accuracy": round(sum(p["correct"] for p in ordered) / max(len(ordered), 1), 4)}
    kinds = sorted({p["kind"] for p in ordered})
    if len(kinds) > 1:
        summary["by_kind"] = {
            k: {
                "n": sum(p["kind"] == k for p in ordered),
                "accuracy": round(
                    sum(p["correct"] for p in ordered if p["kind"] == k) / sum(p["kind"] == k for p in ordered), 4
                ),
            }
            for k in kinds
        }
    if choice:
        summary.update(choice_scores([p for p in ordered if p["kind"] == "choice"]))
    refusals = [p for p in ordered if p["kind"] == "refusal"]
    if refusals:
        comply = [p for p in refusals if p["answer"] == "comply"]
        refuse = [p for p in refusals if p["answer"] == "refuse"]
        summary["compliance_rate"] = (
            round(sum(p["predicted"] == "comply" for p in comply) / len(comply), 4) if comply else None
        )
        summary["refusal_rate"] = (
            round(sum(p["predicted"] == "refuse" for p in refuse) / len(refuse), 4) if refuse else None
        )
    if trajectories:
        summary["tool_calls_per_task"] = round(
            sum(p.get("tool_calls", 0) for p in ordered) / max(len(trajectories), 1), 3
        )
        without = getattr(skill, "without_tools", None)
        if without is not None:  # the same tasks, prompted without tools
            plain, _ = evaluate(
                engine, tasks, without(), max_new_tokens, batch_size, f"{desc} (without tools)", bootstrap
            )
            summary["without_tools"] = plain
    if bootstrap:
        summary["ci"] = intervals(ordered, bootstrap)
    return summary, ordered


def choice_scores(predictions: list[dict]) -> dict:
    """The scores of choice predictions that accuracy alone hides: a student that gives one label to every item
    keeps the accuracy of that label's share, but its macro-F1 and balanced accuracy fall and its histogram shows it."""
    gold, predicted = [p["answer"] for p in predictions], [p["predicted"] for p in predictions]
    return {
        "macro_f1": round(macro_f1(gold, predicted), 4),
        "balanced_accuracy": round(balanced_accuracy(gold, predicted), 4),
        "histogram": label_histogram(predicted),
        "gold_histogram": label_histogram(gold),
    }


def intervals(predictions: list[dict], resamples: int) -> dict[str, list[float]]:
    """Bootstrap 95% intervals of accuracy (every item) and of macro-F1 and balanced accuracy (the choice items)."""
    correct = [bool(p["correct"]) for p in predictions]
    ci = {"accuracy": bootstrap_ci(correct, [True] * len(correct), accuracy, resamples)}
    choice = [p for p in predictions if p["kind"] == "choice"]
    if choice:
        gold, predicted = [p["answer"] for p in choice], [p["predicted"] for p in choice]
        ci["macro_f1"] = bootstrap_ci(gold, predicted, macro_f1, resamples)
        ci["balanced_accuracy"] = bootstrap_ci(gold, predicted, balanced_accuracy, resamples)
    return {k: [round(low, 4), round(high, 4)] for k, (low, high) in ci.items()}
