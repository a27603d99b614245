"""The benchmarks run end to end (on a tiny config-built model, a few tasks): they print the JSON the
README describes and write the Markdown table. Their numbers come from real runs documented in
docs/benchmarks.md; these tests only keep the scripts working."""

import json
import os
import subprocess
import sys

from conftest import REPO


def test_distill_quality_runs_kdagent_and_plain_sft_and_merges_its_json(tmp_path, tiny_model_dir, shared_data):
    table, results, readme = tmp_path / "bench.md", tmp_path / "results.json", tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- results -->\nold\n<!-- /results -->\n\nafter\n")
    table.write_text("# Benchmarks\n\nintro kept\n")
    results.write_text(json.dumps({"budget": "small", "domains": {"law": {"skipped": "data folder x is absent"}}}))
    command = [
        sys.executable,
        str(REPO / "benchmarks" / "distill_quality.py"),
        "--domain",
        "finance",
        "--data",
        str(shared_data),
        "--work",
        str(tmp_path / "work"),
        "--markdown",
        str(table),
        "--json",
        str(results),
        "--bootstrap",
        "50",
        "--readme",
        str(readme),
        "--set",
        f"student.model={tiny_model_dir}",
        "--set",
        "domain.seed_tasks=6",
        "--set",
        "domain.eval_tasks=4",
        "--set",
        "retrieval.enabled=false",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "%|" not in result.stderr  # not a terminal: plain lines, no progress bars (as `kdagent run`)
    out = json.loads(result.stdout)
    finance = out["domains"]["finance"]
    assert finance["n"] == 4 and finance["metric"] == "macro_f1" and len(finance["rounds"]) == 1
    for who in ("base", "sft", "kdagent", "base_unseen_phrasing", "sft_unseen_phrasing", "kdagent_unseen_phrasing"):
        s = finance[who]
        assert s["n"] == 4 and sum(s["histogram"].values()) == 4
        assert all(s["ci"][k][0] <= s[k] <= s["ci"][k][1] for k in ("accuracy", "macro_f1", "balanced_accuracy"))
    # plain SFT had exactly the labelled tasks of the run, once each; kdagent balanced and rephrased them
    assert finance["sft"]["examples"] == 6 and sum(finance["sft"]["labels"].values()) == 6
    assert finance["rounds"][0]["sft_examples"] > 6
    paired = finance["kdagent_minus_sft"]  # on the same items
    diff = finance["kdagent"]["macro_f1"] - finance["sft"]["macro_f1"]
    assert abs(paired["macro_f1"] - diff) < 1e-3 and paired["ci"][0] <= paired["macro_f1"] <= paired["ci"][1]
    assert finance["sft"]["epochs"] == 1 and finance["seconds"]["update_over_sft_train"] > 0
    merged = json.loads(results.read_text())
    assert (
        merged["domains"]["law"] == {"skipped": "data folder x is absent"}
        and merged["domains"]["finance"]["n"] == 4
        and merged["commit"]
    )
    text = table.read_text()
    assert text.startswith("# Benchmarks\n\nintro kept") and "| finance | 4 | macro_f1 |" in text
    # --resume continues the kdagent run left in --work (here a finished one: nothing is trained again)
    again = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=900, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = json.loads(again.stdout)["domains"]["finance"]
    assert resumed["seconds"]["resumed"] is True and "resumed" not in finance["seconds"]
    assert resumed["kdagent"] == finance["kdagent"] and resumed["rounds"] == finance["rounds"]
    # and takes the plain SFT student trained on the same examples, with the seconds of the run that trained it
    assert resumed["sft"]["reused"] is True and "reused" not in finance["sft"]
    assert (
        resumed["sft"]["macro_f1"] == finance["sft"]["macro_f1"]
        and resumed["seconds"]["sft"] == finance["seconds"]["sft"]
    )
    assert "<!-- distill_quality -->" in text and "Runs: `python benchmarks/distill_quality.py --domain finance" in text
    text = readme.read_text()  # the README's table, generated from the same JSON
    assert "old" not in text and text.endswith("after\n") and "| finance | 4 | macro_f1 |" in text


def test_distill_quality_budgets_run_their_domains_and_skip_absent_data(tmp_path):
    empty = tmp_path / "data"
    empty.mkdir()
    runs = {}
    for budget in ("small", "medium"):
        result = subprocess.run(
            [sys.executable, str(REPO / "benchmarks" / "distill_quality.py"), "--budget", budget, "--data", str(empty)]
            + ["--json", str(tmp_path / f"{budget}.json"), "--markdown", str(tmp_path / f"{budget}.md")],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        runs[budget] = json.loads(result.stdout)["domains"]
    assert all(e["skipped"].startswith("data folder ") for r in runs.values() for e in r.values())
    # every label is `finance` again at 48 labels: only the medium budget (or --domain) runs it
    assert "finance_all_labels" in runs["medium"] and "finance_all_labels" not in runs["small"]
    assert {"finance", "finance_500_labels", "medicine", "law", "math_svamp"} <= set(runs["small"])


def test_speed_measures_both_engines_and_both_trainers_in_one_run(tiny_model_dir):
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "speed.py"),
            "--model",
            str(tiny_model_dir),
            "--threads",
            "1",
            "--prompts",
            "2",
            "--passages",
            "0",
            "1",
            "--n",
            "2",
            "--max-new-tokens",
            "8",
            "--train-steps",
            "2",
            "--train-dpo-steps",
            "2",
            "--train-batch-size",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    bare, grounded = out["generation"]
    for generation in (bare, grounded):
        assert generation["kdagent"]["tokens_per_s"] > 0 and generation["hf"]["tokens_per_s"] > 0
        assert generation["speedup"] == round(
            generation["kdagent"]["tokens_per_s"] / generation["hf"]["tokens_per_s"], 2
        )
        # greedy replies of the two backends, compared in the same run: equal on the CPU in fp32
        assert generation["greedy_check"] == {"prompts": 2, "max_new_tokens": 8, "equal": 2, "first_difference_at": []}
    assert (bare["passages"], grounded["passages"]) == (0, 1)
    assert grounded["prompt_tokens_mean"] > bare["prompt_tokens_mean"] + 100  # a corpus chunk in each grounded prompt
    for method in ("sft", "dpo"):
        part = out["training"][method]
        assert part["kdagent"]["trained_tokens"] > 0 and part["trl_defaults"]["trained_tokens"] > 0
        assert part["kdagent"]["rss_peak_mb"] > 0
        assert len(part["kdagent"]["runs"]) == len(part["trl_defaults"]["runs"]) == 2  # alternating, best reported
