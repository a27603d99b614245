"""Training under `accelerate launch` (issue 28): 2 processes on the CPU (DDP over gloo) train the config-built
tiny llama with SFT and DPO through kdagent/update/launch.py, as the loop's update stage does.

- The same global batch as one process: `update.batch_size: 4` is 4 examples a step on 1 process and 2 on
  each of 2, so both runs see the same batches and take the same steps. Tolerance: 1e-3 on every logged loss
  (fp32 here, KDAGENT_CPU_BF16=0; the difference is the order of fp32 sums: measured 0.0000 at the logged 4
  decimals) and 1e-4 on every weight of the saved students.
- One checkpoint: rank 0 writes the student once (no work or job folder left beside it), and each Trainer
  checkpoint once, holding both ranks' RNG states.
- Killed mid-way: the loop's process is SIGKILLed after a checkpoint; its ranks stop on their own, and the run
  started again resumes from the last complete checkpoint and ends with the uninterrupted 1-process losses.

Run as a script (`python tests/test_accelerate_launch.py MODEL OUT N`), it trains the SFT job: the process the
kill test kills.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

TOL_LOSS = 1e-3
TOL_WEIGHT = 1e-4


def sft_examples(n: int = 8) -> list:
    from kdagent.records import Provenance, SFTExample

    prov = Provenance(round=1, teacher="t", skill="cot", domain="d", task_id="t")
    return [
        SFTExample(
            id=str(i),
            prompt=[{"role": "user", "content": f"What is {i} + {3 * i}?"}],
            completion=[{"role": "assistant", "content": f"{i} + {3 * i} = {4 * i}." + " Done." * (i % 3)}],
            provenance=prov,
        )
        for i in range(n)
    ]


def preference_pairs(n: int = 8) -> list:
    from kdagent.records import PreferencePair, Provenance

    prov = Provenance(round=1, teacher="t", skill="cot", domain="d", task_id="t")
    return [
        PreferencePair(
            id=f"p{i}",
            prompt=[{"role": "user", "content": f"What is {i} plus {i}?"}],
            chosen=[{"role": "assistant", "content": f"The answer is {2 * i}."}],
            rejected=[{"role": "assistant", "content": "Banana kettle moon." + " Moon." * i}],
            margin=1.0,
            provenance=prov,
        )
        for i in range(n)
    ]


def make_job(method: str, model_dir: Path, out: Path, epochs: float = 1):
    from kdagent.plugins import build_plugins
    from kdagent.recipe import Recipe
    from kdagent.update.updater import UpdateJob, options_for

    recipe = Recipe.model_validate(
        {
            "name": "launch",
            "student": {"model": str(model_dir), "max_length": 128},
            "feedback": {"preferences": True},
            "update": {
                "method": method,
                "epochs": epochs,
                "batch_size": 4,
                "learning_rate": 1e-3,
                "checkpoint_steps": 1,
            },
        }
    )
    plugins = build_plugins()
    updater = plugins.updaters[method].obj
    job = UpdateJob(
        recipe=recipe,
        options=options_for(recipe.update, method, updater),
        student=Path(model_dir),
        out=Path(out),
        seed=1,
        examples=sft_examples(),
        pairs=preference_pairs(),
        plugins=plugins,
    )
    return updater, job


def accelerate(n: int) -> SimpleNamespace:  # what update.launcher holds
    return SimpleNamespace(kind="accelerate", num_processes=n, config_file=None)


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def assert_same_training(one: dict, two: dict, out_one: Path, out_two: Path) -> float:
    """The same steps, losses within TOL_LOSS, weights within TOL_WEIGHT; returns the largest loss difference."""
    assert one["steps"] == two["steps"] and one["examples"] == two["examples"]
    assert len(one["losses"]) == len(two["losses"]) == one["steps"]
    diff = max(abs(a - b) for a, b in zip(one["losses"], two["losses"]))
    assert diff <= TOL_LOSS, (one["losses"], two["losses"])
    a, b = weights(out_one), weights(out_two)
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= TOL_WEIGHT, worst
    return diff


def only_the_student(out: Path) -> None:
    """One student written, and nothing else beside it: no work folder, no job folder."""
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out)


@pytest.fixture(scope="module", autouse=True)
def fp32():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KDAGENT_CPU_BF16", "0")  # the ranks inherit it
        yield


@pytest.fixture(scope="module")
def sft_one_process(fp32, tiny_model_dir, tmp_path_factory):
    """The uninterrupted 1-process SFT run both SFT tests compare with."""
    from kdagent.update.launch import train

    out = tmp_path_factory.mktemp("sft-1") / "student"
    updater, job = make_job("sft", tiny_model_dir, out, epochs=2)
    report = train(updater, job)  # no launcher: in this process, as before
    assert report["steps"] == 4
    return report, out


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_two_processes_train_as_one_with_the_same_global_batch(
    method, sft_one_process, tiny_model_dir, tmp_path, capfd
):
    from kdagent.update.launch import train

    if method == "sft":
        one, out_one = sft_one_process
    else:
        out_one = tmp_path / "one" / "student"
        one = train(*make_job(method, tiny_model_dir, out_one))
    out_two = tmp_path / "two" / "student"
    two = train(*make_job(method, tiny_model_dir, out_two, epochs=2 if method == "sft" else 1), launcher=accelerate(2))
    err = capfd.readouterr().err
    assert "accelerate launch on 2 processes" in err
    diff = assert_same_training(one, two, out_one, out_two)
    print(f"{method}: 1 process {one['losses']}, 2 processes {two['losses']}, largest difference {diff:.4f}")
    only_the_student(out_two)


def _launched(pid: int) -> list:
    """The launcher and the 2 ranks under process `pid`, once all 3 are up (else [])."""
    import psutil

    found, ranks = [], 0
    for p in psutil.Process(pid).children(recursive=True):
        try:
            line = " ".join(p.cmdline())
        except psutil.NoSuchProcess:
            continue
        if "accelerate.commands.launch" in line or "kdagent.update.worker" in line:
            found.append(p)
            ranks += "accelerate.commands.launch" not in line
    return found if ranks == 2 else []


def test_a_run_killed_midway_resumes_from_rank_zeros_checkpoint(sft_one_process, tiny_model_dir, tmp_path):
    import psutil

    from kdagent.update.common import checkpoint_problem

    out = tmp_path / "round" / "student"
    trainer_dir = out.parent / ".student.partial" / "trainer"
    cmd = [sys.executable, __file__, str(tiny_model_dir), str(out), "2"]
    log = tmp_path / "killed.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
    deadline, ranks = time.time() + 600, []
    while (
        time.time() < deadline
        and proc.poll() is None
        and not (trainer_dir / "checkpoint-2" / "trainer_state.json").exists()
    ):
        ranks = _launched(proc.pid) or ranks
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed:\n" + log.read_text()[-3000:]
    assert len(ranks) == 3, "never saw the launcher and its 2 ranks"
    for p in ranks:  # frozen first, so that the tiny model cannot finish in the moment before the ranks notice
        p.suspend()
    os.kill(proc.pid, signal.SIGKILL)  # the loop's process only, as a kill of `kdagent run` would
    proc.wait()
    time.sleep(1.5)  # longer than the ranks' watch of the loop's process (every 0.5 s): it is due when they wake
    for p in ranks:
        try:
            p.resume()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(ranks, timeout=30)
    assert not alive, "the launcher or ranks outlived the killed run"
    assert not out.exists()
    checkpoints = sorted(p for p in trainer_dir.iterdir() if p.name.startswith("checkpoint-"))
    assert checkpoints, log.read_text()[-3000:]
    for checkpoint in checkpoints:  # written once, whole, with both ranks' RNG states
        assert checkpoint_problem(checkpoint) is None
        assert sorted(p.name for p in checkpoint.glob("rng_state*.pth")) == ["rng_state_0.pth", "rng_state_1.pth"]

    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    step = [
        int(line.rsplit("step ", 1)[1].rstrip(")"))
        for line in resumed.stderr.splitlines()
        if line.startswith("resuming training from")
    ]
    assert step and step[0] >= 2, resumed.stderr[-3000:]
    report = json.loads(resumed.stdout.strip().splitlines()[-1])
    one, out_one = sft_one_process
    diff = assert_same_training(one, report, out_one, out)
    print(
        f"resumed at step {step[0]}: losses {report['losses']}, 1 process {one['losses']}, largest difference {diff:.4f}"
    )
    only_the_student(out)


def test_a_batch_that_does_not_divide_among_the_processes_is_refused_before_launching(tiny_model_dir, tmp_path):
    from kdagent.errors import UserError
    from kdagent.update.launch import train

    updater, job = make_job("sft", tiny_model_dir, tmp_path / "student")
    with pytest.raises(UserError, match=r"update.batch_size: 4 does not divide among 3 processes"):
        train(updater, job, launcher=accelerate(3))
    assert not list(tmp_path.iterdir())  # nothing written, nothing launched


FSDP_CONFIG = """\
compute_environment: LOCAL_MACHINE
distributed_type: FSDP
num_machines: 1
machine_rank: 0
num_processes: 2
mixed_precision: 'no'
rdzv_backend: static
same_network: true
use_cpu: false
fsdp_config:
  fsdp_version: 2
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_state_dict_type: FULL_STATE_DICT
  fsdp_reshard_after_forward: true
