"""benchmarks/compression.py's summary and table: the issue's keys and targets from the measured arms, the paired
comparison of two arms on the same held-out items, and the Markdown table of docs/benchmarks.md, generated from the
JSON alone (`--tables-only`)."""

from pathlib import Path

TARGETS = {
    "f1_vs_teacher": 0.9,  # the distilled student keeps at least this share of the teacher's macro-F1
    "f1_over_sft": 0.03,  # and beats SFT alone by this much
    "speedup": 1.7,  # its greedy tokens/s against the teacher's
    "peak_rss_vs_sft": 1.1,  # training from the cache: peak memory within 10% of SFT's
    "train_speed_vs_sft": 0.8,  # and at least 80% of its train tokens/s
    "bytes_per_token_at_k32": 400,
}


SUMMARY_KEYS = ("macro_f1", "ci", "accuracy", "n", "params", "disk_mb", "tokens_per_s")
STUDENT_KEYS = ("train_tokens_per_s", "peak_rss_mb", "train_seconds")
PAIRED_KEYS = ("minus_sft", "share_of_teacher")


def paired(a: Path, b: Path, resamples: int, ratio: bool = False) -> dict:
    """Macro-F1 of the predictions `a` against `b` on the same held-out items, with a paired bootstrap 95% interval
    (each resample draws the same items for both): the difference a - b, or with `ratio`, a / b."""
    from kdagent.evaluate.grading import bootstrap_ci, macro_f1
    from kdagent.jsonl import read_jsonl

    other = {r["id"]: r["predicted"] for r in read_jsonl(b)}
    mine = list(read_jsonl(a))
    if {r["id"] for r in mine} != set(other):
        raise ValueError(f"{a} and {b} score different held-out items")
    items = [(r["answer"], r["predicted"], other[r["id"]]) for r in mine]

    def stat(picked: list, _) -> float:
        gold = [g for g, _, _ in picked]
        fa, fb = macro_f1(gold, [p for _, p, _ in picked]), macro_f1(gold, [q for _, _, q in picked])
        return (fa / fb if fb else 0.0) if ratio else fa - fb

    low, high = bootstrap_ci(items, items, stat, resamples)
    return {"macro_f1": round(stat(items, None), 4), "ci": [round(low, 4), round(high, 4)]}


def summarise(measured: dict) -> dict:
    """The issue's keys: `teacher`, `sft`, `kd` (the best distilled arm by macro-F1), `cache`, and the targets."""
    arms = measured["arms"]
    pick = lambda a, keys: {k: a.get(k) for k in keys}  # noqa: E731
    out = {"teacher": pick(arms["teacher"], SUMMARY_KEYS), "sft": pick(arms["sft"], SUMMARY_KEYS + STUDENT_KEYS)}
    distilled = {k: a for k, a in arms.items() if k.startswith("kd_")}
    best = max(distilled, key=lambda k: arms[k]["macro_f1"]) if distilled else None
    out["kd"] = {"arm": best, **pick(arms[best], SUMMARY_KEYS + STUDENT_KEYS + PAIRED_KEYS)} if best else None
    cache = measured["cache"]
    out["cache"] = {"k": cache["k"], "bytes_per_token": cache["bytes_per_token"]} if cache else None
    targets: dict = {}
    if best:
        t, s, kd = out["teacher"], out["sft"], out["kd"]
        targets["kd_keeps_90pct_teacher_f1"] = kd["macro_f1"] >= TARGETS["f1_vs_teacher"] * t["macro_f1"]
        targets["kd_beats_sft_by_3_points"] = kd["macro_f1"] - s["macro_f1"] >= TARGETS["f1_over_sft"]
        targets["kd_1_7x_teacher_tokens_per_s"] = kd["tokens_per_s"] >= TARGETS["speedup"] * t["tokens_per_s"]
        cached = [a for k, a in distilled.items() if a["method"] == "distill_cached"]
        if cached and s.get("peak_rss_mb") and s.get("train_tokens_per_s"):
            targets["cached_peak_rss_within_10pct_of_sft"] = all(
                a["peak_rss_mb"] <= TARGETS["peak_rss_vs_sft"] * s["peak_rss_mb"] for a in cached
            )
            targets["cached_train_tokens_per_s_80pct_of_sft"] = all(
                a["train_tokens_per_s"] >= TARGETS["train_speed_vs_sft"] * s["train_tokens_per_s"] for a in cached
            )
    if cache:
        targets["cache_400_bytes_per_token_at_k32"] = (
            cache["bytes_per_token"] <= TARGETS["bytes_per_token_at_k32"] if cache["k"] == 32 else None
        )
    out["targets"] = targets
    return out


