"""Plugins: one that raises during a run is named in a one-line error, the run stops cleanly (lock released,
finished stages kept, nothing half-written) and a secret in its message is masked; leaving it out with
the KDAGENT_PLUGINS allowlist, `--resume` then finishes the run from the stages already done."""

import json

import pytest
import yaml

from conftest import run_cli

PLUGIN = """
import os
from kdagent.hookspecs import hookimpl


@hookimpl
def kdagent_veto_example(example, recipe):
    raise RuntimeError("the filter service refused us with token " + os.environ["BOOM_API_TOKEN"])
"""


@pytest.fixture
def boom_site(tmp_path):
    """An installed plugin distribution `kdagent-boom` (entry point `boom` in group kdagent), in a folder for PYTHONPATH."""
    site = tmp_path / "site"
    (site / "kdagent_boom").mkdir(parents=True)
    (site / "kdagent_boom" / "__init__.py").write_text(PLUGIN)
    info = site / "kdagent_boom-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kdagent-boom\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text("[kdagent]\nboom = kdagent_boom\n")
    return site


@pytest.mark.integration
def test_a_plugin_that_raises_is_named_and_the_run_stops_cleanly(tmp_path, tiny_model_dir, boom_site):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "name": "boom",
                "student": {"model": str(tiny_model_dir)},
                "retrieval": {"enabled": False},
                "teacher": {"kind": "self", "samples": 1, "max_new_tokens": 4, "batch_size": 4},
                "domain": {"seed_tasks": 4, "eval_tasks": 2},
                "feedback": {"fallback_to_reference": True},
                "update": {"epochs": 1, "batch_size": 4},
                "evaluation": {"max_new_tokens": 2},
            }
        )
    )
    run_dir = tmp_path / "run"
    env = {"PYTHONPATH": str(boom_site), "BOOM_API_TOKEN": "tok-boom-5551212", "OMP_NUM_THREADS": "1"}
    listed = json.loads(run_cli("plugins", "--json", env=env).stdout)
    assert listed["failures"] == []  # it loads fine: it fails only when its hook runs
    result = run_cli("run", str(recipe), "--run-dir", str(run_dir), env=env)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "tok-boom-5551212" not in result.stderr + result.stdout
    error = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert error == [
        "Error: plugin boom (kdagent-boom) in kdagent_veto_example (__init__.py:8) raised RuntimeError: the filter service refused us "
        "with token ***; the run stopped and its finished stages are kept: fix or remove the plugin (or leave it out of "
        "KDAGENT_PLUGINS), then continue with --resume"
    ]
    round_dir = run_dir / "round-01"
    done = {p.name for p in round_dir.iterdir()}
    assert {"tasks.jsonl", "grounded.jsonl", "generations.jsonl", "feedback.jsonl"} <= done and "sft.jsonl" not in done
    assert not [name for name in done if ".tmp-" in name]  # nothing half-written
    generations = (round_dir / "generations.jsonl").read_bytes()

    resumed = run_cli(
        "run", str(recipe), "--run-dir", str(run_dir), "--resume", env={**env, "KDAGENT_PLUGINS": ""}
    )  # the allowlist leaves it out
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (round_dir / "generations.jsonl").read_bytes() == generations  # the finished stages were reused
    assert json.loads((run_dir / "metrics.json").read_text())["rounds"][0]["counts"]["sft_examples"] > 0


def test_a_traceback_through_the_cli_streams_is_redacted(capsys):
    import sys
    import traceback

    from kdagent.errors import RedactingStream, register_secret

    register_secret("sk-canary-traceback-0001")
    stream = RedactingStream(sys.stderr)
    try:
        raise ValueError("request failed for key sk-canary-traceback-0001")
    except ValueError as exc:
        traceback.print_exception(exc, file=stream)
    err = capsys.readouterr().err
    assert "Traceback" in err and "ValueError: request failed for key ***" in err and "sk-canary" not in err
