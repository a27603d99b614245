"""One tiny round, end to end, on a config-built model with real Chroma, real MiniLM and real TRL."""

import json
import os
from pathlib import Path

import pytest
import yaml

from kdagent.errors import UserError
from kdagent.jsonl import read_jsonl
from kdagent.loop.runner import run_recipe
from kdagent.plugins import build_plugins
from kdagent.recipe import Recipe
from kdagent.records import Generation, SFTExample


def tiny_recipe(model_dir, **overrides) -> Recipe:
    data = {
        "name": "tiny",
        "seed": 1,
        "student": {"model": str(model_dir), "max_length": 256},
        "teacher": {"kind": "self", "samples": 2, "temperature": 1.0, "max_new_tokens": 8, "batch_size": 4},
        "domain": {"name": "arithmetic", "seed_tasks": 4, "eval_tasks": 3, "options": {"corpus_examples": 5}},
        "skills": ["cot"],
        "retrieval": {"top_k": 1},
        "feedback": {"fallback_to_reference": True},
        "update": {"epochs": 1, "batch_size": 2, "learning_rate": 1e-3},
        "evaluation": {"max_new_tokens": 8},
    }
    for key, value in overrides.items():
        section, field = key.split("__")
        data[section][field] = value
    return Recipe.model_validate(data)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_model_dir):
    base = tmp_path_factory.mktemp("run")
    recipe = tiny_recipe(tiny_model_dir)
    cwd = os.getcwd()
    os.chdir(base)
    try:  # a relative run directory, as the CLI's default runs/<name> is
        metrics = run_recipe(recipe, Path("runs/tiny"), build_plugins(load_entry_points=False))
    finally:
        os.chdir(cwd)
    return recipe, base / "runs" / "tiny", metrics


def test_round_writes_the_run_directory(tiny_run):
    _, run_dir, metrics = tiny_run
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert on_disk == metrics
    assert metrics["baseline"]["n"] == 3 and 0 <= metrics["baseline"]["accuracy"] <= 1
    (entry,) = metrics["rounds"]
    assert entry["round"] == 1 and entry["eval"]["n"] == 3
    assert entry["counts"]["generations"] == 8 and entry["counts"]["sft_examples"] >= 1
    assert set(entry["seconds"]) >= {"ground", "elicit", "feedback", "curate", "update", "evaluate"}
    # each stage's own peak (a tiny model's update need not exceed the embedder's peak while grounding)
    assert set(entry["peak_rss_mb"]) == set(entry["seconds"]) and all(v > 0 for v in entry["peak_rss_mb"].values())
    plan = json.loads((run_dir / "memory-plan.json").read_text())
    assert plan["peak_mb"] == max(plan["stages_mb"].values()) and plan["device"] == "cpu"
    assert entry["update"]["steps"] >= 1 and entry["update"]["losses"]
    assert yaml.safe_load((run_dir / "recipe.yaml").read_text())["name"] == "tiny"
    round_dir = run_dir / "round-01"
    for name in (
        "tasks.jsonl",
        "grounded.jsonl",
        "generations.jsonl",
        "feedback.jsonl",
        "sft.jsonl",
        "metrics.json",
        "update.json",
        "tasks.counts.json",
        "generations.counts.json",
        "feedback.counts.json",
        "sft.counts.json",
    ):
        assert (round_dir / name).is_file(), name
    assert json.loads((round_dir / "metrics.json").read_text()) == entry
    assert not (run_dir / "runs").exists()


def test_training_records_carry_provenance(tiny_run):
    _, run_dir, _ = tiny_run
    generations = read_jsonl(run_dir / "round-01" / "generations.jsonl", Generation)
    assert len({g.id for g in generations}) == len(generations) == 8
    assert all(g.passage_ids for g in generations)  # grounded through Chroma
    examples = read_jsonl(run_dir / "round-01" / "sft.jsonl", SFTExample)
    for ex in examples:
        p = ex.provenance
        assert p.round == 1 and p.skill == "cot" and p.domain == "arithmetic" and p.feedback
        assert ex.completion[0]["role"] == "assistant" and ex.completion[0]["content"]
        assert "<passage" not in ex.prompt[-1]["content"]  # distilled into the bare prompt


def test_student_checkpoint_loads(tiny_run):
    from transformers import AutoModelForCausalLM

    _, run_dir, metrics = tiny_run
    model = AutoModelForCausalLM.from_pretrained(run_dir / "round-01" / "student")
    assert model.config.num_hidden_layers == 2
    assert metrics["rounds"][0]["student"].endswith("round-01/student")


def test_rerun_needs_resume_and_resume_refuses_a_changed_recipe(tiny_run, tiny_model_dir):
    recipe, run_dir, metrics = tiny_run
    plugins = build_plugins(load_entry_points=False)
    with pytest.raises(UserError, match="already holds a run"):
        run_recipe(recipe, run_dir, plugins)
    with pytest.raises(UserError, match=r"recipe changed .*teacher\.samples"):
        run_recipe(tiny_recipe(tiny_model_dir, teacher__samples=3), run_dir, plugins, resume=True)
    before = (run_dir / "round-01" / "generations.jsonl").read_bytes()
    assert run_recipe(recipe, run_dir, plugins, resume=True) == metrics  # finished: nothing redone (absolute path now)
    assert (run_dir / "round-01" / "generations.jsonl").read_bytes() == before
    # a run begun by an older kdagent lacks the settings added since; at their defaults they are no change
    saved = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    del saved["update"]["grpo"]["temperature"]
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(saved))
    assert run_recipe(recipe, run_dir, plugins, resume=True) == metrics
    warmer = recipe.model_dump()
    warmer["update"]["grpo"]["temperature"] = 0.5  # set away from its default, it is a change
    with pytest.raises(UserError, match=r"recipe changed .*update\.grpo\.temperature"):
        run_recipe(Recipe.model_validate(warmer), run_dir, plugins, resume=True)


def test_a_round_with_nothing_to_learn_keeps_the_student(tmp_path, tiny_model_dir):
    recipe = tiny_recipe(tiny_model_dir, feedback__fallback_to_reference=False, retrieval__enabled=False)
    metrics = run_recipe(recipe, tmp_path / "run", build_plugins(load_entry_points=False))
    (entry,) = metrics["rounds"]
    assert entry["counts"]["passed"] == 0  # a random tiny model never states a right answer
    assert entry["update"] == {"skipped": "no training examples"}
    assert entry["student"] == str(tiny_model_dir)
