"""The benchmarks run end to end (on a tiny config-built model, a few tasks): they print the JSON the
README describes and write the Markdown table. Their numbers come from real runs documented in
docs/benchmarks.md; these tests only keep the scripts working."""

import json
import os
import subprocess
import sys

from conftest import REPO


def test_distill_quality_runs_kdagent_and_the_trl_baseline(tmp_path, tiny_model_dir, shared_data):
    table = tmp_path / "bench.md"
    table.write_text("# Benchmarks\n\nintro kept\n")
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "distill_quality.py"), "--only", "finance", "--data", str(shared_data),
         "--work", str(tmp_path / "work"), "--markdown", str(table),
         "--set", f"student.model={tiny_model_dir}", "--set", "domain.seed_tasks=6", "--set", "domain.eval_tasks=4",
         "--set", "retrieval.enabled=false"],
        capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    finance = out["results"]["finance"]
    assert finance["before"]["n"] == 4 and len(finance["rounds"]) == 1
    assert finance["baseline_trl_sft"]["n"] == 4 and finance["baseline_trl_sft"]["examples"] == finance["rounds"][0]["generations"]
    assert 0 <= finance["after"]["accuracy"] <= 1 and finance["seconds"]["kdagent"] > 0
    text = table.read_text()
    assert text.startswith("# Benchmarks\n\nintro kept") and "| finance | `recipes/finance.yaml` | 4 |" in text
    assert "<!-- distill_quality -->" in text and "Command: `python benchmarks/distill_quality.py --only finance" in text



def test_speed_measures_both_engines_and_both_trainers_in_one_run(tiny_model_dir):
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "speed.py"), "--model", str(tiny_model_dir), "--threads", "1", "--prompts", "2", "--passages", "0", "1",
         "--n", "2", "--max-new-tokens", "8", "--train-steps", "2", "--train-dpo-steps", "2", "--train-batch-size", "2"],
        capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    bare, grounded = out["generation"]
    for generation in (bare, grounded):
        assert generation["kdagent"]["tokens_per_s"] > 0 and generation["hf"]["tokens_per_s"] > 0
        assert generation["speedup"] == round(generation["kdagent"]["tokens_per_s"] / generation["hf"]["tokens_per_s"], 2)
        # greedy replies of the two backends, compared in the same run: equal on the CPU in fp32
        assert generation["greedy_check"] == {"prompts": 2, "max_new_tokens": 8, "equal": 2, "first_difference_at": []}
    assert (bare["passages"], grounded["passages"]) == (0, 1)
    assert grounded["prompt_tokens_mean"] > bare["prompt_tokens_mean"] + 100  # a corpus chunk in each grounded prompt
    for method in ("sft", "dpo"):
        part = out["training"][method]
        assert part["kdagent"]["trained_tokens"] > 0 and part["trl_defaults"]["trained_tokens"] > 0
        assert part["kdagent"]["rss_peak_mb"] > 0
        assert len(part["kdagent"]["runs"]) == len(part["trl_defaults"]["runs"]) == 2  # alternating, best reported
