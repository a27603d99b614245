"""Each loop policy's recipe in recipes/ runs its two rounds on the embedded SmolLM2-135M-Instruct.

The recipes run as written except for a budget cut for CI (`CUT`: fewer tasks, tokens and epochs, as
`kdagent run --set` would cut them). metrics.json must show both rounds, each evaluated and timed, and each
policy must do what makes it that policy: verified SFT (STaR), reference-against-sample pairs and DPO (SPIN),
the student judging its own samples (self-rewarding), a stronger teacher judging a smaller student's data
(teacher distillation), SFT then DPO in one round (mixed), failed tasks seeding the next expansion (failure
mining). Round 2 starts from round 1's kept student; with a `self` teacher, that student is also the teacher.
"""

import json
from pathlib import Path

import pytest

from kdagent.jsonl import read_jsonl
from kdagent.loop.runner import run_recipe
from kdagent.plugins import build_plugins
from kdagent.recipe import Recipe
from kdagent.recipe_io import load_recipe
from kdagent.records import Generation, Task

REPO = Path(__file__).resolve().parent.parent
CUT = [
    "domain.seed_tasks=4",
    "domain.eval_tasks=2",
    "evaluation.skill_tasks=2",
    "teacher.max_new_tokens=64",
    "evaluation.max_new_tokens=24",
    "update.epochs=1",
]
POLICIES = ["star", "spin", "self_rewarding", "teacher_distill", "mixed", "failure_mining"]


def _run(name: str, tmp_path: Path, smollm_path: Path, extra: list[str]) -> tuple[Recipe, dict, Path]:
    sets = CUT + extra
    if name == "teacher_distill":  # the recipe's student is made by `kdagent models shrink`
        from kdagent.models.shrink import shrink

        student = shrink(smollm_path, tmp_path / "smollm2-4l", 4)
        sets.append(f"student.model={student}")
    recipe = load_recipe(REPO / "recipes" / f"{name}.yaml", sets)
    assert recipe.loop.rounds == 2
    run_dir = tmp_path / "run"
    run_recipe(recipe, run_dir, build_plugins())
    return recipe, json.loads((run_dir / "metrics.json").read_text()), run_dir


@pytest.mark.integration
@pytest.mark.parametrize("name", POLICIES)
def test_policy_recipe_runs_two_rounds_on_the_embedded_model(name, tmp_path, smollm_path):
    extra = {
        "failure_mining": ["synthesis.expansion.n_new=2"],
        # the judge's prompts are the slow part, and the 135M judge rarely parses on a second try either
        "self_rewarding": ["domain.seed_tasks=3", "feedback.judge_attempts=1"],
        "teacher_distill": ["domain.seed_tasks=3", "feedback.judge_attempts=1"],
    }.get(name, [])
    recipe, metrics, run_dir = _run(name, tmp_path, smollm_path, extra)
    rounds = metrics["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert metrics["baseline"]["n"] == 2
    for r in rounds:
        assert r["eval"]["n"] == 2 and 0.0 <= r["eval"]["accuracy"] <= 1.0
        assert r["eval"]["skills"]["cot"]["n"] == 2  # and the cot skill's own held-out set
        assert {"elicit", "feedback", "curate", "update", "evaluate"} <= set(r["seconds"])
        assert r["counts"]["generations"] == recipe.teacher.samples * r["counts"]["tasks"]
        assert json.loads((run_dir / f"round-0{r['round']}" / "metrics.json").read_text()) == r

    first, second = rounds
    kept = first["student"]  # round 1's student after the gate: its own, or the one it started from
    if recipe.teacher.kind == "self":
        teachers = {g.teacher for g in read_jsonl(run_dir / "round-02" / "generations.jsonl", Generation)}
        assert teachers == {f"self:{kept}"}

    if name == "star":
        for r in rounds:  # only verified samples are taught: no fallback to the reference
            assert r["counts"]["sft_examples"] <= r["counts"]["passed"]
        assert any(r["update"].get("steps", 0) >= 1 for r in rounds)
    elif name == "spin":
        for r in rounds:  # a reference solution against a failed sample, every round
            assert r["counts"]["preference_pairs"] >= 1 and r["update"]["steps"] >= 1
    elif name in ("self_rewarding", "teacher_distill"):
        for r in rounds:  # every sample went to the judge, which scores by expectation over its token probabilities
            judge = r["counts"]["judge"]
            assert judge["judge_items"] == r["counts"]["generations"] and judge["judge_expected_scores"] >= 1
    if name == "self_rewarding":
        for r in rounds:  # the student's own scores rank its samples into pairs, and DPO trains on them
            assert r["counts"]["preference_pairs"] >= 1 and r["update"]["steps"] >= 1
    if name == "teacher_distill":
        for r in rounds:  # the 30-layer teacher labels; the 4-layer student learns (reference fallback), then DPO
            assert list(r["update"]) == ["sft", "dpo"] and r["update"]["sft"]["steps"] >= 1
        assert any(r["update"]["dpo"].get("steps", 0) >= 1 for r in rounds)  # on pairs ranked by the teacher's scores
        labels = {g.teacher for g in read_jsonl(run_dir / "round-02" / "generations.jsonl", Generation)}
        assert labels == {"hf:smollm2-135m-instruct"}
        assert json.loads((Path(second["student"]) / "config.json").read_text())["num_hidden_layers"] == 4
    elif name == "mixed":
        for r in rounds:
            assert list(r["update"]) == ["sft", "dpo"]
        assert any("steps" in r["update"]["sft"] for r in rounds) and any("steps" in r["update"]["dpo"] for r in rounds)
    elif name == "failure_mining":  # the held-out tasks round 2's student got wrong in its last evaluation
        kept_by_gate = "kept_student" in first.get("gate", {})
        predictions = run_dir / ("baseline-predictions.jsonl" if kept_by_gate else "round-01/eval-predictions.jsonl")
        wrong = {row["id"] for row in read_jsonl(predictions) if not row["correct"]}
        assert second["counts"]["mined_failures"] == len(wrong) >= 1
        expanded = [t for t in read_jsonl(run_dir / "round-02" / "tasks.jsonl", Task) if getattr(t, "origin", None)]
        assert expanded and all(set(t.parent_ids) <= wrong for t in expanded)
        assert second["counts"]["expanded"] >= 1 and second["counts"]["tasks"] == 4 + second["counts"]["expanded"]
