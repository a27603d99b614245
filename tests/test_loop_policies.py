"""Loop policies on a config-built tiny model: the gate, SPIN pairs with DPO, failure mining, methods in order."""

import json
import shutil
from pathlib import Path

import pytest

from kdagent.jsonl import read_jsonl
from kdagent.loop.runner import apply_gate, run_recipe
from kdagent.plugins import build_plugins
from kdagent.recipe import GateConfig, Recipe
from kdagent.records import PreferencePair


def recipe(model_dir, **sections) -> Recipe:
    data = {
        "name": "tiny",
        "seed": 2,
        "student": {"model": str(model_dir), "max_length": 256},
        "teacher": {"kind": "self", "samples": 2, "temperature": 1.0, "max_new_tokens": 8, "batch_size": 4},
        "domain": {"name": "arithmetic", "seed_tasks": 4, "eval_tasks": 2, "options": {"corpus_examples": 4}},
        "retrieval": {"enabled": False},
        "update": {"epochs": 1, "batch_size": 2, "learning_rate": 1e-3},
        "evaluation": {"max_new_tokens": 4},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return Recipe.model_validate(data)


def test_gate_keeps_the_previous_student_on_regression():
    gate = GateConfig(max_regression=0.05)
    entry = {"eval": {"accuracy": 0.30}, "student": "r2"}
    student, best = apply_gate(gate, entry, best={"domain": 0.40}, previous=Path("r1"), student=Path("r2"))
    assert student == Path("r1") and best == {"domain": 0.40} and entry["student"] == "r1"
    assert entry["gate"] == {
        "passed": False,
        "metric": "accuracy",
        "best_so_far": 0.40,
        "floor": 0.35,
        "failed": ["domain"],
        "kept_student": "r1",
    }
    entry = {"eval": {"accuracy": 0.36}, "student": "r2"}
    assert (
        apply_gate(gate, entry, {"domain": 0.40}, Path("r1"), Path("r2")) == (Path("r2"), {"domain": 0.40})
        and entry["gate"]["passed"]
    )
    entry = {"eval": {"accuracy": 0.5}, "student": "r2"}
    assert (
        apply_gate(None, entry, {"domain": 0.40}, Path("r1"), Path("r2")) == (Path("r2"), {"domain": 0.5})
        and "gate" not in entry
    )


def test_gate_checks_every_skill_held_out_set_too():
    gate = GateConfig(max_regression=0.05)
    best = {"domain": 0.40, "skill:cot": 0.50}
    # the domain improves but the cot skill's set regresses: the round fails the gate, and says which set
    entry = {"eval": {"accuracy": 0.60, "skills": {"cot": {"accuracy": 0.25}}}, "student": "r2"}
    student, kept = apply_gate(gate, entry, best, Path("r1"), Path("r2"))
    assert student == Path("r1") and kept == best
    assert entry["gate"]["failed"] == ["skill:cot"] and entry["gate"]["passed"] is False
    assert entry["gate"]["skills"] == {"cot": {"accuracy": 0.25, "best_so_far": 0.50, "floor": 0.45, "passed": False}}
    # within the tolerance on both: kept, and each set's best rises on its own
    entry = {"eval": {"accuracy": 0.60, "skills": {"cot": {"accuracy": 0.46}}}, "student": "r2"}
    assert apply_gate(gate, entry, best, Path("r1"), Path("r2")) == (Path("r2"), {"domain": 0.60, "skill:cot": 0.50})
    assert entry["gate"]["passed"] and "failed" not in entry["gate"]


def test_spin_pairs_train_with_dpo_and_the_gate_is_recorded(tmp_path, tiny_model_dir):
    r = recipe(
        tiny_model_dir,
        feedback={"preferences": True, "pairs": "spin"},
        update={"method": "dpo"},
        evaluation={"gate": {"max_regression": 1.0}},
    )
    metrics = run_recipe(r, tmp_path / "run", build_plugins(load_entry_points=False))
    (entry,) = metrics["rounds"]
    pairs = read_jsonl(tmp_path / "run" / "round-01" / "preferences.jsonl", PreferencePair)
    assert len(pairs) == 4 and entry["counts"]["preference_pairs"] == 4  # a random model fails every task
    for pair in pairs:
        assert pair.provenance.feedback["chosen"] == "reference-solution"
        assert pair.chosen[0]["content"].rstrip().endswith(".") and "The answer is" in pair.chosen[0]["content"]
        assert pair.rejected[0]["content"] != pair.chosen[0]["content"]
    assert entry["update"]["steps"] >= 1 and entry["student"].endswith("round-01/student")
    assert entry["gate"]["passed"] is True


@pytest.mark.parametrize("source", ["evaluation", "training"])
def test_failure_mining_seeds_the_next_expansion_and_methods_run_in_order(tmp_path, tiny_model_dir, source):
    r = recipe(
        tiny_model_dir,
        synthesis={"expansion": {"method": "self_instruct", "n_new": 2}},
        feedback={"fallback_to_reference": True, "preferences": True, "pairs": "spin"},
        update={"method": ["sft", "dpo"]},
        loop={"rounds": 2, "failure_mining": source},
    )
    metrics = run_recipe(r, tmp_path / "run", build_plugins(load_entry_points=False))
    assert [e["round"] for e in metrics["rounds"]] == [1, 2]
    second = metrics["rounds"][1]
    assert set(second["update"]) == {"sft", "dpo"} and second["update"]["sft"]["steps"] >= 1
    assert (tmp_path / "run" / "round-02" / "student-1-sft").is_dir() and (
        tmp_path / "run" / "round-02" / "student"
    ).is_dir()
    counts = json.loads((tmp_path / "run" / "round-02" / "tasks.counts.json").read_text())
    assert counts["mined_from"] == source
    if source == "training":  # round 1's seeds all failed, so all four seeded round 2's expansion
        assert counts["mined_failures"] == 4
    else:  # the random student got both held-out tasks wrong in round 1's evaluation
        wrong = [
            row["id"]
            for row in read_jsonl(tmp_path / "run" / "round-01" / "eval-predictions.jsonl")
            if not row["correct"]
        ]
        assert counts["mined_failures"] == len(wrong) == 2
    assert metrics["rounds"][1]["student"].endswith("round-02/student")


@pytest.mark.parametrize("judge_score", ["verdict", "expected"])
def test_grpo_rewards_from_the_verifier_and_the_teacher_as_judge(tmp_path, tiny_model_dir, judge_score):
    from kdagent.domains.arithmetic import Arithmetic
    from kdagent.skills.cot import ChainOfThought
    from kdagent.update.grpo import job_reward
    from kdagent.update.updater import UpdateJob

    r = recipe(
        tiny_model_dir,
        update={"method": "grpo", "grpo": {"judge_weight": 0.5}},
        feedback={"judge_attempts": 1, "judge_score": judge_score},
    )
    tasks = {t.id: t for t in Arithmetic().seed_tasks(2, 0)}
    job = UpdateJob(
        r,
        r.update.grpo,
        tiny_model_dir,
        tiny_model_dir / "unused",
        seed=1,
        round=1,
        skill=ChainOfThought(),
        domain=Arithmetic(),
        plugins=build_plugins(load_entry_points=False),
    )
    reward = job_reward(job, tasks, r.update.grpo.judge_weight, "grpo")
    ids = list(tasks)
    right = f"The answer is {tasks[ids[0]].answer}."
    scores = reward(
        None,
        [[{"role": "assistant", "content": right}], [{"role": "assistant", "content": "no idea"}]],
        [ids[0], ids[1]],
    )
    reward.close()
    if judge_score == "verdict":
        # the tiny model's written verdict is never valid JSON: a failed judgement counts 0, the verifier half remains
        assert scores == [0.5, 0.0]
    else:  # half the verifier's 1 or 0, half the judge's expected score (0.1 to 1.0)
        assert 0.55 <= scores[0] <= 1.0 and 0.05 <= scores[1] <= 0.5
        assert all(round(20 * x, 6) != round(20 * x) for x in scores)  # not a written integer: an expectation
    assert reward.__name__ == "cot_verifier_and_judge"


def test_distill_with_a_different_vocabulary_is_refused_before_anything_runs(tmp_path, tiny_model_dir):
    from kdagent.errors import UserError
    from kdagent.models import resolve_model

    r = recipe(
        tiny_model_dir, teacher={"kind": "hf", "model": str(resolve_model("minilm-l6"))}, update={"method": "distill"}
    )
    with pytest.raises(UserError, match="share a vocabulary"):
        run_recipe(r, tmp_path / "run", build_plugins(load_entry_points=False))
    assert not (tmp_path / "run").exists()


def test_grpo_and_distill_run_inside_the_loop(tmp_path, tiny_model_dir):
    r = recipe(
        tiny_model_dir,
        update={
            "method": "grpo",
            "batch_size": 4,
            "grpo": {"num_generations": 4, "max_completion_length": 8, "temperature": 0.7},
        },
    )
    (entry,) = run_recipe(r, tmp_path / "grpo", build_plugins(load_entry_points=False))["rounds"]
    assert entry["update"]["steps"] >= 1 and entry["student"].endswith("round-01/student")
    assert entry["update"]["temperature"] == 0.7  # the recipe's sampling temperature reached TRL
    teacher = shutil.copytree(tiny_model_dir, tmp_path / "teacher")  # another model: not the student itself
    r = recipe(
        tiny_model_dir,
        teacher={"kind": "hf", "model": str(teacher)},
        feedback={"fallback_to_reference": True},
        update={"method": "distill", "distill": {"lmbda": 0.0, "max_completion_length": 8}},
    )
    (entry,) = run_recipe(r, tmp_path / "distill", build_plugins(load_entry_points=False))["rounds"]
    assert entry["update"]["steps"] >= 1 and entry["update"]["divergence"] == "jsd"


def test_a_round_that_fails_the_gate_keeps_the_previous_student_for_the_next_round(tmp_path, tiny_model_dir):
    """A whole loop: round 1 regresses on the held-out set, so the gate keeps the starting student, and round 2
    samples from it (teacher `self`) and trains from it, not from round 1's rejected checkpoint."""
    import json

    from kdagent.records import Generation

    colours = ["red", "blue"]
    items = [
        {
            "id": f"c{i}",
            "prompt": f"Item {i}: which colour is {['the sky', 'a rose', 'grass', 'snow'][i % 4]} in picture {i}?",
            "context": None,
            "choices": colours,
            "answer": "red",
            "kind": "choice",
        }
        for i in range(8)
    ]
    data = tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps(x) + "\n" for x in items))
    probe = recipe(tiny_model_dir, evaluation={"data": str(data)}, update={"method": "none"})
    run_recipe(probe, tmp_path / "probe", build_plugins(load_entry_points=False))
    # the held-out answers become the starting student's own choices: it scores 1.0, and any change in its
    # choices is a regression
    predicted = {
        p["id"]: p["predicted"] for p in map(json.loads, (tmp_path / "probe" / "baseline-predictions.jsonl").open())
    }
    data.write_text("".join(json.dumps({**x, "answer": predicted[x["id"]]}) + "\n" for x in items))

    r = recipe(
        tiny_model_dir,
        evaluation={"data": str(data), "gate": {"max_regression": 0.0}},
        feedback={"fallback_to_reference": True},
        update={"learning_rate": 1e-2, "epochs": 2},
        loop={"rounds": 2},
    )
    metrics = run_recipe(r, tmp_path / "run", build_plugins(load_entry_points=False))
    assert metrics["baseline"]["accuracy"] == 1.0
    first, second = metrics["rounds"]
    assert first["update"]["steps"] >= 1 and first["eval"]["accuracy"] < 1.0
    # the cot skill's own set is checked too (0.0 at 4 tokens); the changed choices may also collapse onto one colour
    gate = {k: v for k, v in first["gate"].items() if k not in ("skills", "collapsed")}
    assert gate == {
        "passed": False,
        "metric": "macro_f1",
        "best_so_far": 1.0,
        "floor": 1.0,
        "failed": ["domain"],
        "kept_student": str(tiny_model_dir),
    }
    assert first["gate"]["skills"]["cot"]["passed"] and metrics["baseline"]["skills"]["cot"]["n"] == 16
    assert first["student"] == str(tiny_model_dir)
    assert (tmp_path / "run" / "round-01" / "student").is_dir()  # trained, evaluated, not kept
    teachers = {g.teacher for g in read_jsonl(tmp_path / "run" / "round-02" / "generations.jsonl", Generation)}
    assert teachers == {f"self:{tiny_model_dir}"}
    assert second["update"]["steps"] >= 1
