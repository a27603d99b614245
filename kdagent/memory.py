"""The memory plan: before any model loads, what each stage of a run needs at its peak, against the memory
the machine has (GPU memory on CUDA, otherwise available RAM within the cgroup's limit). A run that cannot
fit is refused with the numbers, as a UserError naming the stage and what would make it fit.

The estimates read the models' safetensors headers (parameter counts) and configs (layers, hidden size,
KV heads, vocabulary), so nothing is loaded. They are upper-bound estimates, not measurements:

- inference (elicitation, judging, evaluation): the weights (fp32 on the CPU, bf16 on a GPU, or the teacher's `teacher.dtype`) and the KV cache
  of one batch, `batch_size x samples` rows of `student.max_length + max_new_tokens` positions;
- training: each updater's own estimate (`Updater.memory_mb`); the shared part (`update.updater.training_mb`)
  is fp32 weights, gradients and AdamW's two moments (16 bytes a parameter; a LoRA adapter trains
  only its own few, so 4 bytes a base parameter), a frozen copy where the method keeps one (DPO's reference
  model without LoRA, GRPO's with `beta > 0`, the teacher of `distill`), activations (`ACTIVATION_FACTOR`
  hidden-size vectors a token a layer, kept for the backward pass, counted in fp32 on the CPU, an upper bound
  under its bf16 autocast, and bf16 under autocast on a GPU) and the logits (fp32, three copies: logits, softmax,
  gradient) of one batch of `update.batch_size x student.max_length` tokens;
- `RUNTIME_MB` for the interpreter, torch, transformers and Chroma.

Each entry is keyed by its stage's name in the stage table (kdagent/loop/round.py), as the measured peaks in
`metrics.json` are; `update` is the largest of its methods' (`update_methods_mb`). Under `update.launcher`
each of the N training processes holds its own copy of what it trains on `batch_size / N` examples a step:
on GPUs the plan is one process's (one GPU each), on the CPU the N processes share the machine's memory,
so the plan is N of them.

The estimates are checked against measured peaks (docs/benchmarks.md, "Measurements behind the code"). The plan
is written to RUN_DIR/memory-plan.json and logged. Set KDAGENT_MEMORY_PLAN=off to run a refused plan anyway.
"""

import math
import os
from pathlib import Path

from kdagent.errors import UserError
from kdagent.generation.engine import inference_dtype
from kdagent.models.files import safetensors_header, text_config
from kdagent.update.updater import ACTIVATION_FACTOR, MB, options_for  # noqa: F401 (ACTIVATION_FACTOR: the plan's constant)

RUNTIME_MB = 1000


def param_count(model_dir: Path) -> int:
    """Parameters of a local checkpoint, from its safetensors headers (no tensor is read)."""
    total = 0
    for file in sorted(Path(model_dir).glob("*.safetensors")):
        _, header = safetensors_header(file)
        total += sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    return total


