"""`kdagent report RUN_DIR`: one self-contained report.html (inline CSS, plots as base64 PNG) from a run
directory's files. It reads only what the run wrote, so it works on a finished, a stopped or an old run."""

import json
import os
from html import escape
from pathlib import Path

from kdagent.report import plots
from kdagent.report.collect import SCORE_KEYS, collect, scores, side_sets

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f2f2f2}img.plot{display:block;max-width:100%;margin:.6em 0;border:1px solid #eee}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.8em;white-space:pre-wrap;max-height:24em}
.sample td{max-width:28em}.muted{color:#777}
"""


def _table(header: list[str], rows: list[list], cls: str = "") -> str:
    if not rows:
        return '<p class="muted">(nothing recorded)</p>'
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _img(png: str | None, alt: str) -> str:
    if png is None:
        return f'<p class="muted">({escape(alt)}: nothing to plot in this run)</p>'
    return f'<img class="plot" alt="{escape(alt)}" src="data:image/png;base64,{png}">'


def _score_cell(value, ci) -> str:
    return f"{value:.3f}" + (f' <span class="muted">[{ci[0]:.3f}, {ci[1]:.3f}]</span>' if ci else "")


def _score_rows(evaluations) -> list[list]:
    rows = []
    for label, entry in evaluations:
        sets = {"held-out": entry, **side_sets(entry)}
        for set_name, values in sets.items():
            found = scores(values)
            if found:
                rows.append(
                    [
                        escape(label),
                        escape(set_name),
                        str(values.get("n", "")),
                        *[_score_cell(*found[k]) if k in found else "" for k in SCORE_KEYS],
                    ]
                )
    return rows


def _sample_rows(samples: list[dict], cut: int = 600) -> list[list]:
    def short(text: str) -> str:
        text = str(text)
        return escape(text if len(text) <= cut else text[: cut // 2] + " [...] " + text[-cut // 2 :])

    return [
        [
            f"<pre>{short(s['prompt'])}</pre>",
            f"<pre>{short(s['reply'])}</pre>",
            f"<pre>{escape(json.dumps(s['provenance'], indent=1, ensure_ascii=False))}</pre>",
        ]
        for s in samples
    ]


def render(data: dict) -> str:
    rounds = data["rounds"]
    parts = [
        f"<h1>kdagent run report: {escape(data['name'])}</h1>",
        f'<p class="muted">{escape(data["run_dir"])}: baseline and {len(rounds)} round(s)</p>',
        '<h2 id="scores">Scores against the baseline</h2>',
        _img(plots.score_plot(data["evaluations"]), "scores per round"),
        _table(["evaluation", "set", "n", *SCORE_KEYS], _score_rows(data["evaluations"]), "scores"),
        '<p class="muted">Brackets: 95% bootstrap intervals over the held-out items.</p>',
        '<h2 id="predictions">Prediction histogram</h2>',
        _img(plots.histogram_plot(data["evaluations"]), "prediction histogram"),
        '<h2 id="loss">Training loss</h2>',
        _img(plots.loss_plot(rounds), "loss curves"),
        '<h2 id="funnel">Data funnel</h2>',
        _img(plots.funnel_plot(rounds), "data funnel"),
        _table(
            ["round", "stage", "records"],
            [[str(r["number"]), escape(label), str(n)] for r in rounds for label, n in r["funnel"]],
            "funnel",
        ),
        "<h3>Drop reasons</h3>",
        _table(
            ["round", "stage", "reason", "records"],
            [
                [str(r["number"]), escape(stage), escape(reason), str(n)]
                for r in rounds
                for stage, reason, n in r["drops"]
            ],
            "drops",
        ),
    ]
    gates = [[str(r["number"]), escape(json.dumps(r["gate"]))] for r in rounds if r["gate"]]
    if gates:
        parts += ["<h3>Gate</h3>", _table(["round", "verdict"], gates, "gate")]
    parts += [
        '<h2 id="resources">Time and memory per stage</h2>',
        _img(plots.stage_plot(rounds, "seconds", "seconds", "Time per stage"), "time per stage"),
        _img(plots.stage_plot(rounds, "memory", "MiB", "Peak memory per stage"), "memory per stage"),
        _table(
            ["round", "stage", "seconds", "peak MiB"],
            [
                [str(r["number"]), escape(s), f"{r['seconds'].get(s, '')}", f"{r['memory'].get(s, '')}"]
                for r in rounds
                for s in dict.fromkeys([*r["seconds"], *r["memory"]])
            ],
            "resources",
        ),
    ]
    if data["baseline_seconds"] is not None:
        parts.append(f'<p class="muted">Baseline evaluation: {data["baseline_seconds"]} s.</p>')
    if data["memory_plan"]:
        parts.append(f"<h3>Memory plan</h3><pre>{escape(json.dumps(data['memory_plan'], indent=1))}</pre>")
    parts.append('<h2 id="samples">Sample records</h2>')
    if not rounds:
        parts.append('<p class="muted">(no round has finished yet)</p>')
    for r in rounds:
        parts += [
            f"<h3>Round {r['number']}: kept (training records)</h3>",
            _table(["prompt", "reply", "provenance"], _sample_rows(r["kept"]), "sample kept"),
            f"<h3>Round {r['number']}: rejected by feedback</h3>",
            _table(["prompt", "reply", "provenance"], _sample_rows(r["rejected"]), "sample rejected"),
        ]
    parts.append(f'<h2 id="recipe">Recipe</h2><pre>{escape(data["recipe"])}</pre>')
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>kdagent report: {escape(data["name"])}</title>'
        f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )


def write_report(run_dir: str | Path, output: str | Path | None = None, samples: int = 3) -> Path:
    """Write `RUN_DIR/report.html` (or `output`) and return its path."""
    run_dir = Path(run_dir)
    out = Path(output) if output else run_dir / "report.html"
    text = render(collect(run_dir, samples))
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    return out
