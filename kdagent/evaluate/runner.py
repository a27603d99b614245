"""Score a model on tasks in the evaluation format (INTERFACES.md)."""

from kdagent.evaluate.grading import format_number, is_refusal, last_number, macro_f1, numbers_match
from kdagent.records import Message, Task

SUPPORTED_KINDS = ("numeric", "choice", "refusal")


def plain_messages(task: Task) -> list[Message]:
    parts = []
    if task.context:
        parts.append(f"Context:\n{task.context}")
    text = task.prompt
    if task.kind == "choice" and task.choices:
        text += "\nOptions:\n" + "\n".join(f"- {c}" for c in task.choices) + "\nAnswer with one of the options."
    parts.append(text)
    return [{"role": "user", "content": "\n\n".join(parts)}]


def evaluate(engine, tasks: list[Task], skill=None, max_new_tokens: int = 128, batch_size: int = 16, desc: str = "evaluate"):
    """Returns (summary, predictions). Free-answer kinds are prompted through `skill` when one is given."""
    unsupported = sorted({t.kind for t in tasks} - set(SUPPORTED_KINDS))
    if unsupported:
        raise NotImplementedError(f"evaluation of {', '.join(unsupported)} tasks is not implemented yet")
    predictions: dict[str, dict] = {}

    free = [t for t in tasks if t.kind in ("numeric", "refusal")]
    if free:
        prompts = [skill.messages(t) if (skill and t.kind == "numeric") else plain_messages(t) for t in free]
        replies = engine.generate(prompts, n=1, temperature=0.0, max_new_tokens=max_new_tokens, batch_size=batch_size, desc=desc)
        for task, (reply,) in zip(free, replies):
            if task.kind == "numeric":
                value = last_number(reply)
                correct = numbers_match(value, task.answer)
                predicted = None if value is None else format_number(value)
            else:
                predicted = "refuse" if is_refusal(reply) else "comply"
                correct = predicted == task.answer
            predictions[task.id] = {"id": task.id, "kind": task.kind, "answer": task.answer, "predicted": predicted, "correct": correct, "reply": reply}

    choice = [t for t in tasks if t.kind == "choice"]
    if choice:
        for task in choice:
            if not task.choices or task.answer not in task.choices:
                raise ValueError(f"choice task {task.id}: answer must be one of its choices")
        scores = engine.choice_logprobs([plain_messages(t) for t in choice], [t.choices for t in choice], batch_size=batch_size)
        for task, row in zip(choice, scores):
            best = max(range(len(row)), key=row.__getitem__)
            gold = getattr(task, "answer_index", None)
            correct = best == gold if isinstance(gold, int) else task.choices[best] == task.answer
            predictions[task.id] = {"id": task.id, "kind": "choice", "answer": task.answer, "predicted": task.choices[best], "correct": correct, "scores": row}

    ordered = [predictions[t.id] for t in tasks]
    summary: dict = {"n": len(ordered), "accuracy": round(sum(p["correct"] for p in ordered) / max(len(ordered), 1), 4)}
    kinds = sorted({p["kind"] for p in ordered})
    if len(kinds) > 1:
        summary["by_kind"] = {
            k: {"n": sum(p["kind"] == k for p in ordered), "accuracy": round(sum(p["correct"] for p in ordered if p["kind"] == k) / sum(p["kind"] == k for p in ordered), 4)}
            for k in kinds
        }
    if choice:
        summary["macro_f1"] = round(macro_f1([p["answer"] for p in ordered if p["kind"] == "choice"], [p["predicted"] for p in ordered if p["kind"] == "choice"]), 4)
    refusals = [p for p in ordered if p["kind"] == "refusal"]
    if refusals:
        comply = [p for p in refusals if p["answer"] == "comply"]
        refuse = [p for p in refusals if p["answer"] == "refuse"]
        summary["compliance_rate"] = round(sum(p["predicted"] == "comply" for p in comply) / len(comply), 4) if comply else None
        summary["refusal_rate"] = round(sum(p["predicted"] == "refuse" for p in refuse) / len(refuse), 4) if refuse else None
    return summary, ordered
