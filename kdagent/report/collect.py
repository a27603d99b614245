"""Reads a run directory into the plain values the report shows: scores with their intervals, prediction
histograms, losses, the data funnel with its drop reasons, time and memory per stage, and sample records."""

import json
import re
from pathlib import Path

SCORE_KEYS = ("accuracy", "macro_f1", "balanced_accuracy")
FUNNEL = (  # (label, key in a round's counts), in the order records flow
    ("tasks", "tasks"),
    ("generations", "generations"),
    ("passed feedback", "passed"),
    ("SFT examples", "sft_examples"),
    ("preference pairs", "preference_pairs"),
)
STAGE_FILES = ("tasks", "grounded", "generations", "feedback", "sft", "preferences")


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _lines(path: Path):
    """JSON objects of a JSONL file, skipping lines that do not parse (a report never fails on one)."""
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                yield row


def scores(entry: dict) -> dict:
    """{metric: (value, (low, high) | None)} of one evaluation."""
    ci = entry.get("ci") or {}
    return {
        k: (entry[k], tuple(ci[k]) if k in ci else None) for k in SCORE_KEYS if isinstance(entry.get(k), (int, float))
    }


def evaluations(metrics: dict) -> list[tuple[str, dict]]:
    """[(label, eval)] for the baseline and each round."""
    out = [("baseline", metrics.get("baseline") or {})]
    out += [(f"round {r.get('round', i + 1)}", r.get("eval") or {}) for i, r in enumerate(metrics.get("rounds", []))]
    return out


def side_sets(entry: dict) -> dict[str, dict]:
    """The other scored sets of one evaluation: unseen phrasing, each skill's set, cross-checked domains."""
    out = {}
    if isinstance(entry.get("unseen_phrasing"), dict):
        out["unseen phrasing"] = entry["unseen_phrasing"]
    for group in ("skills", "domains"):
        for name, value in (entry.get(group) or {}).items():
            if isinstance(value, dict):
                out[f"{group[:-1]} {name}"] = value
    return out


def losses(round_entry: dict) -> dict[str, list[float]]:
    """{method: per-step losses} of one round's update (one method, or several run in order)."""
    update = round_entry.get("update") or {}
    if isinstance(update.get("losses"), list):
        return {"update": update["losses"]}
    return {
        name: rep["losses"]
        for name, rep in update.items()
        if isinstance(rep, dict) and isinstance(rep.get("losses"), list)
    }


def funnel(round_entry: dict) -> list[tuple[str, int]]:
    counts = round_entry.get("counts") or {}
    return [(label, counts[key]) for label, key in FUNNEL if isinstance(counts.get(key), int)]


def drop_reasons(run_dir: Path, round_entry: dict, number: int) -> list[tuple[str, str, int]]:
    """[(stage, reason, count)] from each stage's counts file, else from the round's counts."""
    rows = []
    folder = run_dir / f"round-{number:02d}"
    for stage in STAGE_FILES:
        data = read_json(folder / f"{stage}.counts.json")
        if isinstance(data, dict):
            rows += [(stage, reason, n) for reason, n in (data.get("dropped") or {}).items() if isinstance(n, int)]
            if data.get("teacher_failures"):
                rows.append((stage, "teacher_failures", data["teacher_failures"]))
    if not rows:
        rows = [("round", reason, n) for reason, n in ((round_entry.get("counts") or {}).get("dropped") or {}).items()]
    return rows


def _last_user(messages) -> str:
    for message in reversed(messages or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


def _reply(messages) -> str:
    return "\n".join(str(m.get("content", "")) for m in messages or [] if isinstance(m, dict))


def kept_samples(folder: Path, limit: int) -> list[dict]:
    """Training records: SFT examples, else preference pairs (chosen and rejected replies)."""
    out = []
    for row in _lines(folder / "sft.jsonl"):
        out.append(
            {
                "prompt": _last_user(row.get("prompt")),
                "reply": _reply(row.get("completion")),
                "provenance": row.get("provenance") or {},
            }
        )
        if len(out) >= limit:
            return out
    for row in _lines(folder / "preferences.jsonl"):
        if len(out) >= limit:
            break
        reply = f"chosen:\n{_reply(row.get('chosen'))}\n\nrejected:\n{_reply(row.get('rejected'))}"
        out.append(
            {
                "prompt": _last_user(row.get("prompt")),
                "reply": reply,
                "provenance": {**(row.get("provenance") or {}), "margin": row.get("margin")},
            }
        )
    return out


def rejected_samples(folder: Path, limit: int) -> list[dict]:
    """Replies the feedback turned away, with the verdict and the generation's provenance."""
    verdicts = {}
    for row in _lines(folder / "feedback.jsonl"):
        if not row.get("passed") and row.get("generation_id"):
            verdicts[row["generation_id"]] = row
            if len(verdicts) >= limit:
                break
    out = []
    for gen in _lines(folder / "generations.jsonl"):
        verdict = verdicts.get(gen.get("id"))
        if verdict is None:
            continue
        provenance = {k: gen.get(k) for k in ("round", "teacher", "skill", "task_id", "passage_ids")}
        provenance["generation_id"] = gen.get("id")
        provenance["feedback"] = {k: verdict.get(k) for k in ("verifier", "passed", "score", "predicted", "reason")}
        out.append({"prompt": _last_user(gen.get("messages")), "reply": gen.get("text", ""), "provenance": provenance})
        if len(out) >= limit:
            break
    return out


def collect(run_dir: Path, samples: int = 3) -> dict:
    run_dir = Path(run_dir)
    metrics = read_json(run_dir / "metrics.json")
    if not isinstance(metrics, dict):
        raise FileNotFoundError(
            f"{run_dir / 'metrics.json'} is missing or unreadable: is {run_dir} a kdagent run directory?"
        )
    rounds = []
    for i, entry in enumerate(metrics.get("rounds", [])):
        number = int(entry.get("round", i + 1))
        folder = run_dir / f"round-{number:02d}"
        rounds.append(
            {
                "number": number,
                "funnel": funnel(entry),
                "drops": drop_reasons(run_dir, entry, number),
                "seconds": entry.get("seconds") or {},
                "memory": entry.get("peak_gpu_allocated_mb") or entry.get("peak_rss_mb") or {},
                "memory_kind": "peak GPU allocated" if entry.get("peak_gpu_allocated_mb") else "peak RSS",
                "losses": losses(entry),
                "gate": entry.get("gate"),
                "kept": kept_samples(folder, samples),
                "rejected": rejected_samples(folder, samples),
            }
        )
    recipe = (run_dir / "recipe.yaml").read_text() if (run_dir / "recipe.yaml").is_file() else ""
    match = re.search(r"^name:\s*(.+)$", recipe, re.MULTILINE)
    return {
        "run_dir": str(run_dir),
        "name": match.group(1).strip().strip("'\"") if match else run_dir.name,
        "recipe": recipe,
        "evaluations": evaluations(metrics),
        "baseline_seconds": (metrics.get("baseline") or {}).get("seconds"),
        "rounds": rounds,
        "memory_plan": read_json(run_dir / "memory-plan.json"),
        "inputs": read_json(run_dir / "inputs.counts.json"),
    }
