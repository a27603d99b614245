"""The in-repo domain packages as users meet them: installed by the set-up, listed by `kdagent plugins`
with their distributions, and run by a recipe that names one (here on a config-built model, so it is quick)."""

import json

from conftest import run_cli


def test_kdagent_plugins_lists_the_domain_packages_with_their_distributions():
    result = run_cli("plugins", "--json")
    assert result.returncode == 0, result.stderr
    domains = {e["name"]: e["distribution"] for e in json.loads(result.stdout)["registered"] if e["kind"] == "domain"}
    assert {name: domains.get(name) for name in ("law", "medicine", "finance")} == {
        "law": "kdagent-law",
        "medicine": "kdagent-medicine",
        "finance": "kdagent-finance",
    }
    text = run_cli("plugins").stdout
    assert "kdagent-law" in text and "kdagent-medicine" in text and "kdagent-finance" in text


def test_a_recipe_naming_domain_law_runs(tmp_path, tiny_model_dir):
    recipe = tmp_path / "law.yaml"
    recipe.write_text(f"""
name: law-tiny
seed: 0
student: {{model: {tiny_model_dir}, max_length: 256}}
teacher: {{kind: self, samples: 1, max_new_tokens: 4, batch_size: 8}}
domain: {{name: law, seed_tasks: 6, eval_tasks: 4}}
skills: [label]
retrieval: {{top_k: 1, chunk_chars: 400}}
feedback: {{verifier: reference, fallback_to_reference: true}}
update: {{method: sft, epochs: 1, batch_size: 4, learning_rate: 1.0e-3}}
evaluation: {{batch_size: 8}}
""")
    run_dir = tmp_path / "run"
    result = run_cli("run", str(recipe), "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["baseline"]["n"] == 4 and metrics["rounds"][0]["eval"]["n"] == 4
    examples = [json.loads(line) for line in (run_dir / "round-01" / "sft.jsonl").read_text().splitlines()]
    assert examples and {e["provenance"]["domain"] for e in examples} == {"law"}
    assert (run_dir / "round-01" / "student" / "config.json").exists()
