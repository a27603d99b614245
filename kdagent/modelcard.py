"""The model card (README.md) of a run's student: base model, recipe, training data with its provenance,
scores with their 95% intervals. `kdagent run` writes it into the final student folder; `kdagent push`
uploads it with the weights."""

from pathlib import Path

import yaml

from kdagent.report.collect import SCORE_KEYS, evaluations, read_json, scores, side_sets


def final_student(run_dir: Path) -> Path | None:
    """The student the run ended with, when the run trained it (a `round-NN/student` folder); None when the
    last round's gate kept the base model, or no round finished."""
    run_dir = Path(run_dir)
    rounds = (read_json(run_dir / "metrics.json") or {}).get("rounds", [])
    if not rounds:
        return None
    entry = rounds[-1]
    folder = run_dir / f"round-{int(entry.get('round', len(rounds))):02d}" / "student"
    kept = (entry.get("gate") or {}).get("kept_student")
    if kept:  # the gate kept an earlier student: this run's only if it is an earlier round's
        parent = Path(kept).parent.name
        folder = run_dir / parent / "student" if parent.startswith("round-") else None
    if folder is None or not ((folder / "config.json").is_file() or (folder / "adapter_config.json").is_file()):
        return None
    return folder


def _hub_id(model: str) -> str | None:
    """The Hub id a base model came from, when known (an alias's source, or a name that looks like one)."""
    from kdagent.models import ALIASES

    if model in ALIASES:
        return ALIASES[model].hub_id
    if model.count("/") == 1 and not Path(model).expanduser().exists() and not model.startswith((".", "/", "~")):
        return model
    return None


def _score_table(metrics: dict) -> list[str]:
    lines = ["| evaluation | set | n | " + " | ".join(SCORE_KEYS) + " |", "|" + "---|" * (3 + len(SCORE_KEYS))]
    for label, entry in evaluations(metrics):
        for set_name, values in {"held-out": entry, **side_sets(entry)}.items():
            found = scores(values)
            if not found:
                continue
            cells = [
                f"{found[k][0]:.3f}" + (f" [{found[k][1][0]:.3f}, {found[k][1][1]:.3f}]" if found[k][1] else "")
                if k in found
                else ""
                for k in SCORE_KEYS
            ]
            lines.append(f"| {label} | {set_name} | {values.get('n', '')} | " + " | ".join(cells) + " |")
    return lines


def _data_lines(metrics: dict, recipe: dict) -> list[str]:
    teacher = recipe.get("teacher") or {}
    skills = [s.get("name") if isinstance(s, dict) else s for s in recipe.get("skills") or []]
    lines = [
        f"- Teacher: `{teacher.get('kind', '?')}`"
        + (f" ({teacher['model']})" if teacher.get("model") else " (the student itself)"),
        f"- Skill(s): {', '.join(f'`{s}`' for s in skills) or '?'}; domain: `{(recipe.get('domain') or {}).get('name', '?')}`",
        f"- Update: `{(recipe.get('update') or {}).get('method', '?')}`",
        "",
    ]
    lines += [
        "| round | tasks | generations | passed feedback | SFT examples | preference pairs | dropped |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry in metrics.get("rounds", []):
        c = entry.get("counts") or {}
        dropped = ", ".join(f"{k}: {v}" for k, v in (c.get("dropped") or {}).items() if v) or "none"
        lines.append(
            f"| {entry.get('round')} | {c.get('tasks', '')} | {c.get('generations', '')} | {c.get('passed', '')} | "
            f"{c.get('sft_examples', '')} | {c.get('preference_pairs', '')} | {dropped} |"
        )
    lines += [
        "",
        "Every training record in the run directory (`round-NN/sft.jsonl`, `preferences.jsonl`) carries its provenance: "
        "round, teacher, skill, domain, task, generation, the ids of the retrieved passages, and the verdict that admitted it.",
    ]
    return lines


def model_card(run_dir: str | Path) -> str:
    run_dir = Path(run_dir)
    metrics = read_json(run_dir / "metrics.json") or {}
    recipe_text = (run_dir / "recipe.yaml").read_text() if (run_dir / "recipe.yaml").is_file() else ""
    recipe = yaml.safe_load(recipe_text) or {} if recipe_text else {}
    base = str((recipe.get("student") or {}).get("model", "unknown"))
    hub = _hub_id(base)
    name = recipe.get("name") or run_dir.name
    front = {"library_name": "transformers", "pipeline_tag": "text-generation", "tags": ["kdagent", "distillation"]}
    if hub:
        front["base_model"] = hub
    from kdagent.models import ALIASES

    note = f" ({ALIASES[base].description})" if base in ALIASES else ""
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).strip(),
        "---",
        "",
        f"# {name}: a kdagent student",
        "",
        f"Distilled with kdagent from `{base}`{note}"
        + (f", Hub id `{hub}`" if hub else "")
        + f", over {len(metrics.get('rounds', []))} round(s).",
        "",
        "## Scores",
        "",
        "Held-out scores of the base model (baseline) and of each round's student; brackets are 95% bootstrap intervals.",
        "",
        *_score_table(metrics),
        "",
        "## Training data",
        "",
        *_data_lines(metrics, recipe),
        "",
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        'model = AutoModelForCausalLM.from_pretrained("PATH_OR_REPO")',
        'tokenizer = AutoTokenizer.from_pretrained("PATH_OR_REPO")',
        "```",
        "",
        "or `kdagent serve PATH_OR_REPO` for an OpenAI-compatible endpoint, `kdagent chat PATH_OR_REPO` for a conversation.",
        "",
        "## Recipe",
        "",
        "```yaml",
        recipe_text.strip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def write_model_card(run_dir: str | Path) -> Path | None:
    """README.md in the run's final student folder; None when the run kept no student of its own."""
    student = final_student(Path(run_dir))
    if student is None:
        return None
    out = student / "README.md"
    out.write_text(model_card(run_dir), encoding="utf-8")
    return out
