"""Torn and corrupt files: a torn last JSONL line is detected, reported and dropped (and cut off before the
next append); a torn line anywhere else is an error naming the line; a corrupt or partial checkpoint
folder is reported and skipped for the last complete one, and a pickled payload planted in a checkpoint
never runs."""

import json
import pickle

import pytest

from kdagent.errors import UserError
from kdagent.jsonl import append_jsonl, read_jsonl
from kdagent.update.common import resume_point


def test_a_torn_last_line_is_reported_and_dropped_and_cut_before_the_next_append(tmp_path, capsys):
    path = tmp_path / "generations.partial.jsonl"
    append_jsonl(path, [{"id": "a"}, {"id": "b"}])
    with open(path, "ab") as fh:
        fh.write(b'{"id": "c", "text": "half a rec')  # the process died in the middle of a write
    assert [r["id"] for r in read_jsonl(path)] == ["a", "b"]
    assert "dropped a torn last line (31 bytes)" in capsys.readouterr().err
    append_jsonl(path, [{"id": "d"}])
    assert path.read_bytes() == b'{"id": "a"}\n{"id": "b"}\n{"id": "d"}\n'  # nothing of the torn record is left


def test_a_torn_line_in_the_middle_is_an_error_naming_it(tmp_path):
    path = tmp_path / "feedback.jsonl"
    path.write_bytes(b'{"id": "a"}\n{"id": "b\n{"id": "c"}\n')
    with pytest.raises(UserError, match=r"feedback.jsonl:2: not valid JSON"):
        read_jsonl(path)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def _checkpoint(trainer, step: int):
    """A checkpoint folder with the files the Trainer writes, in their real formats."""
    import torch
    from safetensors.torch import save_file

    folder = trainer / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    save_file({"w": torch.zeros(64, 64)}, str(folder / "model.safetensors"))
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        torch.save({"state": torch.ones(4)}, folder / name)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    return folder


def test_corrupt_and_partial_checkpoints_are_skipped_for_the_last_complete_one(tmp_path, capfd):
    trainer = tmp_path / ".student.partial" / "trainer"
    marker = tmp_path / "PWNED"
    for step in range(1, 9):
        _checkpoint(trainer, step)
    weights = trainer / "checkpoint-3" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # killed while writing the weights
    (trainer / "checkpoint-4" / "trainer_state.json").unlink()  # killed before the Trainer's last file
    (trainer / "checkpoint-5" / "optimizer.pt").unlink()  # killed while the Trainer deleted an old one
    (trainer / "checkpoint-6" / "trainer_state.json").write_text('{"global_st')
    (trainer / "checkpoint-7" / "rng_state.pth").write_bytes(pickle.dumps(_Payload(marker)))  # planted payload
    optimizer = trainer / "checkpoint-8" / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[: optimizer.stat().st_size // 2])
    assert resume_point(tmp_path / ".student.partial") == str(trainer / "checkpoint-2")
    err = capfd.readouterr().err
    for step, reason in [
        (3, "model.safetensors is truncated"),
        (4, "no readable trainer_state.json"),
        (5, "no optimizer.pt"),
        (6, "no readable trainer_state.json"),
        (7, "rng_state.pth is not a complete archive"),
        (8, "optimizer.pt is not a complete archive"),
    ]:
        assert f"checkpoint-{step} ({reason}" in err, (step, err)
    assert sorted(p.name for p in trainer.iterdir()) == ["checkpoint-1", "checkpoint-2"]  # the broken ones are gone
    assert not marker.exists()


def test_no_checkpoint_at_all_means_training_starts_over(tmp_path):
    assert resume_point(tmp_path / "absent") is None
    (tmp_path / "w" / "trainer" / "checkpoint-1").mkdir(parents=True)
    assert resume_point(tmp_path / "w") is None


def test_a_killed_writers_temporary_files_are_removed_on_resume(tmp_path):
    from kdagent.jsonl import remove_temporaries

    (tmp_path / "round-01").mkdir()
    stale = [tmp_path / ".metrics.json.tmp-4242", tmp_path / "round-01" / ".update.json.tmp-17"]
    for p in stale:
        p.write_text("{")
    kept = [tmp_path / "round-01" / "update.json", tmp_path / ".lock", tmp_path / "round-01" / ".student.tmp-notes"]
    for p in kept:
        p.write_text("{}")
    assert remove_temporaries(tmp_path) == 2
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
