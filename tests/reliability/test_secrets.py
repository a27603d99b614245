"""A canary API key, set in the environment variable the recipe names, runs a round against the real local
OpenAI-compatible server (`transformers serve`), and a round against a hostile one that refuses every
request with a 401 whose error message echoes the key back (so kdagent records errors that contain it).
The key appears in no file of either run directory, in no log line and in no error output; the recorded
errors are there, masked. (Tracebacks pass through the same redacting streams: test_plugin_failures.py.)"""

import uuid

import pytest
import yaml

from conftest import run_cli
from openai_server import ScriptedServer


def _recipe(path, tiny_model_dir, base_url, model):
    path.write_text(
        yaml.safe_dump(
            {
                "name": "canary",
                "seed": 1,
                "student": {"model": str(tiny_model_dir), "max_length": 256},
                "teacher": {
                    "kind": "openai",
                    "model": model,
                    "base_url": base_url,
                    "api_key_env": "KDAGENT_CANARY_KEY",
                    "samples": 1,
                    "max_new_tokens": 8,
                    "timeout_s": 60,
                    "max_retries": 0,
                },
                "domain": {"name": "arithmetic", "seed_tasks": 2, "eval_tasks": 2},
                "skills": ["cot"],
                "retrieval": {"enabled": False},
                "feedback": {"fallback_to_reference": True},
                "update": {"epochs": 1, "batch_size": 2},
                "evaluation": {"max_new_tokens": 8},
            }
        )
    )
    return path


def _grep_tree(folder, needle: bytes) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


def _echo(request, headers):
    return 401, f"Incorrect API key provided: {headers.get('Authorization', '').removeprefix('Bearer ')}"


@pytest.mark.integration
def test_the_api_key_is_never_written_anywhere(tmp_path, tiny_model_dir, openai_server):
    url, model = openai_server
    canary = f"sk-canary-{uuid.uuid4().hex}"
    env = {"KDAGENT_CANARY_KEY": canary, "OMP_NUM_THREADS": "1"}
    with ScriptedServer(_echo) as echo:
        for name, base_url in (("served", f"{url}/v1"), ("echoing", echo.url)):
            recipe = _recipe(tmp_path / f"{name}.yaml", tiny_model_dir, base_url, model)
            run_dir = tmp_path / "runs" / name
            result = run_cli("run", str(recipe), "--run-dir", str(run_dir), env=env)
            assert result.returncode == 0, result.stderr[-2000:]
            assert (run_dir / "metrics.json").exists()
            assert canary not in result.stdout and canary not in result.stderr, name
            assert _grep_tree(run_dir, canary.encode()) == [], name
    assert len(echo.requests) == 2  # the hostile server did see the key (in the Authorization header)
    recorded = (tmp_path / "runs" / "echoing" / "round-01" / "generations.counts.json").read_text()
    assert (
        '"teacher_failures": 2' in recorded and "Incorrect API key provided: ***" in recorded
    )  # errors recorded, key masked
    masked = yaml.safe_load((tmp_path / "runs" / "served" / "recipe.yaml").read_text())
    assert masked["teacher"]["api_key_env"] == "KDAGENT_CANARY_KEY"  # the variable's name, never its value
