"""benchmarks/distill_quality.py's tables, generated from its JSON alone (`--tables-only`): the whole table of
docs/benchmarks.md and the README's summary, written between their markers, and the machine and commit that
every results file records."""

import os
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _fmt(s: dict | None, metric: str) -> str:
    if not s:
        return ""
    low, high = s["ci"][metric]
    text = f"{s[metric]:.3f} [{low:.3f}, {high:.3f}]"
    if "macro_f1" in s and metric != "accuracy":
        text += f" (acc {s['accuracy']:.3f})"
    return text


def _runs(results: dict) -> list[str]:
    """One line per distinct run that the merged entries come from: its command, commit and date."""
    seen = dict.fromkeys(
        (r.get("command", results["command"]), r.get("commit", results["commit"]), r.get("date", results["date"]))
        for r in results["domains"].values()
        if "skipped" not in r
    )
    return [f"`{c}` (commit {k}, {d})" for c, k, d in seen]


def markdown(results: dict) -> str:
    """The table of docs/benchmarks.md, from the JSON."""
    lines = [
        f"Budget: {results['budget']}. Machine: {results['machine']}. Runs: " + "; ".join(_runs(results)) + ".",
        "",
        "Each score: the metric [bootstrap 95% interval]; n held-out items, disjoint from every training item. "
        "Unseen phrasing: the same items asked in words no training example used.",
        "",
        "| benchmark | n | metric | base | plain TRL SFT | kdagent | unseen phrasing: base / plain SFT / kdagent | kdagent predicted labels | s kdagent / SFT |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in sorted(results["domains"].items()):
        if "skipped" in r:
            lines.append(f"| {name} | | | skipped: {r['skipped']} | | | | | |")
            continue
        m = r["metric"]
        unseen = ""
        if "kdagent_unseen_phrasing" in r:
            unseen = (
                " / ".join(f"{r[f'{who}_unseen_phrasing'][m]:.3f}" for who in ("base", "sft"))
                + f" / {_fmt(r['kdagent_unseen_phrasing'], m)}"
            )
        hist = ", ".join(f"{k} {v}" for k, v in r["kdagent"].get("histogram", {}).items())
        seconds = f"{r['seconds']['kdagent']:.0f} / {r['seconds']['sft']:.0f}" if "seconds" in r else "(scored only)"
        lines.append(
            f"| {name} | {r['n']} | {m} | {_fmt(r['base'], m)} | {_fmt(r['sft'], m)} | {_fmt(r['kdagent'], m)} | {unseen} | {hist} | {seconds} |"
        )
    return "\n".join(lines)


def summary(results: dict) -> str:
    """The README's results table, from the JSON: base, plain SFT and kdagent, each with its interval."""
    lines = [
        f"Measured by `benchmarks/distill_quality.py` ({results['budget']} budget, {results['machine']}): the metric [95% interval] "
        "on n held-out items, never trained on; `docs/benchmarks.md` has the whole table.",
        "",
        "| benchmark | n | metric | base | plain TRL SFT, same labels | kdagent | asked in unseen words: plain SFT / kdagent |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in sorted(results["domains"].items()):
        if "skipped" not in r:
            m = r["metric"]
            unseen = (
                f"{_fmt(r['sft_unseen_phrasing'], m)} / {_fmt(r['kdagent_unseen_phrasing'], m)}"
                if "kdagent_unseen_phrasing" in r
                else ""
            )
            lines.append(
                f"| {name} | {r['n']} | {m} | {_fmt(r['base'], m)} | {_fmt(r['sft'], m)} | {_fmt(r['kdagent'], m)} | {unseen} |"
            )
    return "\n".join(lines)


def write_markdown(
    path: Path, table: str, marker: str = "distill_quality", heading: str = "Distillation quality"
) -> None:
    """`table` between `<!-- marker -->` and `<!-- /marker -->` in `path`, or appended under `heading`."""
    start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{start}\n{table}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + f"\n\n## {heading}\n\n" + block + "\n"
    path.write_text(text)


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    cpu = platform.processor() or "CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} CPU cores, {cpu} (torch {torch.__version__})"


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
