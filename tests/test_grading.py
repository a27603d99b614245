"""The scores of kdagent/evaluate/grading.py on small inputs worked out by hand."""

import pytest

from kdagent.evaluate.grading import accuracy, balanced_accuracy, bootstrap_ci, label_histogram, macro_f1


def test_macro_f1_and_balanced_accuracy_see_a_label_collapse_that_accuracy_hides():
    gold = ["neutral", "neutral", "positive", "negative"]
    collapsed = ["neutral"] * 4
    assert accuracy(gold, collapsed) == 0.5
    # neutral: precision 2/4, recall 1, F1 2/3; positive and negative: 0
    assert macro_f1(gold, collapsed) == pytest.approx(2 / 9)
    assert balanced_accuracy(gold, collapsed) == pytest.approx(1 / 3)  # recalls 1, 0, 0


def test_balanced_accuracy_is_the_mean_recall_over_the_gold_labels():
    gold, predicted = ["a", "a", "a", "b"], ["a", "a", "b", "b"]
    assert balanced_accuracy(gold, predicted) == pytest.approx((2 / 3 + 1) / 2)
    assert balanced_accuracy(["a", "b"], ["c", "c"]) == 0.0  # a predicted label absent from gold adds no recall
    assert balanced_accuracy([], []) == 0.0
    assert macro_f1(["a", "a", "b"], ["a", "b", "b"]) == pytest.approx(2 / 3)  # both labels: P and R 1 and 1/2


def test_label_histogram_counts_each_label_in_label_order():
    histogram = label_histogram(["positive", "negative", "positive", "neutral"])
    assert histogram == {"negative": 1, "neutral": 1, "positive": 2}
    assert list(histogram) == ["negative", "neutral", "positive"]
    assert label_histogram([]) == {}


def test_bootstrap_ci_is_the_percentile_interval_of_the_resampled_scores():
    calls = iter(range(1000))
    # the resampled scores 0..999: the 2.5th and 97.5th percentiles interpolate between ranks 24/25 and 974/975
    low, high = bootstrap_ci([1, 2, 3], [1, 2, 3], lambda g, p: next(calls), resamples=1000)
    assert low == pytest.approx(24.975) and high == pytest.approx(974.025)
    assert bootstrap_ci([True] * 5, [True] * 5, accuracy) == [1.0, 1.0]  # every resample is all correct
    assert bootstrap_ci(["a"], ["b"], accuracy, resamples=50) == [0.0, 0.0]


def test_bootstrap_ci_resamples_items_with_a_fixed_seed():
    correct = [True, False]  # a resample scores 0, 1/2 or 1 with probabilities 1/4, 1/2, 1/4
    assert bootstrap_ci(correct, [True, True], accuracy, resamples=1000) == [0.0, 1.0]
    correct = [i % 3 != 0 for i in range(300)]  # accuracy 2/3 on 300 items: standard error ~0.027
    low, high = bootstrap_ci(correct, [True] * 300, accuracy, resamples=1000, seed=0)
    assert 0.59 < low < 2 / 3 < high < 0.74
    assert bootstrap_ci(correct, [True] * 300, accuracy, resamples=1000, seed=0) == [low, high]
    assert bootstrap_ci(correct, [True] * 300, accuracy, resamples=1000, seed=1) != [low, high]
    assert bootstrap_ci([], [], accuracy) == [0.0, 0.0] and bootstrap_ci(correct, correct, accuracy, resamples=0) == [
        0.0,
        0.0,
    ]
