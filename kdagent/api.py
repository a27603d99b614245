"""The Python API: `kdagent.load_recipe`, `kdagent.run` and `kdagent.evaluate` (docs/api.md). The command line
calls the same functions, so a run started from Python writes the same run directory, report and model card."""

import copy
import sys
from pathlib import Path
from typing import Any

from kdagent.errors import UserError
from kdagent.evaluate.score import evaluate_model as evaluate  # noqa: F401 (the API's kdagent.evaluate)


def _merge(base: dict, overrides: dict) -> dict:
    """`overrides` laid over `base`: a dict merges into the section it names, anything else replaces it."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_recipe(recipe, **overrides: Any):
    """A validated `Recipe` from a YAML path, a dict or a `Recipe`, with `overrides` laid over it:
    `load_recipe("recipes/quickstart.yaml", loop={"rounds": 2}, student={"model": "org/name"})`.
    A problem is a `kdagent.errors.UserError` naming the field."""
    from pydantic import ValidationError

    from kdagent.recipe import Recipe
    from kdagent.recipe_io import format_validation_error, read_yaml

    if isinstance(recipe, Recipe):
        data, source = recipe.model_dump(mode="json", exclude_unset=True), recipe.name
    elif isinstance(recipe, dict):
        data, source = recipe, "recipe"
    else:
        data, source = read_yaml(Path(recipe)), str(recipe)
        data.setdefault("name", Path(recipe).stem)
    if isinstance(data.get("skills"), list):
        data["skills"] = [{"name": v} if isinstance(v, str) else v for v in data["skills"]]
    data = _merge(data, overrides)
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_validation_error(source, exc)) from None


def finish_run(run_dir: Path, warn=None) -> dict[str, Path | None]:
    """What a run writes once its rounds are done: `report.html`, the final student's model card, and the
    per-round scores for the trackers of `update.report_to` (kdagent.trackers). A failure here does not fail
    the run (its results are on disk): it is reported through `warn`."""
    warn = warn or (lambda line: print(line, file=sys.stderr))
    written: dict[str, Path | None] = {"report": None, "model_card": None}
    try:
        from kdagent.report import write_report

        written["report"] = write_report(run_dir)
    except Exception as exc:  # noqa: BLE001 - the run finished; the report can be written again with `kdagent report`
        warn(f"warning: report.html not written ({type(exc).__name__}: {exc}); try `kdagent report {run_dir}`")
    try:
        from kdagent.modelcard import write_model_card

        written["model_card"] = write_model_card(run_dir)
    except Exception as exc:  # noqa: BLE001
        warn(f"warning: model card not written ({type(exc).__name__}: {exc})")
    from kdagent.trackers import send_rounds

    send_rounds(run_dir, warn)  # the loop sent them as each round ended; a failure then is mended here
    return written


def run(recipe, run_dir: str | Path | None = None, resume: bool = False, plugins=None, **overrides: Any) -> dict:
    """Run a recipe (path, dict or `Recipe`, with `overrides` as in `load_recipe`) into `run_dir` (default
    `runs/<name>`), then write its report and model card. Returns the run's metrics (metrics.json)."""
    from kdagent.home import force_offline
    from kdagent.loop.runner import run_recipe
    from kdagent.models.registry import allow_download

    if not allow_download():
        force_offline()
    parsed = load_recipe(recipe, **overrides)
    if plugins is None:
        from kdagent.plugins import build_plugins

        plugins = build_plugins()
    run_dir = Path(run_dir) if run_dir else Path("runs") / parsed.name
    metrics = run_recipe(parsed, run_dir, plugins, resume=resume)
    finish_run(run_dir)
    return metrics
