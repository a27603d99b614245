"""Skills' own held-out sets: the built-in sets are sound and kept out of training, and the loop scores them."""

import json

import pytest

from kdagent.curate import contaminated_ids
from kdagent.errors import UserError
from kdagent.evaluate.runner import check_tasks
from kdagent.loop.runner import run_recipe
from kdagent.plugins import build_plugins
from kdagent.recipe import Recipe
from kdagent.skills import skill_sets
from kdagent.synth.tasks import eval_texts


def test_the_built_in_sets_are_fixed_sound_and_disjoint_from_the_built_in_seeds():
    from kdagent.domains.arithmetic import Arithmetic
    from kdagent.domains.assistant import BENIGN, HARMFUL
    from kdagent.domains.instructions import SEED

    plugins = build_plugins(load_entry_points=False)
    held_out = []
    for name in ("cot", "tool_use", "alignment", "instruct"):
        skill = plugins.instantiate("skills", name, "skills[0].options", {})
        tasks = skill.eval_tasks(16)
        assert 8 <= len(tasks) <= 16 and [t.id for t in tasks] == [
            t.id for t in skill.eval_tasks(16)
        ]  # the same in every run
        assert [t.id for t in skill.eval_tasks(4)] == [t.id for t in tasks[:4]]
        check_tasks(tasks, name)
        held_out += tasks
    assert skill_sets.check_sets() == []
    assert {t.answer for t in held_out if t.kind == "refusal"} == {"comply", "refuse"}
    assert (
        plugins.instantiate("skills", "label", "skills[0].options", {}).eval_tasks(16) == []
    )  # a skill without a set of its own
    seeds = {t.id: t.prompt for t in Arithmetic().seed_tasks(300, 1)}
    seeds |= {f"assistant-{i}": p for i, (p, _) in enumerate(BENIGN + HARMFUL)} | {
        f"instr-{i}": p for i, (p, _) in enumerate(SEED)
    }
    assert contaminated_ids(seeds, eval_texts(held_out), n=13) == set()


def test_the_loop_scores_every_listed_skill_set_and_keeps_them_out_of_training(tmp_path, tiny_model_dir):
    r = Recipe.model_validate(
        {
            "name": "tiny",
            "seed": 2,
            "student": {"model": str(tiny_model_dir), "max_length": 256},
            "teacher": {"kind": "self", "samples": 1, "temperature": 0.0, "max_new_tokens": 6, "batch_size": 4},
            "domain": {"name": "arithmetic", "seed_tasks": 3, "eval_tasks": 2, "options": {"corpus_examples": 4}},
            "skills": ["cot", "alignment", "label"],
            "retrieval": {"enabled": False},
            "feedback": {"fallback_to_reference": True},
            "update": {"epochs": 1, "batch_size": 2, "learning_rate": 1e-3},
            "evaluation": {"max_new_tokens": 4, "skill_tasks": 6, "gate": {"max_regression": 1.0}},
        }
    )
    metrics = run_recipe(r, tmp_path / "run", build_plugins(load_entry_points=False))
    run = tmp_path / "run"
    (entry,) = metrics["rounds"]
    for summary in (metrics["baseline"], entry["eval"]):
        assert set(summary["skills"]) == {"cot", "alignment"}  # label has no set of its own
        assert summary["skills"]["cot"]["n"] == 6 and summary["skills"]["alignment"]["n"] == 6
        assert "refusal_rate" in summary["skills"]["alignment"]
    assert set(entry["gate"]["skills"]) == {"cot", "alignment"} and entry["gate"]["passed"]
    assert json.loads((run / "inputs.counts.json").read_text())["skill_evaluation_tasks"] == {"cot": 6, "alignment": 6}
    for stem in ("baseline-predictions", "round-01/eval-predictions"):
        rows = [json.loads(line) for line in (run / f"{stem}.alignment.jsonl").open()]
        assert [row["id"] for row in rows] == [t.id for t in skill_sets.alignment_tasks(6)]
    # the skills' held-out texts are decontamination targets: a seed task that quotes one is dropped
    from kdagent.loop.round import Context

    ctx = Context(r, None, None, None, None, [], None, None, False, None, skill_sets.cot_tasks(6))
    quoting = {
        "quotes": "Solve this: " + skill_sets.cot_tasks(6)[5].prompt,
        "fresh": "Ana has 3 pens and buys 2 more pens today.",
    }
    assert contaminated_ids(quoting, ctx.eval_texts(), n=13) == {"quotes"}


def test_a_cross_checked_domain_is_scored_gated_and_kept_out_of_training(tmp_path, tiny_model_dir):
    r = Recipe.model_validate(
        {
            "name": "tiny",
            "seed": 2,
            "student": {"model": str(tiny_model_dir), "max_length": 256},
            "teacher": {"kind": "self", "samples": 1, "temperature": 0.0, "max_new_tokens": 6, "batch_size": 4},
            "domain": {"name": "arithmetic", "seed_tasks": 3, "eval_tasks": 2, "options": {"corpus_examples": 4}},
            "skills": ["label"],
            "retrieval": {"enabled": False},
            "feedback": {"fallback_to_reference": True},
            "update": {"epochs": 1, "batch_size": 2, "learning_rate": 1e-3},
            "evaluation": {
                "max_new_tokens": 4,
                "skill_tasks": 0,
                "bootstrap": 0,
                "gate": {"max_regression": 1.0},
                "cross_check": [{"name": "instructions", "eval_tasks": 3}],
            },
        }
    )
    metrics = run_recipe(r, tmp_path / "run", build_plugins(load_entry_points=False))
    (entry,) = metrics["rounds"]
    for summary in (metrics["baseline"], entry["eval"]):
        assert summary["domains"]["instructions"]["n"] == 3 and "skills" not in summary
    assert set(entry["gate"]["domains"]) == {"instructions"} and "skills" not in entry["gate"]
    assert (tmp_path / "run" / "round-01" / "eval-predictions.domain-instructions.jsonl").exists()
    bad = r.model_copy(
        update={
            "evaluation": r.evaluation.model_copy(
                update={"cross_check": [r.domain.model_copy(update={"name": "nope"})]}
            )
        }
    )
    with pytest.raises(UserError, match=r"evaluation.cross_check\[0\].name: unknown domain 'nope'"):
        run_recipe(bad, tmp_path / "bad", build_plugins(load_entry_points=False))
