"""`update.report_to` passes through to the trainer: TensorBoard (where installed) gets event files with the
training loss, beside the round's student; the default reports to nothing."""

import pytest

from kdagent.recipe import UpdateConfig
from kdagent.records import Provenance, SFTExample
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
    report = train_sft(examples(), tiny_model_dir, tmp_path / "student", update, 128, seed=0)
    (events,) = (tmp_path / "tensorboard" / "student").glob("events.out.tfevents.*")
    scalars = EventAccumulator(str(events)).Reload()
    losses = [e.value for e in scalars.Scalars("train/loss")]
    assert len(losses) == report["steps"] == 2 and losses == pytest.approx(report["losses"], abs=1e-3)


def test_per_round_scores_go_to_tensorboard_at_the_end_of_a_run(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install tensorboard)")
    import json

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
