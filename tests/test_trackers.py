"""`update.report_to` passes through to the trainer: TensorBoard (where installed) gets event files with the
training loss, beside the round's student; the default reports to nothing. The per-round scores reach the tracker
as each round ends, once each however often they are sent."""

import json

import pytest

from kdagent.hookspecs import hookimpl
from kdagent.recipe import Recipe, UpdateConfig
from kdagent.records import Provenance, SFTExample
from kdagent.testing import make_job
from kdagent.update.common import report_to


def examples(n=4):
    prov = Provenance(round=1, teacher="t", skill="cot", domain="d", task_id="t")
    return [
        SFTExample(
            id=str(i),
            prompt=[{"role": "user", "content": f"What is {i} + 1?"}],
            completion=[{"role": "assistant", "content": f"The answer is {i + 1}."}],
            provenance=prov,
        )
        for i in range(n)
    ]


def test_report_to_defaults_to_nothing_and_takes_a_name_or_a_list(tmp_path):
    assert report_to(UpdateConfig(), tmp_path / ".student.partial") == []
    assert report_to(UpdateConfig(report_to="wandb"), tmp_path / ".student.partial") == ["wandb"]
    assert report_to(UpdateConfig(report_to=["trackio", "mlflow"]), tmp_path / ".student.partial") == [
        "trackio",
        "mlflow",
    ]


def test_tensorboard_writes_event_files_with_the_loss(tmp_path, tiny_model_dir, monkeypatch):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install tensorboard)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from kdagent.update.sft import train_sft

    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    update = UpdateConfig(learning_rate=1e-3, epochs=1, batch_size=2, report_to="tensorboard")
    report = train_sft(
        make_job(tiny_model_dir, tmp_path / "student", update=update, max_length=128, seed=0, examples=examples())
    )
    (events,) = (tmp_path / "tensorboard" / "student").glob("events.out.tfevents.*")
    scalars = EventAccumulator(str(events)).Reload()
    losses = [e.value for e in scalars.Scalars("train/loss")]
    assert len(losses) == report["steps"] == 2 and losses == pytest.approx(report["losses"], abs=1e-3)


def test_per_round_scores_go_to_tensorboard_at_the_end_of_a_run(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install tensorboard)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from kdagent.api import finish_run

    (tmp_path / "recipe.yaml").write_text("name: t\nupdate:\n  report_to: [tensorboard]\n")
    score = lambda acc: {"n": 10, "accuracy": acc, "ci": {"accuracy": [acc - 0.1, acc + 0.1]}}  # noqa: E731
    (tmp_path / "metrics.json").write_text(
        json.dumps(
            {
                "baseline": score(0.2),
                "rounds": [
                    {"round": 1, "eval": score(0.4), "counts": {"tasks": 8, "sft_examples": 5}},
                    {"round": 2, "eval": score(0.5), "counts": {"tasks": 8, "sft_examples": 6}},
                ],
            }
        )
    )
    finish_run(tmp_path, warn=pytest.fail)
    (events,) = (tmp_path / "tensorboard" / "rounds").glob("events.out.tfevents.*")
    scalars = EventAccumulator(str(events)).Reload()
    assert [(e.step, round(e.value, 3)) for e in scalars.Scalars("eval/held-out/accuracy")] == [
        (0, 0.2),
        (1, 0.4),
        (2, 0.5),
    ]
    assert [e.value for e in scalars.Scalars("counts/sft_examples")] == [5, 6]


def tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Every (step, value) of each tag in the folder's one event file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = folder.glob("events.out.tfevents.*")
    scalars = EventAccumulator(str(events)).Reload()
    return {tag: [(e.step, e.value) for e in scalars.Scalars(tag)] for tag in scalars.Tags()["scalars"]}


class RoundStartProbe:
    """What the trackers hold when each round starts."""

    def __init__(self):
        self.seen = {}

    @hookimpl
    def kdagent_round_start(self, round, run_dir):
        self.seen[round] = tensorboard_scalars(run_dir / "tensorboard" / "rounds")


def test_each_round_reaches_tensorboard_as_it_ends_and_only_once(tmp_path, tiny_model_dir, monkeypatch):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install tensorboard)")
    from kdagent.api import finish_run
    from kdagent.loop.runner import run_recipe
    from kdagent.plugins import build_plugins

    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    recipe = Recipe.model_validate(
        {
            "name": "trackers",
            "seed": 2,
            "student": {"model": str(tiny_model_dir), "max_length": 256},
            "teacher": {"kind": "self", "samples": 2, "temperature": 1.0, "max_new_tokens": 8, "batch_size": 2},
            "domain": {"name": "arithmetic", "seed_tasks": 3, "eval_tasks": 2},
            "skills": ["cot"],
            "retrieval": {"enabled": False},
            "feedback": {"fallback_to_reference": True},
            "update": {"epochs": 1, "batch_size": 2, "learning_rate": 1e-3, "report_to": "tensorboard"},
            "evaluation": {"max_new_tokens": 8},
            "loop": {"rounds": 2},
        }
    )
    run_dir = tmp_path / "run"
    plugins = build_plugins(load_entry_points=False)
    probe = RoundStartProbe()
    plugins.pm.register(probe, name="probe")
    metrics = run_recipe(recipe, run_dir, plugins)
    finish_run(run_dir, warn=pytest.fail)  # sends them all again, as `kdagent run` does at the end
    run_recipe(recipe, run_dir, build_plugins(load_entry_points=False), resume=True)  # nothing left to run

    accuracies = [metrics["baseline"]["accuracy"]] + [e["eval"]["accuracy"] for e in metrics["rounds"]]
    sft = [e["counts"]["sft_examples"] for e in metrics["rounds"]]
    assert [round(v, 4) for _, v in probe.seen[1]["eval/held-out/accuracy"]] == [round(accuracies[0], 4)]
    assert "counts/sft_examples" not in probe.seen[1]
    # round 1's values were there before round 2 started
    assert [(s, round(v, 4)) for s, v in probe.seen[2]["eval/held-out/accuracy"]] == [
        (step, round(v, 4)) for step, v in enumerate(accuracies[:2])
    ]
    assert probe.seen[2]["counts/sft_examples"] == [(1, sft[0])]
    final = tensorboard_scalars(run_dir / "tensorboard" / "rounds")  # one value per round per metric
    assert [(s, round(v, 4)) for s, v in final["eval/held-out/accuracy"]] == [
        (step, round(v, 4)) for step, v in enumerate(accuracies)
    ]
    assert final["counts/sft_examples"] == [(1, sft[0]), (2, sft[1])]
    assert all(len({step for step, _ in values}) == len(values) for values in final.values())


def test_a_tracker_that_fails_warns_in_one_line_and_does_not_fail_the_run(tmp_path):
    from kdagent.trackers import send_rounds

    (tmp_path / "recipe.yaml").write_text("name: t\nupdate:\n  report_to: [tensorboard]\n")
    (tmp_path / "metrics.json").write_text(json.dumps({"baseline": {"n": 2, "accuracy": 0.5}, "rounds": []}))
    (tmp_path / "tensorboard").write_text("a file where the tracker's folder should be")
    lines = []
    assert send_rounds(tmp_path, lines.append) is None
    (line,) = lines
    assert line.startswith("warning: per-round scores not sent to the trackers (") and "\n" not in line