def _f1(a: dict) -> str:
    low, high = a["ci"]
    return f"{a['macro_f1']:.3f} [{low:.3f}, {high:.3f}]"


def markdown(results: dict) -> str:
    """The table of docs/benchmarks.md, from the JSON."""
    arms = results["arms"]
    teacher_tps = arms["teacher"].get("tokens_per_s")
    cache = results.get("cache")
    lines = [
        f"Run: `{results['command']}` (commit {results['commit']}, {results['date']}). Machine: {results['machine']}. "
        f"Teacher `{results['teacher_model']}` ({results['teacher_layers']} layers); student: {results['layers']} of "
        f"its layers (kdagent's shrink), {results['epochs']:g} epoch(s) on the same curated examples for every arm.",
        "",
        "Macro-F1 [bootstrap 95% interval] on n held-out items; tokens/s: greedy generation on the same "
        "held-out prompts; train s, tokens/s and peak RSS: the update stage of each arm's own `kdagent run`.",
        "",
        "| arm | n | macro-F1 | acc | params (M) | disk MiB | gen tokens/s (x teacher) | train s | train tokens/s | peak RSS MiB | predicted labels |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, a in arms.items():
        tps = a.get("tokens_per_s")
        speed = f"{tps:.1f}" + (f" ({tps / teacher_tps:.2f}x)" if name != "teacher" else "") if tps else ""
        label = name + (" (best)" if results.get("kd") and results["kd"]["arm"] == name else "")
        hist = ", ".join(f"{k} {v}" for k, v in a.get("histogram", {}).items())
        lines.append(
            f"| {label} | {a['n']} | {_f1(a)} | {a['accuracy']:.3f} | {a['params'] / 1e6:.1f} | {a['disk_mb']:.0f} | "
            f"{speed} | {a.get('train_seconds', '')} | {a.get('train_tokens_per_s', '')} | {a.get('peak_rss_mb', '')} | {hist} |"
        )
    if cache:
        lines += [
            "",
            f"Logit cache: k = {cache['k']}, {cache['bytes_per_token']} bytes per completion token, "
            f"{cache['completion_tokens']} completion tokens, "
            + (
                "found already built (this --work's earlier run)."
                if cache.get("hit")
                else f"built in {cache['seconds']} s."
            ),
        ]
    kd = results.get("kd") or {}
    if kd.get("minus_sft") and kd.get("share_of_teacher"):
        gain, share = kd["minus_sft"], kd["share_of_teacher"]
        lines += [
            "",
            f"Paired on the same held-out items (bootstrap 95%): {kd['arm']} minus sft, macro-F1 "
            f"{gain['macro_f1']:+.3f} [{gain['ci'][0]:+.3f}, {gain['ci'][1]:+.3f}]; {kd['arm']} over the teacher "
            f"{share['macro_f1']:.3f} [{share['ci'][0]:.3f}, {share['ci'][1]:.3f}] of its macro-F1.",
        ]
    if results.get("targets"):
        lines += [
            "",
            "Targets: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in results["targets"].items()) + ".",
        ]
    return "\n".join(lines)
