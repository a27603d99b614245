"""The elicitation recipe end to end against every teacher kind, and decontamination in the loop."""

import json

import pytest

from conftest import REPO
from kdagent.jsonl import read_jsonl, write_jsonl
from kdagent.loop.runner import run_recipe
from kdagent.plugins import build_plugins
from kdagent.recipe_io import check_names, load_recipe
from kdagent.records import Feedback, Generation, PreferencePair, SFTExample, Task

SMALL = [
    "domain.seed_tasks=3",
    "domain.eval_tasks=2",
    "teacher.samples=2",
    "teacher.max_new_tokens=32",
    "synthesis.expansion.n_new=2",
    "evaluation.max_new_tokens=16",
]


def check_run(run_dir, teacher_prefix: str):
    round_dir = run_dir / "round-01"
    tasks = read_jsonl(round_dir / "tasks.jsonl", Task)
    gens = read_jsonl(round_dir / "generations.jsonl", Generation)
    feedback = read_jsonl(round_dir / "feedback.jsonl", Feedback)
    sft = read_jsonl(round_dir / "sft.jsonl", SFTExample)
    pairs = read_jsonl(round_dir / "preferences.jsonl", PreferencePair)
    assert len(tasks) >= 3 and len(gens) == 2 * len(tasks) and len(feedback) == len(gens)
    assert all(g.teacher.startswith(teacher_prefix) and g.passage_ids and g.text is not None for g in gens)
    assert {f.generation_id for f in feedback} == {g.id for g in gens}
    for record in [*sft, *pairs]:
        p = record.provenance
        assert p.round == 1 and p.skill == "cot" and p.domain == "arithmetic" and p.task_id and p.feedback
        assert p.teacher.startswith(teacher_prefix) or p.teacher == "reference"
    expanded = [t for t in tasks if getattr(t, "origin", None)]
    assert all(t.id.startswith("exp-") and t.parent_ids for t in expanded)
    counts = json.loads((run_dir / "metrics.json").read_text())["rounds"][0]["counts"]
    assert (
        counts["generations"] == len(gens)
        and counts["sft_examples"] == len(sft)
        and counts["preference_pairs"] == len(pairs)
    )
    assert counts["expansion"]["generated"] == 2 and "contaminated_task" in counts["dropped"]
    return counts


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["self", "hf", "openai"])
def test_elicitation_recipe_runs_against_each_teacher_kind(kind, tmp_path, request):
    sets = list(SMALL)
    if kind == "hf":
        sets += ["teacher.kind=hf", "teacher.model=smollm2-135m-instruct"]
    if kind == "openai":
        url, model = request.getfixturevalue("openai_server")
        sets += ["teacher.kind=openai", f"teacher.model={model}", f"teacher.base_url={url}/v1", "teacher.concurrency=4"]
    recipe = load_recipe(REPO / "recipes" / "elicit.yaml", sets)
    run_recipe(recipe, tmp_path / "run", build_plugins(load_entry_points=False))
    counts = check_run(tmp_path / "run", {"self": "self:", "hf": "hf:", "openai": "openai:"}[kind])
    assert counts["teacher_failures"] == 0


def test_planted_evaluation_items_never_reach_training(tmp_path, tiny_model_dir):
    from kdagent.domains.arithmetic import Arithmetic

    seeds = Arithmetic().seed_tasks(6, seed=1 * 1000 + 1)  # the seeds round 1 of a seed-1 recipe takes
    planted = seeds[:2]
    eval_file = tmp_path / "eval.jsonl"
    write_jsonl(
        eval_file,
        [{"id": f"e{i}", "prompt": t.prompt, "answer": t.answer, "kind": "numeric"} for i, t in enumerate(planted)]
        + [{"id": "e9", "prompt": "What is 2 + 2?", "answer": "4", "kind": "numeric"}],
    )
    recipe = load_recipe(
        REPO / "recipes" / "quickstart.yaml",
        [
            f"student.model={tiny_model_dir}",
            "seed=1",
            "domain.seed_tasks=6",
            f"evaluation.data={eval_file}",
            "teacher.samples=1",
            "teacher.temperature=1.0",
            "teacher.max_new_tokens=8",
            "retrieval.enabled=false",
            "feedback.fallback_to_reference=true",
            "update.method=none",
            "evaluation.max_new_tokens=4",
        ],
    )
    metrics = run_recipe(recipe, tmp_path / "run", build_plugins(load_entry_points=False))
    sft = read_jsonl(tmp_path / "run" / "round-01" / "sft.jsonl", SFTExample)
    assert len(sft) == 4  # every clean seed gives its reference solution
    planted_prompts = {t.prompt for t in planted}
    assert not any(t in ex.prompt[-1]["content"] for ex in sft for t in planted_prompts)
    assert metrics["rounds"][0]["counts"]["dropped"]["contaminated_task"] == 2


def test_zero_samples_asks_the_teacher_nothing_and_teaches_the_references(tmp_path, tiny_model_dir):
    recipe = load_recipe(
        REPO / "recipes" / "quickstart.yaml",
        [
            f"student.model={tiny_model_dir}",
            "domain.seed_tasks=4",
            "domain.eval_tasks=2",
            "teacher.samples=0",
            "retrieval.enabled=false",
            "feedback.fallback_to_reference=true",
            "update.method=none",
            "evaluation.max_new_tokens=4",
        ],
    )
    metrics = run_recipe(recipe, tmp_path / "run", build_plugins(load_entry_points=False))
    round_dir = tmp_path / "run" / "round-01"
    assert read_jsonl(round_dir / "generations.jsonl", Generation) == []
    sft = read_jsonl(round_dir / "sft.jsonl", SFTExample)
    tasks = read_jsonl(round_dir / "tasks.jsonl", Task)
    assert sft and {e.provenance.task_id for e in sft} == {t.id for t in tasks if t.answer}
    assert all(e.provenance.teacher == "reference" for e in sft)
    counts = metrics["rounds"][0]["counts"]
    assert counts["generations"] == 0 and counts["teacher_failures"] == 0
    assert json.loads((round_dir / "generations.counts.json").read_text())["skipped"] == "teacher.samples is 0"


def test_zero_samples_without_the_reference_fallback_is_refused():
    from kdagent.errors import UserError

    recipe = load_recipe(
        REPO / "recipes" / "quickstart.yaml", ["teacher.samples=0", "feedback.fallback_to_reference=false"]
    )
    with pytest.raises(UserError, match="feedback.fallback_to_reference"):
        check_names(recipe, build_plugins(load_entry_points=False))
