"""The memory plan (kdagent/memory.py): parameters read from safetensors headers, a plan per stage, and a
run that cannot fit refused with the numbers before any model loads."""

import pytest
import yaml

from conftest import run_cli
from kdagent.errors import UserError
from kdagent.memory import check_plan, memory_plan, param_count, peak_rss_mb, reset_peak_rss
from kdagent.recipe import Recipe


def test_param_count_reads_the_safetensors_headers(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    assert param_count(tiny_model_dir) == AutoModelForCausalLM.from_pretrained(tiny_model_dir).num_parameters()


def test_the_plan_grows_with_what_each_stage_holds(tiny_model_dir):
    def plan(**update):
        recipe = Recipe.model_validate({"name": "p", "student": {"model": str(tiny_model_dir)}, "update": update})
        return memory_plan(recipe, tiny_model_dir, tiny_model_dir, "cpu")

    small, big = plan(batch_size=2), plan(batch_size=16)
    assert set(small["stages_mb"]) == {"elicit", "evaluate", "update"}  # the stage table's names
    assert big["stages_mb"]["update"] > small["stages_mb"]["update"] == small["update_methods_mb"]["sft"]
    assert big["stages_mb"]["evaluate"] == small["stages_mb"]["evaluate"]
    both = plan(method=["sft", "dpo"], batch_size=2)
    methods = both["update_methods_mb"]
    assert methods["dpo"] > methods["sft"] and both["stages_mb"]["update"] == methods["dpo"]  # and a reference model
    lora = plan(method="dpo", batch_size=2, lora={"r": 4})["update_methods_mb"]
    assert lora["dpo"] < methods["dpo"]  # an adapter: no reference copy, no full optimiser state
    assert small["student_params"] == param_count(tiny_model_dir) and small["available_mb"] > 0
    check_plan(small)  # fits this machine


def test_the_plan_of_several_training_processes(tmp_path, tiny_model_dir, monkeypatch):
    """Under update.launcher each process trains on its share of the batch; CPU processes share the memory."""
    monkeypatch.setattr("kdagent.memory.available_mb", lambda device: (80_000.0, device))  # no GPU here to ask

    def plan(launcher=None, device="cpu", batch_size=8):
        update = {"batch_size": batch_size, **({"launcher": launcher} if launcher else {})}
        recipe = Recipe.model_validate({"name": "p", "student": {"model": str(tiny_model_dir)}, "update": update})
        return memory_plan(recipe, tiny_model_dir, tiny_model_dir, device)

    one, two = plan(), plan({"num_processes": 2})
    assert one["training_processes"] == 1 and two["training_processes"] == 2
    half = plan(batch_size=4)["update_methods_mb"]["sft"]  # one process's share of the batch
    assert two["update_methods_mb"]["sft"] == 2 * half + 1000  # two of them and the loop's own process
    gpu = plan({"num_processes": 2}, device="cuda")["update_methods_mb"]["sft"]
    assert gpu == plan(device="cuda", batch_size=4)["update_methods_mb"]["sft"]  # one GPU a process
    config = tmp_path / "accelerate.yaml"
    config.write_text("distributed_type: MULTI_CPU\nnum_processes: 4\n")
    assert plan({"config_file": str(config)})["training_processes"] == 4


def test_a_plan_over_the_limit_is_refused_unless_turned_off(monkeypatch):
    plan = {
        "device": "cpu",
        "stages_mb": {"update": 900},
        "update_methods_mb": {"sft": 900},
        "training_processes": 1,
        "peak_stage": "update",
        "peak_mb": 900,
        "available_mb": 500,
        "available_from": "MemAvailable",
    }
    with pytest.raises(
        UserError, match=r"memory plan: update \(sft\) needs about 900 MiB but 500 MiB is available .*update.batch_size"
    ):
        check_plan(plan)
    monkeypatch.setenv("KDAGENT_MEMORY_PLAN", "off")
    check_plan(plan)


def test_a_run_that_cannot_fit_exits_2_before_any_model_loads(tmp_path, tiny_model_dir):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "name": "huge",
                "student": {"model": str(tiny_model_dir), "max_length": 8192},
                "update": {"batch_size": 100000},
                "retrieval": {"enabled": False},
            }
        )
    )
    result = run_cli("run", str(recipe), "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("Error:")]
    assert line.startswith("Error: memory plan: update (sft) needs about ") and "MiB is available" in line
    assert not (tmp_path / "run").exists() and "Traceback" not in result.stderr


def test_peak_rss_is_reported_in_mib():
    assert 50 < peak_rss_mb() < 64 * 1024


def _touched(mib: int):
    """`mib` MiB of fresh anonymous memory, every page written. Mapped directly rather than through malloc,
    which may hand back already-resident pages freed by earlier tests and so raise no peak at all."""
    import mmap

    block = mmap.mmap(-1, mib * 1024 * 1024)
    for offset in range(0, len(block), mmap.PAGESIZE):
        block[offset] = 1
    return block


def test_a_stage_peak_starts_again_after_a_reset():
    """Each stage's `peak_rss_mb` is its own: a reset forgets an earlier stage's larger peak."""
    blob = _touched(300)
    during = peak_rss_mb()
    blob.close()  # unmapped: the 300 MiB leave the resident set
    if not reset_peak_rss():
        pytest.skip("this kernel does not let the process reset its peak RSS (/proc/self/clear_refs)")
    after = peak_rss_mb()
    assert during - after > 250, (during, after)
    smaller = _touched(100)
    assert 90 < peak_rss_mb() - after < 200, (after, peak_rss_mb())
    smaller.close()


def test_a_bf16_teacher_is_planned_at_two_bytes_a_weight(tiny_model_dir):
    def elicit(dtype):
        recipe = Recipe.model_validate(
            {"name": "p", "student": {"model": str(tiny_model_dir)}, "teacher": {"dtype": dtype}}
        )
        return memory_plan(recipe, tiny_model_dir, tiny_model_dir, "cpu")["stages_mb"]["elicit"]

    assert elicit("auto") == elicit("float32") > elicit("bfloat16") == elicit("float16")