def _shape(model_dir: Path) -> dict:
    config = text_config(model_dir)
    hidden = config.get("hidden_size", 0)
    heads = config.get("num_attention_heads", 1) or 1
    return {
        "layers": config.get("num_hidden_layers", 0),
        "hidden": hidden,
        "kv_width": config.get("num_key_value_heads", heads) * config.get("head_dim", hidden // heads),
        "vocab": config.get("vocab_size", 0),
        "params": param_count(model_dir),
    }


def available_mb(device: str) -> tuple[float, str]:
    """Memory a run may use, and where the number comes from."""
    if device == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info()
        return free / MB, f"free memory of {torch.cuda.get_device_name()}"
    available, source = None, "MemAvailable"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024 / MB
    except OSError:
        pass
    try:  # a container's limit, less what it already uses
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max" and (available is None or (int(limit) - used) / MB < available):
            available, source = (int(limit) - used) / MB, "the cgroup's memory.max"
    except (OSError, ValueError):
        pass
    return (available if available is not None else float("inf")), source


def _inference_mb(shape: dict, weight_bytes: int, rows: int, positions: int) -> float:
    kv = 2 * shape["layers"] * shape["kv_width"] * weight_bytes * rows * positions
    return (shape["params"] * weight_bytes + kv + rows * shape["vocab"] * 4) / MB


def memory_plan(recipe, student_dir: Path, teacher_dir: Path | None, device: str, updaters: dict | None = None) -> dict:
    """Estimated peak MiB of each stage, the largest, and what is available. `updaters` maps the recipe's
    update methods to their `Updater`s (default: the registered built-ins)."""

    def bytes_a_weight(dtype: str) -> int:
        return 4 if inference_dtype(dtype, device) == "float32" else 2

    weight_bytes = bytes_a_weight("auto")
    student = _shape(student_dir)
    teacher = _shape(teacher_dir) if teacher_dir is not None else None
    positions = recipe.student.max_length + recipe.teacher.max_new_tokens
    stages: dict[str, float] = {}
    if teacher is not None:
        stages["elicit"] = _inference_mb(
            teacher, bytes_a_weight(recipe.teacher.dtype), recipe.teacher.batch_size * recipe.teacher.samples, positions
        )
    stages["evaluate"] = _inference_mb(
        student,
        weight_bytes,
        recipe.evaluation.batch_size,
        recipe.student.max_length + recipe.evaluation.max_new_tokens,
    )
    if updaters is None:
        from kdagent.plugins import build_plugins

        updaters = {name: entry.obj for name, entry in build_plugins(load_entry_points=False).updaters.items()}
    processes = training_processes(recipe.update)
    one_process = recipe
    if processes > 1:  # each process trains on its share of the batch
        share = recipe.update.model_copy(update={"batch_size": max(1, recipe.update.batch_size // processes)})
        one_process = recipe.model_copy(update={"update": share})
    copies = processes if device == "cpu" else 1  # CPU processes share the machine's memory; GPUs are one a process
    methods = {}
    for method in recipe.update.methods():
        updater = updaters[method]
        options = options_for(recipe.update, method, updater)
        one = updater.memory_mb(one_process, options, student, teacher, weight_bytes) + RUNTIME_MB
        methods[method] = round(copies * one + (RUNTIME_MB if copies > 1 else 0))  # and the loop's own process
    stages = {k: round(v + RUNTIME_MB) for k, v in stages.items()}
    if methods:
        stages["update"] = max(methods.values())
    peak = max(stages, key=stages.get)
    available, source = available_mb(device)
    return {
        "device": device,
        "stages_mb": stages,
        "update_methods_mb": methods,
        "training_processes": processes,
        "peak_stage": peak,
        "peak_mb": stages[peak],
        "available_mb": round(available) if math.isfinite(available) else None,
        "available_from": source,
        "student_params": student["params"],
        "teacher_params": teacher["params"] if teacher else None,
    }


def training_processes(update) -> int:
    """How many processes the update stage trains on: `update.launcher`'s `num_processes`, else its accelerate
    config file's, else 1."""
    launcher = getattr(update, "launcher", None)
    if launcher is None:
        return 1
    if launcher.num_processes:
        return launcher.num_processes
    if launcher.config_file and Path(launcher.config_file).is_file():
        import yaml

        config = yaml.safe_load(Path(launcher.config_file).read_text(encoding="utf-8")) or {}
        return int(config.get("num_processes") or 1) if isinstance(config, dict) else 1
    return 1


def stage_label(plan: dict, stage: str) -> str:
    """`update (dpo)` for the update stage (its largest method), the stage's name otherwise."""
    methods = plan.get("update_methods_mb") or {}
    if stage != "update" or not methods:
        return stage
    processes = plan.get("training_processes", 1)
    label = f"update ({max(methods, key=methods.get)})"
    return label if processes == 1 else f"{label} on {processes} processes"


def check_plan(plan: dict) -> None:
    """Refuse a run whose peak stage does not fit (unless KDAGENT_MEMORY_PLAN=off)."""
    available = plan["available_mb"]
    if available is None or plan["peak_mb"] <= available or os.environ.get("KDAGENT_MEMORY_PLAN", "").lower() == "off":
        return
    stage = plan["peak_stage"]
    hint = (
        "lower update.batch_size or student.max_length, or train a LoRA adapter (update.lora)"
        if stage == "update"
        else "lower teacher.batch_size, teacher.samples or evaluation.batch_size"
    )
    raise UserError(
        f"memory plan: {stage_label(plan, stage)} needs about {plan['peak_mb']} MiB but {available} MiB is available ({plan['available_from']} "
        f"on {plan['device']}): {hint}; or set KDAGENT_MEMORY_PLAN=off to run anyway"
    )


def reset_peak_rss() -> bool:
    """Start a new peak for `peak_rss_mb`: Linux resets the process's high-water mark (VmHWM) to its
    current resident memory when 5 is written to /proc/self/clear_refs. False where that is not possible
    (then `peak_rss_mb` is the process's peak so far)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory since the last `reset_peak_rss`, in MiB (Linux's VmHWM); elsewhere, or before
    any reset, the process's peak so far."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)  # kB
    except (OSError, ValueError, IndexError):
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def gpu_peak_mb(reset: bool = True) -> float | None:
    """Peak allocated GPU memory since the last reset, in MiB (None without CUDA); resets the counter."""
    import sys

    torch = sys.modules.get("torch")  # never imports torch just to say there is no GPU
    if torch is None or not torch.cuda.is_available():
        return None
    peak = round(torch.cuda.max_memory_allocated() / MB, 1)
    if reset:
        torch.cuda.reset_peak_memory_stats()
    return peak
