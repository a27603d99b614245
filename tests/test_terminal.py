"""A clean terminal: off a terminal, plain lines (no carriage returns, no per-step dicts); `--quiet`, no bars
and no library chatter; no FutureWarning from kdagent's own training arguments."""

import warnings

from conftest import run_cli
from kdagent.recipe import UpdateConfig
from kdagent.records import Provenance, SFTExample
from kdagent.testing import make_job


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


def test_training_prints_labelled_plain_lines_and_warns_nothing_of_ours(tmp_path, tiny_model_dir, capfd, monkeypatch):
    from kdagent.update.sft import train_sft

    monkeypatch.delenv("KDAGENT_QUIET", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_sft(
            make_job(
                tiny_model_dir,
                tmp_path / "round-01" / "student",
                update=UpdateConfig(epochs=1, batch_size=2),
                max_length=128,
                seed=0,
                examples=examples(),
            )
        )
    assert not [w for w in caught if issubclass(w.category, FutureWarning) and "checkpointing" in str(w.message)]
    out, err = capfd.readouterr()
    assert "[kdagent] round 1: update (sft): step 1/2, loss" in err and "step 2/2" in err
    assert "{'loss'" not in out + err  # transformers' per-step dicts

    monkeypatch.setenv("KDAGENT_QUIET", "1")
    train_sft(
        make_job(
            tiny_model_dir,
            tmp_path / "round-02" / "student",
            update=UpdateConfig(epochs=1, batch_size=2),
            max_length=128,
            seed=0,
            examples=examples(),
        )
    )
    out, err = capfd.readouterr()
    assert "step" not in err and "{'loss'" not in out + err


def test_eval_off_a_terminal_and_quiet(tiny_model_dir, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"id": "1", "prompt": "1 + 1?", "answer": "2", "kind": "numeric"}\n')
    plain = run_cli("eval", "--model", str(tiny_model_dir), "--data", str(data), "--max-new-tokens", "4", "--json")
    assert plain.returncode == 0, plain.stderr
    assert "\r" not in plain.stderr and "it/s" not in plain.stderr  # no progress bars in a log
    quiet = run_cli(
        "eval", "--model", str(tiny_model_dir), "--data", str(data), "--max-new-tokens", "4", "--json", "--quiet"
    )
    assert quiet.returncode == 0 and quiet.stderr.strip() == "", quiet.stderr


def test_elicit_draws_no_bar_off_a_terminal(tiny_model_dir, tmp_path, capfd):
    from kdagent.recipe import TeacherConfig
    from kdagent.records import GroundedTask, Task
    from kdagent.skills.cot import ChainOfThought
    from kdagent.synth.elicit import elicit
    from kdagent.teachers.hf import HFTeacher

    config = TeacherConfig(kind="self", samples=1, max_new_tokens=4, batch_size=2)
    teacher = HFTeacher(tiny_model_dir, config, label="self")
    grounded = [
        GroundedTask(task=Task(id=f"t{i}", prompt=f"{i} + 1?", answer=str(i + 1)), passages=[]) for i in range(3)
    ]
    gens = elicit(lambda: teacher, ChainOfThought(), grounded, 1, 0, {"samples": 1}, tmp_path / "g.jsonl", chunk=1)
    assert len(gens) == 3
    err = capfd.readouterr().err
    # captured stderr is not a terminal: no chunk bar (the libraries' bars read TQDM_DISABLE, set by the CLI at start)
    assert "chunk/s" not in err and "round 1: elicit:" not in err, err[-300:]
