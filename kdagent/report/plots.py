"""The report's figures, drawn with matplotlib (Agg, no display) and returned as base64 PNG strings."""

import base64
import io

from kdagent.report.collect import SCORE_KEYS, scores

COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    _pyplot().close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def score_plot(evaluations: list[tuple[str, dict]]) -> str | None:
    """Each score, baseline then round by round, with its 95% bootstrap interval as an error bar."""
    per_metric = {k: [] for k in SCORE_KEYS}
    for i, (_, entry) in enumerate(evaluations):
        for key, (value, ci) in scores(entry).items():
            per_metric[key].append((i, value, ci))
    per_metric = {k: v for k, v in per_metric.items() if v}
    if not per_metric:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for colour, (key, points) in zip(COLOURS, per_metric.items()):
        xs = [x for x, _, _ in points]
        ys = [y for _, y, _ in points]
        low = [y - ci[0] if ci else 0 for _, y, ci in points]
        high = [ci[1] - y if ci else 0 for _, y, ci in points]
        ax.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=4, color=colour, label=key)
        ax.axhline(ys[0], color=colour, linestyle=":", linewidth=1)  # the baseline, for the eye
    ax.set_xticks(range(len(evaluations)), [label for label, _ in evaluations])
    ax.set_ylim(0, 1)
    ax.set_ylabel("score (95% interval)")
    ax.set_title("Held-out scores: baseline and each round")
    ax.legend(loc="best", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def histogram_plot(evaluations: list[tuple[str, dict]]) -> str | None:
    """Predicted labels of each evaluation beside the gold labels (choice tasks)."""
    rows = [
        (label, e["histogram"]) for label, e in evaluations if isinstance(e.get("histogram"), dict) and e["histogram"]
    ]
    gold = next((e["gold_histogram"] for _, e in evaluations if isinstance(e.get("gold_histogram"), dict)), None)
    if not rows:
        return None
    if gold:
        rows.append(("gold", gold))
    labels = sorted({k for _, h in rows for k in h})
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / len(rows)
    for i, (name, hist) in enumerate(rows):
        colour = "#333333" if name == "gold" else COLOURS[i % len(COLOURS)]
        ax.bar(
            [j + i * width for j in range(len(labels))],
            [hist.get(k, 0) for k in labels],
            width,
            label=name,
            color=colour,
        )
    ax.set_xticks([j + width * (len(rows) - 1) / 2 for j in range(len(labels))], labels)
    ax.set_ylabel("items")
    ax.set_title("Predicted labels on the held-out set")
    ax.legend(fontsize=8)
    return _png(fig)


def loss_plot(rounds: list[dict]) -> str | None:
    series = [(f"round {r['number']} {name}", values) for r in rounds for name, values in r["losses"].items() if values]
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for colour, (name, values) in zip(COLOURS * 4, series):
        ax.plot(range(1, len(values) + 1), values, color=colour, alpha=0.35, linewidth=1)
        window = max(1, len(values) // 20)
        smooth = [
            sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1])
            for i in range(len(values))
        ]
        ax.plot(range(1, len(values) + 1), smooth, color=colour, linewidth=2, label=f"{name} (mean of {window})")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("Training loss per step")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def funnel_plot(rounds: list[dict]) -> str | None:
    rows = [r for r in rounds if r["funnel"]]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.9 + 0.45 * max(len(r["funnel"]) for r in rows) * len(rows)))
    y, ticks = 0, []
    for colour, r in zip(COLOURS * 4, rows):
        for label, n in r["funnel"]:
            ax.barh(y, n, color=colour)
            ax.text(n, y, f" {n}", va="center", fontsize=8)
            ticks.append((y, f"round {r['number']}: {label}"))
            y -= 1
        y -= 0.5
    ax.set_yticks([t for t, _ in ticks], [name for _, name in ticks], fontsize=8)
    ax.set_xlabel("records")
    ax.set_title("Data funnel: what each stage kept")
    return _png(fig)


def stage_plot(rounds: list[dict], key: str, unit: str, title: str) -> str | None:
    rows = [r for r in rounds if r[key]]
    if not rows:
        return None
    stages = list(dict.fromkeys(s for r in rows for s in r[key]))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / len(rows)
    for i, (colour, r) in enumerate(zip(COLOURS * 4, rows)):
        ax.bar(
            [j + i * width for j in range(len(stages))],
            [r[key].get(s, 0) for s in stages],
            width,
            color=colour,
            label=f"round {r['number']}",
        )
    ax.set_xticks([j + width * (len(rows) - 1) / 2 for j in range(len(stages))], stages, fontsize=8)
    ax.set_ylabel(unit)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _png(fig)
