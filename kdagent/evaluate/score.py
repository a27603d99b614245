"""The Python API's `kdagent.evaluate(model, data, ...)`: one model scored on tasks in the evaluation format."""

from pathlib import Path

from kdagent.errors import UserError


def evaluate_model(
    model: str | Path,
    data,
    *,
    limit: int | None = None,
    skill: str | None = None,
    max_new_tokens: int = 128,
    batch_size: int = 16,
    bootstrap: int = 1000,
    predictions: bool = False,
):
    """Score a model (alias, local folder, Hub id in the cache, run's student) on tasks in the evaluation format:
    `data` is a JSONL path or a list of dicts. Returns the summary dict (`n`, `accuracy`, `macro_f1` for choice
    tasks, `ci`...), or `(summary, per-task predictions)` with `predictions=True`."""
    from kdagent.evaluate.runner import check_tasks, evaluate as run_evaluation, load_tasks
    from kdagent.generation.engine import Engine
    from kdagent.models import resolve_model
    from kdagent.records import Task

    tasks = (
        load_tasks(Path(data))
        if isinstance(data, (str, Path))
        else [t if isinstance(t, Task) else Task.model_validate(t) for t in data]
    )
    tasks = tasks[:limit] if limit else tasks
    check_tasks(tasks, str(data) if isinstance(data, (str, Path)) else "tasks")
    skill_obj = None
    if skill:
        from kdagent.plugins import build_plugins

        found = build_plugins()
        if skill not in found.skills:
            raise UserError(f"skill: unknown skill {skill!r} (registered: {', '.join(sorted(found.skills))})")
        skill_obj = found.create("skills", skill)
    path = resolve_model(str(model))
    summary, preds = run_evaluation(Engine(path), tasks, skill_obj, max_new_tokens, batch_size, bootstrap=bootstrap)
    summary["model"] = str(path)
    return (summary, preds) if predictions else summary
