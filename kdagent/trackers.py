"""Per-round scores to the experiment trackers of `update.report_to` (the trainer sends its own per-step
losses there already). Sent from metrics.json each time the loop writes it (after the baseline and after each
round) and once more when the run finishes: TensorBoard gets the held-out scores of the baseline (step 0) and each
round (step N), and each round's data counts, under RUN_DIR/tensorboard/rounds. Each sending rewrites that folder's
one event file from metrics.json, so a round is never there twice, on --resume either."""

import sys
from pathlib import Path

import yaml

from kdagent.report.collect import evaluations, read_json, scores, side_sets


def _trackers(run_dir: Path) -> list[str]:
    path = run_dir / "recipe.yaml"
    recipe = yaml.safe_load(path.read_text()) if path.is_file() else {}
    report_to = ((recipe or {}).get("update") or {}).get("report_to") or []
    return [report_to] if isinstance(report_to, str) else list(report_to)


def round_scalars(metrics: dict) -> list[tuple[str, float, int]]:
    """(tag, value, step): each evaluation's scores by set, and each round's counts."""
    rows = []
    for step, (_, entry) in enumerate(evaluations(metrics)):
        for set_name, values in {"held-out": entry, **side_sets(entry)}.items():
            rows += [(f"eval/{set_name}/{key}", value, step) for key, (value, _) in scores(values).items()]
    for step, entry in enumerate(metrics.get("rounds", []), start=1):
        counts = entry.get("counts") or {}
        rows += [
            (f"counts/{key}", float(value), step) for key, value in counts.items() if isinstance(value, (int, float))
        ]
    return rows


def log_rounds(run_dir: str | Path) -> Path | None:
    """Write the per-round scalars to TensorBoard when the recipe reports to it; the folder, or None."""
    run_dir = Path(run_dir)
    if "tensorboard" not in _trackers(run_dir):
        return None
    from torch.utils.tensorboard import SummaryWriter

    out = run_dir / "tensorboard" / "rounds"
    earlier = list(out.glob("events.out.tfevents.*"))  # replaced by the new one once it is complete
    writer = SummaryWriter(log_dir=str(out))
    try:
        for tag, value, step in round_scalars(read_json(run_dir / "metrics.json") or {}):
            writer.add_scalar(tag, value, step)
    finally:
        writer.close()
    for path in earlier:
        path.unlink(missing_ok=True)
    return out


def send_rounds(run_dir: str | Path, warn=None) -> Path | None:
    """`log_rounds`, where a tracker's failure does not fail the run: it is reported in one line through `warn`."""
    try:
        return log_rounds(run_dir)
    except Exception as exc:  # noqa: BLE001 - the scores are in metrics.json; the next sending writes them all
        (warn or _warn)(f"warning: per-round scores not sent to the trackers ({type(exc).__name__}: {exc})")
        return None


def _warn(line: str) -> None:
    print(line, file=sys.stderr)
