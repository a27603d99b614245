"""The loop on the fast engine (the default) gives what the plain path (`model.generate`) gives: a whole
greedy round run both ways writes the same tasks, replies, feedback, training data and scores."""

import json

import pytest

from kdagent.loop.runner import run_recipe
from kdagent.plugins import build_plugins
from kdagent.recipe import Recipe


def _rows(path, drop=("id", "generation_id", "teacher", "provenance")):
    """The file's records without the fields that name the teacher's settings (its backend among them)."""
    rows = []
    for line in path.open():
        row = json.loads(line)
        rows.append({k: v for k, v in row.items() if k not in drop})
    return rows


@pytest.fixture(scope="module")
def wide_tiny_dir(tmp_path_factory, tiny_llama):
    """The tiny llama of conftest, initialised wide enough that its greedy replies are not empty, saved."""
    model, tokenizer = tiny_llama(initializer_range=0.3)
    out = tmp_path_factory.mktemp("wide-tiny-llama")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_the_loop_gives_the_same_greedy_results_on_both_backends(tmp_path, wide_tiny_dir):
    tiny_model_dir = wide_tiny_dir
    runs = {}
    for backend in ("kdagent", "hf"):
        r = Recipe.model_validate(
            {
                "name": "tiny",
                "seed": 3,
                "student": {"model": str(tiny_model_dir), "max_length": 256},
                # greedy, one sample, several prompts of different lengths in a batch (the engines pad differently)
                "teacher": {
                    "kind": "self",
                    "samples": 1,
                    "temperature": 0.0,
                    "max_new_tokens": 12,
                    "batch_size": 4,
                    "backend": backend,
                },
                "domain": {"name": "arithmetic", "seed_tasks": 6, "eval_tasks": 4, "options": {"corpus_examples": 4}},
                "retrieval": {"enabled": False},
                "feedback": {"fallback_to_reference": True},
                "update": {"epochs": 1, "batch_size": 2, "learning_rate": 1e-3},
                "evaluation": {"max_new_tokens": 10, "skill_tasks": 4, "batch_size": 3, "backend": backend},
            }
        )
        runs[backend] = (run_recipe(r, tmp_path / backend, build_plugins(load_entry_points=False)), tmp_path / backend)

    (fast, fast_dir), (plain, plain_dir) = runs["kdagent"], runs["hf"]
    assert fast_dir != plain_dir
    for name in (
        "round-01/tasks.jsonl",
        "round-01/generations.jsonl",
        "round-01/feedback.jsonl",
        "round-01/sft.jsonl",
        "baseline-predictions.jsonl",
        "baseline-predictions.cot.jsonl",
        "round-01/eval-predictions.jsonl",
        "round-01/eval-predictions.cot.jsonl",
    ):
        assert _rows(fast_dir / name) == _rows(plain_dir / name), name
    texts = [g["text"] for g in _rows(fast_dir / "round-01/generations.jsonl")]
    assert len(texts) == 6 and len(set(texts)) > 1  # real, varied replies (not all empty)

    def strip(entry):
        return {k: v for k, v in entry.items() if k not in ("seconds", "student")}

    assert strip(fast["baseline"]) == strip(plain["baseline"])
    (a,), (b,) = fast["rounds"], plain["rounds"]
    assert a["eval"] == b["eval"] and a["counts"] == b["counts"]
    assert a["update"]["train_loss"] == b["update"]["train_loss"]
