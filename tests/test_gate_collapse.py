"""The gate compares macro-F1 on choice sets and fails a student whose predictions collapse onto one label;
evaluate()'s summary carries what it needs (histograms, balanced accuracy, bootstrap intervals)."""

from pathlib import Path

import pytest

from kdagent.evaluate.gate import apply_gate, gate_metric, set_scores
from kdagent.recipe import GateConfig

GOLD = {"negative": 5, "neutral": 18, "positive": 7}  # 30 items, 60% neutral


def choice_eval(accuracy: float, macro_f1: float, histogram: dict) -> dict:
    return {
        "n": 30,
        "accuracy": accuracy,
        "macro_f1": macro_f1,
        "balanced_accuracy": 0.0,
        "histogram": histogram,
        "gold_histogram": GOLD,
    }


@pytest.mark.parametrize("metric, best", [("accuracy", 0.50), ("auto", 0.20)])
def test_a_label_collapsed_student_fails_the_gate_though_its_score_rose(metric, best):
    gate = GateConfig(max_regression=0.0, metric=metric)
    # "neutral" for all 30 items: accuracy 18/30, macro-F1 (0.75 + 0 + 0) / 3, both above the best so far
    entry = {"eval": choice_eval(0.60, 0.25, {"neutral": 30}), "student": "r2"}
    student, kept = apply_gate(gate, entry, {"domain": best}, previous=Path("r1"), student=Path("r2"))
    assert student == Path("r1") and kept == {"domain": best} and entry["student"] == "r1"
    assert entry["gate"] == {
        "passed": False,
        "metric": "accuracy" if metric == "accuracy" else "macro_f1",
        "best_so_far": best,
        "floor": best,
        "collapsed": {"domain": {"label": "neutral", "share": 1.0}},
        "failed": ["domain"],
        "kept_student": "r1",
    }


def test_a_balanced_student_with_a_higher_macro_f1_passes():
    gate = GateConfig()
    entry = {"eval": choice_eval(0.50, 0.48, {"negative": 7, "neutral": 14, "positive": 9}), "student": "r2"}
    student, best = apply_gate(gate, entry, {"domain": 0.40}, Path("r1"), Path("r2"))
    assert student == Path("r2") and best == {"domain": 0.48}
    assert entry["gate"] == {"passed": True, "metric": "macro_f1", "best_so_far": 0.40, "floor": 0.40}


def test_the_gate_metric_picks_the_score_compared():
    balanced = choice_eval(0.50, 0.48, {"negative": 7, "neutral": 14, "positive": 9})
    entry = {"eval": dict(balanced), "student": "r2"}  # macro-F1 0.48 is below 0.49
    assert apply_gate(GateConfig(), entry, {"domain": 0.49}, Path("r1"), Path("r2"))[0] == Path("r1")
    entry = {"eval": dict(balanced), "student": "r2"}  # accuracy 0.50 is not
    assert apply_gate(GateConfig(metric="accuracy"), entry, {"domain": 0.49}, Path("r1"), Path("r2")) == (
        Path("r2"),
        {"domain": 0.50},
    )
    assert entry["gate"]["metric"] == "accuracy"
    # 'auto': accuracy on a mixed set (by_kind) and on a set without macro-F1; no gate reads as 'auto'
    assert (
        gate_metric({"accuracy": 0.5, "macro_f1": 0.4, "by_kind": {}}) == "accuracy"
        and gate_metric({"accuracy": 0.5}) == "accuracy"
    )
    assert gate_metric({"accuracy": 0.5}, GateConfig(metric="macro_f1")) == "accuracy"
    assert set_scores({**balanced, "skills": {"cot": {"accuracy": 0.25}}}) == {"domain": 0.48, "skill:cot": 0.25}


def test_collapse_is_judged_against_the_gold_labels_and_on_every_set():
    gate = GateConfig(max_regression=1.0)
    lopsided = {
        "n": 30,
        "accuracy": 0.97,
        "macro_f1": 0.49,
        "histogram": {"yes": 30},
        "gold_histogram": {"no": 1, "yes": 29},
    }
    entry = {"eval": lopsided, "student": "r2"}  # the gold answers are as lopsided (29/30 >= 0.95): not a collapse
    assert (
        apply_gate(gate, entry, {"domain": 0.49}, Path("r1"), Path("r2"))[0] == Path("r2")
        and "collapsed" not in entry["gate"]
    )
    skill = choice_eval(0.60, 0.25, {"negative": 1, "neutral": 29})  # 29/30 = 0.967 of the items
    entry = {"eval": {"accuracy": 0.9, "skills": {"label": skill}}, "student": "r2"}
    student, _ = apply_gate(gate, entry, {"domain": 0.5, "skill:label": 0.2}, Path("r1"), Path("r2"))
    assert student == Path("r1") and entry["gate"]["failed"] == ["skill:label"]
    assert entry["gate"]["collapsed"] == {"skill:label": {"label": "neutral", "share": 0.9667}}
    assert entry["gate"]["skills"]["label"] == {"macro_f1": 0.25, "best_so_far": 0.2, "floor": -0.8, "passed": False}
    entry = {"eval": {"accuracy": 0.9, "skills": {"label": skill}}, "student": "r2"}
    assert apply_gate(
        GateConfig(max_regression=1.0, max_label_share=0.99), entry, {"domain": 0.5}, Path("r1"), Path("r2")
    )[0] == Path("r2")


def test_evaluate_reports_histograms_balanced_accuracy_and_intervals(tiny_model_dir):
    from kdagent.evaluate.runner import evaluate
    from kdagent.generation.engine import Engine
    from kdagent.records import Task

    labels = ["negative", "neutral", "positive"]
    tasks = [
        Task(
            id=f"c{i}",
            prompt=f"Sentence {i}: sales were {['down', 'flat', 'up'][i % 3]} this quarter. Sentiment?",
            choices=labels,
            answer=labels[i % 3 if i < 6 else 1],
            kind="choice",
        )
        for i in range(8)
    ]
    tasks += [Task(id="n1", prompt="What is 2 + 3?", answer="5", kind="numeric")]
    engine = Engine(tiny_model_dir, device="cpu")
    try:
        summary, predictions = evaluate(engine, tasks, max_new_tokens=4, batch_size=8, bootstrap=200)
        plain, _ = evaluate(engine, tasks[:8], max_new_tokens=4, batch_size=8, bootstrap=0)
    finally:
        engine.close()
    assert summary["n"] == 9 and set(summary["by_kind"]) == {"choice", "numeric"}
    choice = [p for p in predictions if p["kind"] == "choice"]
    assert summary["gold_histogram"] == {"negative": 2, "neutral": 4, "positive": 2}
    assert summary["histogram"] == {
        label: sum(p["predicted"] == label for p in choice) for label in sorted({p["predicted"] for p in choice})
    }
    recalls = [
        sum(p["correct"] for p in choice if p["answer"] == label) / n for label, n in summary["gold_histogram"].items()
    ]
    assert summary["balanced_accuracy"] == round(sum(recalls) / 3, 4)
    assert set(summary["ci"]) == {"accuracy", "macro_f1", "balanced_accuracy"}
    for key, (low, high) in summary["ci"].items():
        assert 0.0 <= low <= summary[key] <= high <= 1.0
    assert (
        "ci" not in plain
        and "by_kind" not in plain
        and set(plain) >= {"macro_f1", "balanced_accuracy", "histogram", "gold_histogram"}
    )
