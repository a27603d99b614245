"""The evaluation gate: a round that regresses on a held-out set, or whose predictions collapse onto one label,
keeps the previous student."""

from pathlib import Path

from kdagent.recipe import GateConfig


def _held_out_sets(evaluation: dict) -> dict[str, dict]:
    """The summary of each held-out set of an evaluation: `domain`, `skill:<name>` for each skill's set and
    `domain:<name>` for each cross-checked domain's (`evaluation.cross_check`)."""
    return {
        "domain": evaluation,
        **{f"skill:{k}": v for k, v in evaluation.get("skills", {}).items()},
        **{f"domain:{k}": v for k, v in evaluation.get("domains", {}).items()},
    }


def gate_metric(summary: dict, gate: GateConfig | None = None) -> str:
    """The summary key the gate compares on one held-out set: `gate.metric`, where 'auto' is macro-F1 on a set of
    choice tasks only (accuracy there is the majority label's share for a student that gives every item one label)
    and accuracy otherwise; a set without the named score is compared on accuracy."""
    metric = (gate or GateConfig()).metric
    if metric == "auto":
        metric = "macro_f1" if "by_kind" not in summary else "accuracy"
    return metric if metric in summary else "accuracy"


def set_scores(evaluation: dict, gate: GateConfig | None = None) -> dict[str, float]:
    """The gate's score (`gate_metric`) on each held-out set of an evaluation, by set."""
    return {k: s[gate_metric(s, gate)] for k, s in _held_out_sets(evaluation).items()}


def collapsed_label(summary: dict, max_share: float) -> dict | None:
    """The label that a set's predictions give `max_share` of the items or more, when the gold answers' most
    frequent label has less than that share (`histogram`, `gold_histogram`); None otherwise."""
    predicted, gold = summary.get("histogram"), summary.get("gold_histogram")
    if not predicted or not gold:
        return None
    label = max(predicted, key=predicted.__getitem__)
    share = predicted[label] / sum(predicted.values())
    if share >= max_share and max(gold.values()) / sum(gold.values()) < max_share:
        return {"label": label, "share": round(share, 4)}
    return None


def raised(best: dict[str, float], scores: dict[str, float]) -> dict[str, float]:
    """The best score so far on each held-out set, with a kept student's `scores`."""
    return {**best, **{k: max(best.get(k, v), v) for k, v in scores.items()}}


def apply_gate(
    gate, entry: dict, best: dict[str, float], previous: Path, student: Path
) -> tuple[Path, dict[str, float]]:
    """The evaluation gate: a round more than `gate.max_regression` below the best score so far on any held-out
    set (`set_scores`), or whose predictions on a set collapse onto one label (`collapsed_label`), keeps the
    previous student (recorded in `entry`). Returns the student to go on with and the best scores of the kept
    students, by set."""
    scores = set_scores(entry["eval"], gate)
    if gate is None:
        return student, raised(best, scores)
    sets = _held_out_sets(entry["eval"])
    metrics = {k: gate_metric(s, gate) for k, s in sets.items()}
    floors = {
        k: best.get(k, v) - gate.max_regression for k, v in scores.items()
    }  # a set new to the run has no best yet
    collapsed = {k: c for k, s in sets.items() if (c := collapsed_label(s, gate.max_label_share))}
    failed = [k for k, v in scores.items() if v < floors[k] - 1e-12 or k in collapsed]
    record = {
        "passed": not failed,
        "metric": metrics["domain"],
        "best_so_far": best["domain"],
        "floor": round(floors["domain"], 4),
    }
    for group in ("skill", "domain"):  # the skills' sets, and the cross-checked domains' (gate.skills, gate.domains)
        part = {
            k.split(":", 1)[1]: {
                metrics[k]: v,
                "best_so_far": best.get(k, v),
                "floor": round(floors[k], 4),
                "passed": k not in failed,
            }
            for k, v in scores.items()
            if k.startswith(f"{group}:")
        }
        if part:
            record[f"{group}s"] = part
    if collapsed:
        record["collapsed"] = collapsed
    if failed:
        record["failed"] = failed
    entry["gate"] = record
    if not failed:
        return student, raised(best, scores)
    entry["gate"]["kept_student"] = entry["student"] = str(previous)
    return previous, best
