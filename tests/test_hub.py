"""Hub models, offline: a Hub id resolves from a Hugging Face cache laid out in a temporary folder (never a
download); `kdagent push --dry-run` writes what would go up, with the generated model card."""

import json
import shutil

import pytest
import yaml

from conftest import free_port, run_cli
from kdagent.errors import UserError
from kdagent.models import resolve_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, tiny_model_dir, monkeypatch):
    """HF_HUB_CACHE with `kdagent-test/tiny` at COMMIT, as `hf download` lays it out (refs/main -> snapshot)."""
    cache = tmp_path / "hub"
    repo = cache / "models--kdagent-test--tiny"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("KDAGENT_ALLOW_DOWNLOAD", raising=False)
    return cache, repo / "snapshots" / COMMIT


def test_a_hub_id_resolves_from_the_local_cache(hub_cache):
    _, snapshot = hub_cache
    assert resolve_model("kdagent-test/tiny") == snapshot.resolve()
    assert resolve_model(f"kdagent-test/tiny@{COMMIT}") == snapshot.resolve()
    with pytest.raises(UserError, match="not in the local Hugging Face cache .* KDAGENT_ALLOW_DOWNLOAD=1"):
        resolve_model("kdagent-test/absent")


def test_the_cli_evaluates_a_cached_hub_model(hub_cache, tmp_path):
    cache, snapshot = hub_cache
    data = tmp_path / "d.jsonl"
    data.write_text('{"id": "1", "prompt": "Is it?", "choices": ["yes", "no"], "answer": "yes", "kind": "choice"}\n')
    result = run_cli(
        "eval",
        "--model",
        "kdagent-test/tiny",
        "--data",
        str(data),
        "--json",
        "--bootstrap",
        "0",
        env={"HF_HUB_CACHE": str(cache)},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model"] == str(snapshot.resolve())
    missing = run_cli("eval", "--model", "kdagent-test/absent", "--data", str(data), env={"HF_HUB_CACHE": str(cache)})
    assert missing.returncode == 2 and "downloads are off" in missing.stderr


@pytest.fixture
def finished_run(tmp_path, tiny_model_dir):
    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run / "round-01" / "student")
    recipe = {
        "name": "hubby",
        "student": {"model": "kdagent-test/tiny"},
        "teacher": {"kind": "self"},
        "skills": [{"name": "label"}],
        "domain": {"name": "finance"},
        "update": {"method": "sft"},
    }
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    score = {"n": 40, "accuracy": 0.5, "macro_f1": 0.4, "ci": {"accuracy": [0.35, 0.65], "macro_f1": [0.3, 0.5]}}
    counts = {
        "tasks": 30,
        "generations": 120,
        "passed": 70,
        "sft_examples": 60,
        "preference_pairs": 0,
        "dropped": {"rejected_by_verifier": 50, "prompt_too_long": 0},
    }
    metrics = {
        "baseline": score,
        "rounds": [
            {
                "round": 1,
                "student": str(run / "round-01" / "student"),
                "eval": {**score, "accuracy": 0.6, "ci": {"accuracy": [0.45, 0.75]}},
                "counts": counts,
            }
        ],
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_push_dry_run_writes_the_upload_and_the_model_card(finished_run, tmp_path):
    out = tmp_path / "dry"
    result = run_cli("push", str(finished_run), "me/hubby-student", "--private", "--dry-run", str(out))
    assert result.returncode == 0, result.stderr
    assert "would upload" in result.stdout
    plan = json.loads((out / "upload.json").read_text())
    assert plan["repo_id"] == "me/hubby-student" and plan["private"] is True
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json"} <= {f["path"] for f in plan["files"]}
    card = (out / "README.md").read_text()
    assert card == (finished_run / "round-01" / "student" / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["base_model"] == "kdagent-test/tiny" and front["library_name"] == "transformers"
    assert "| baseline | held-out | 40 | 0.500 [0.350, 0.650] | 0.400 [0.300, 0.500] |" in card
    assert "| round 1 | held-out | 40 | 0.600 [0.450, 0.750] | 0.400 |" in card
    assert "| 1 | 30 | 120 | 70 | 60 | 0 | rejected_by_verifier: 50 |" in card  # zero counts left out
    assert "Teacher: `self`" in card and "`label`" in card and "name: hubby" in card


def test_push_refuses_bad_input_and_offline_uploads(finished_run, tmp_path):
    assert run_cli("push", str(finished_run), "no-owner").returncode == 2
    (tmp_path / "empty").mkdir()
    assert "no metrics.json" in run_cli("push", str(tmp_path / "empty"), "me/x").stderr
    offline = run_cli(
        "push", str(finished_run), "me/x", env={"HF_HUB_OFFLINE": "1"}
    )  # the real upload path, stopped at the network
    assert offline.returncode == 2 and "HF_HUB_OFFLINE=1" in offline.stderr
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there: the upload's first request fails to connect
    unreachable = run_cli(
        "push", str(finished_run), "me/x", env={"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": closed, "HF_TOKEN": "hf_unused"}
    )
    assert unreachable.returncode == 2 and "cannot reach the Hub" in unreachable.stderr, unreachable.stderr