"""


def test_an_fsdp_config_is_refused_by_the_ranks_with_one_line(tiny_model_dir, tmp_path, capfd):
    """FSDP stays refused: rank 0 saves the student from its own whole model, and on CPU ranks accelerate does
    not shard under an FSDP config (it builds no FSDP plugin and trains DDP over gloo), so nothing here could
    check a sharded save. The ranks refuse before any training, and nothing is left beside the student's folder."""
    from kdagent.errors import UserError
    from kdagent.update.launch import train

    config = tmp_path / "fsdp.yaml"
    config.write_text(FSDP_CONFIG)
    out = tmp_path / "round" / "student"
    launcher = SimpleNamespace(kind="accelerate", num_processes=None, config_file=str(config))
    with pytest.raises(
        UserError, match=r"^update.launcher.config_file: FSDP is not wired yet .*use a DDP config"
    ) as caught:
        train(*make_job("sft", tiny_model_dir, out), launcher=launcher)
    assert "\n" not in str(caught.value)
    assert "accelerate launch on the processes of its config file" in capfd.readouterr().err
    assert not out.parent.exists() or not list(out.parent.iterdir())  # no student, no work folder, no job folder


def test_run_flags_set_the_recipes_launcher(tmp_path):
    from conftest import run_cli

    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: flags\n")
    result = run_cli(
        "run", str(recipe), "--launcher", "none", "--num-processes", "2", "--run-dir", str(tmp_path / "run")
    )
    assert result.returncode == 2 and "--num-processes is for --launcher accelerate" in result.stderr
    from kdagent.recipe_io import load_recipe

    # what `--launcher accelerate --num-processes 2` adds to the recipe's --set list
    launcher = load_recipe(
        recipe, ["update.launcher.kind=accelerate", "update.launcher.num_processes=2"]
    ).update.launcher
    assert (launcher.kind, launcher.num_processes, launcher.config_file) == ("accelerate", 2, None)


if __name__ == "__main__":  # the killed run: train the SFT job on N processes and print the report
    model_dir, out, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    os.environ["KDAGENT_CPU_BF16"] = "0"
    from kdagent.update.launch import train

    print(json.dumps(train(*make_job("sft", model_dir, out, epochs=2), launcher=accelerate(n))), flush=True)
