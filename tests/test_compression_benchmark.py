"""benchmarks/compression.py runs end to end in its quick mode (a handful of finance examples, 30 held-out
sentences, a 4-layer student cut from the teacher): the teacher, the shrunk student by SFT alone, the student
distilled from the teacher's logit cache and on-policy, each through its own `kdagent run`. The embedded model
stands in for a finance-tuned teacher; the numbers are not the point, the JSON and the table are."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


def test_compression_quick_mode_writes_every_arm_and_the_table(tmp_path, smollm_path, shared_data):
    if not (shared_data / "financial_phrasebank").exists():
        pytest.skip(f"the finance data ({shared_data / 'financial_phrasebank'}) is absent")
    results, table = tmp_path / "compression.json", tmp_path / "benchmarks.md"
    table.write_text(
        "# Benchmarks\n\nintro kept\n\n## Compression\n\n<!-- compression -->\nold\n<!-- /compression -->\n\nafter\n"
    )
    script = str(REPO / "benchmarks" / "compression.py")
    result = subprocess.run(
        [
            sys.executable,
            script,
            "--quick",
            "--teacher",
            str(smollm_path),
            "--data",
            str(shared_data),
            "--work",
            str(tmp_path / "work"),
            "--json",
            str(results),
            "--markdown",
            str(table),
            "--bootstrap",
            "50",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "%|" not in result.stderr  # not a terminal: plain lines, no progress bars (as `kdagent run`)
    out = json.loads(result.stdout)
    assert json.loads(results.read_text()) == out
    assert out["domain"] == "finance" and out["quick"] and out["layers"] == 4 and out["teacher_layers"] == 30
    assert out["commit"] and out["commit"] != "unknown"

    arms = out["arms"]
    assert set(arms) == {"teacher", "shrunk_untrained", "sft", "kd_skew_kl", "kd_on_policy"}
    n = arms["teacher"]["n"]
    assert n == 30
    for name, a in arms.items():
        assert a["n"] == n, name  # every arm on the same held-out items
        assert a["ci"][0] <= a["macro_f1"] <= a["ci"][1], name
        assert sum(a["histogram"].values()) == n, name
    assert arms["teacher"]["params"] > 2 * arms["sft"]["params"]  # 4 of 30 layers
    assert arms["teacher"]["disk_mb"] > arms["sft"]["disk_mb"] > 0
    trained = [arms[k] for k in ("sft", "kd_skew_kl", "kd_on_policy")]
    assert len({a["examples"] for a in trained}) == 1 and trained[0]["examples"] > 0  # the same curated examples
    for a in trained:
        assert a["steps"] >= 1 and a["train_seconds"] > 0 and a["peak_rss_mb"] > 0 and a["train_tokens_per_s"] > 0
        assert a["tokens_per_s"] > 0 and a["generation"]["new_tokens"] == arms["teacher"]["generation"]["new_tokens"]
    assert arms["kd_skew_kl"]["method"] == "distill_cached" and arms["kd_skew_kl"]["loss"] == "skew_kl"
    assert arms["kd_skew_kl"]["cache_hit"]  # built once beforehand: the arm trained with no teacher loaded
    assert arms["kd_on_policy"]["method"] == "distill" and arms["kd_on_policy"]["trainer"] == "distillation"

    # the keys
    for who in ("teacher", "sft", "kd"):
        for key in ("macro_f1", "ci", "params", "tokens_per_s"):
            assert out[who][key] is not None, (who, key)
    for who in ("sft", "kd"):
        assert out[who]["train_tokens_per_s"] > 0 and out[who]["peak_rss_mb"] > 0
    assert out["kd"]["arm"] in ("kd_skew_kl", "kd_on_policy")
    for key in ("minus_sft", "share_of_teacher"):  # paired on the same items, for every distilled arm
        for name in ("kd_skew_kl", "kd_on_policy"):
            assert arms[name][key]["ci"][0] <= arms[name][key]["macro_f1"] <= arms[name][key]["ci"][1], (name, key)
        assert out["kd"][key] == arms[out["kd"]["arm"]][key]
    gain = arms["kd_skew_kl"]["minus_sft"]["macro_f1"]
    assert abs(gain - (arms["kd_skew_kl"]["macro_f1"] - arms["sft"]["macro_f1"])) < 2e-4
    assert out["kd"]["macro_f1"] == max(arms[k]["macro_f1"] for k in ("kd_skew_kl", "kd_on_policy"))
    assert out["cache"]["k"] == 32 and 0 < out["cache"]["bytes_per_token"] < 1000
    targets = out["targets"]
    assert {
        "kd_keeps_90pct_teacher_f1",
        "kd_beats_sft_by_3_points",
        "kd_1_7x_teacher_tokens_per_s",
        "cache_400_bytes_per_token_at_k32",
    } <= set(targets)
    assert all(isinstance(v, bool) for v in targets.values())
    assert targets["cache_400_bytes_per_token_at_k32"] == (out["cache"]["bytes_per_token"] <= 400)

    # the table replaces the marked block only, one row per arm, generated from the JSON
    text = table.read_text()
    assert text.startswith("# Benchmarks\n\nintro kept\n") and text.endswith("<!-- /compression -->\n\nafter\n")
    assert "old" not in text and text.count("<!-- compression -->") == 1
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0].strip("| ").removesuffix(" (best)") for r in rows[1:]] == list(arms)
    assert f"{arms['teacher']['macro_f1']:.3f} [" in rows[1]

    # --tables-only regenerates the same table from the JSON alone
    table.write_text("# Benchmarks\n\n<!-- compression -->\nstale\n<!-- /compression -->\n")
    again = subprocess.run(
        [sys.executable, script, "--tables-only", "--json", str(results), "--markdown", str(table)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert [line for line in table.read_text().splitlines() if line.startswith("| ")] == rows

    # another domain's table goes between its own markers, and the finance table stays as it is
    law_json = tmp_path / "compression_law.json"
    law_json.write_text(json.dumps({**json.loads(results.read_text()), "domain": "law"}))
    args = ["--domain", "law", "--tables-only", "--json", str(law_json), "--markdown", str(table)]
    again = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    text = table.read_text()
    assert "## Compression (law)\n\n<!-- compression-law -->\n" in text and text.endswith("<!-- /compression-law -->\n")
    assert text.count("| teacher") == 2 and "stale" not in text


def test_compression_law_without_its_data_exits_2_naming_it(tmp_path):
    (tmp_path / "financial_phrasebank").mkdir()  # finance's data alone
    script = str(REPO / "benchmarks" / "compression.py")
    args = ["--domain", "law", "--data", str(tmp_path), "--json", str(tmp_path / "c.json")]
    done = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=120)
    assert (
        done.returncode == 2
        and done.stderr.strip() == f"compression: the law data in {tmp_path} is absent; nothing to run"
    )
    assert not (tmp_path / "c.json").exists()


def test_paired_resamples_the_same_items_for_both_arms(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    from compression_tables import paired

    from kdagent.evaluate.grading import macro_f1

    gold = ["a", "b", "c"] * 20
    better = [g if i % 4 else "a" for i, g in enumerate(gold)]  # right three times in four
    worse = [g if i % 2 else "a" for i, g in enumerate(gold)]  # right one time in two
    for name, predicted in (("better", better), ("worse", worse)):
        rows = [{"id": f"t{i}", "answer": g, "predicted": p} for i, (g, p) in enumerate(zip(gold, predicted))]
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reversed(rows)))
    diff = paired(tmp_path / "better.jsonl", tmp_path / "worse.jsonl", 500)
    assert diff["macro_f1"] == round(macro_f1(gold, better) - macro_f1(gold, worse), 4) > 0
    assert 0 < diff["ci"][0] <= diff["macro_f1"] <= diff["ci"][1]  # the same items each time: the gap stays positive
    share = paired(tmp_path / "better.jsonl", tmp_path / "worse.jsonl", 500, ratio=True)
    assert share["macro_f1"] == round(macro_f1(gold, better) / macro_f1(gold, worse), 4)
    assert paired(tmp_path / "better.jsonl", tmp_path / "better.jsonl", 200) == {"macro_f1": 0.0, "ci": [0.0, 0.0]}
    (tmp_path / "short.jsonl").write_text(json.dumps({"id": "t0", "answer": "a", "predicted": "a"}) + "\n")
    with pytest.raises(ValueError, match="score different held-out items"):
        paired(tmp_path / "better.jsonl", tmp_path / "short.jsonl", 10)
