"""What every updater shares: TRL arguments from our UpdateConfig, a resumable work folder, and an atomic
save of the trained student.

Training writes Trainer checkpoints every `update.checkpoint_steps` into `.<out>.partial/trainer` beside
the final folder, each under `trainer/.staging/` first and renamed into place once whole. A checkpoint is
complete when its `trainer_state.json` (the Trainer writes it last), its
weights (whole, by their safetensors header) and its optimizer, scheduler and RNG states are all there; an
interrupted run resumes from the last complete one, and incomplete or corrupt ones are reported and removed
first. The
finished student is saved into the work folder and renamed into place, so a half-written student is never
loaded. The run directory's lock guarantees one writer; under `accelerate launch` (kdagent/update/launch.py)
rank 0 is that writer, and the other ranks wait for it at each checkpoint and at the end.
"""

import contextlib
import os
import re
import shutil
import warnings
from pathlib import Path

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def work_dir(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    for stale in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):  # left by older releases
        shutil.rmtree(stale, ignore_errors=True)
    return out_dir.with_name(f".{out_dir.name}.partial")


def _weights_problem(path: Path) -> str | None:
    """Why a safetensors file cannot be whole: too short for its own header's tensors (truncated), or no header."""
    import struct

    from kdagent.models.files import TruncatedHeader, safetensors_header

    try:
        size = path.stat().st_size
        length, header = safetensors_header(path)
    except TruncatedHeader:
        return f"{path.name} is truncated"
    except (OSError, struct.error, ValueError):
        return f"{path.name} has no valid safetensors header"
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    return f"{path.name} is truncated ({size} of {8 + length + end} bytes)" if size < 8 + length + end else None


def checkpoint_problem(path: Path) -> str | None:
    """Why a Trainer checkpoint folder is not complete, or None. The Trainer writes the weights, then the
    optimizer, scheduler and RNG state, and `trainer_state.json` last; a folder that a kill interrupted
    (while writing it, or while the Trainer was deleting an old one) misses one of them or holds a truncated
    file. Pickled states are only checked for a readable archive here; the Trainer loads them with
    weights_only."""
    import json
    import zipfile

    state = Path(path) / "trainer_state.json"
    try:
        step = json.loads(state.read_text(encoding="utf-8"))["global_step"]
    except (OSError, ValueError, KeyError, TypeError):
        return "no readable trainer_state.json"
    if f"checkpoint-{step}" != Path(path).name:
        return f"trainer_state.json is for step {step}"
    weights = sorted(Path(path).glob("*.safetensors"))
    if not weights:
        return "no safetensors weights"
    for file in weights:
        problem = _weights_problem(file)
        if problem:
            return problem
    for name in ("optimizer.pt", "scheduler.pt", "rng_state*.pth"):
        file = next(iter(sorted(Path(path).glob(name))), None)
        if file is None or not file.is_file():
            return f"no {name}"
        try:
            with zipfile.ZipFile(file) as archive:
                archive.namelist()
        except (OSError, zipfile.BadZipFile):
            return f"{file.name} is not a complete archive"
    return None


def resume_point(work: Path) -> str | None:
    """The last complete checkpoint under `work/trainer`, or None. Incomplete or corrupt ones are reported
    on stderr and deleted, so training resumes from the last complete one before them."""
    import sys

    trainer_dir = Path(work) / "trainer"
    if not trainer_dir.is_dir():
        return None
    complete = []
    for path in trainer_dir.iterdir():
        match = _CHECKPOINT.match(path.name)
        if not match or not path.is_dir():
            continue
        problem = checkpoint_problem(path)
        if problem is None:
            complete.append((int(match.group(1)), path))
        else:
            print(
                f"warning: skipped the incomplete checkpoint {path} ({problem}); deleted it",
                file=sys.stderr,
                flush=True,
            )
            shutil.rmtree(path, ignore_errors=True)
    return str(max(complete)[1]) if complete else None


def cpu_bf16() -> bool:
    """Whether this CPU runs bf16 natively (AVX512-BF16 or AMX), where bf16 autocast is faster than fp32;
    KDAGENT_CPU_BF16=0 keeps the CPU in fp32."""
    import os

    import torch

    if os.environ.get("KDAGENT_CPU_BF16", "1") == "0":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


# The versions of the libraries whose private methods kdagent patches, as pyproject.toml bounds them (a test
# keeps the two the same); each patch below was written for these and checks its target before it patches.
SUPPORTED = {"transformers": ">=5.17,<5.26", "trl": ">=1.16,<1.17"}

# Every private attribute kdagent patches: (module, attribute path, the parameters it must take).
PRIVATE_HOOKS = (
    ("transformers.trainer", "Trainer._save_checkpoint", ("self", "model", "trial")),
    ("transformers.trainer", "Trainer._get_output_dir", ("self", "trial")),
    ("trl.trainer.utils", "_use_triton", ("device",)),
    ("trl.trainer.distillation_trainer", "_use_triton", ("device",)),
)


def private_hook_problem(module: str, path: str, params: tuple[str, ...]) -> str | None:
    """Why the installed library lacks the private attribute `module.path` taking `params`, or None."""
    import importlib
    import inspect

    try:
        target = importlib.import_module(module)
        for part in path.split("."):
            target = getattr(target, part)
        found = tuple(inspect.signature(target).parameters)
    except (ImportError, AttributeError, TypeError, ValueError):
        return f"{module}.{path} is not there"
    if found != params:
        return f"{module}.{path} takes ({', '.join(found)}), not ({', '.join(params)})"
    return None


def require_private_hooks(*modules: str) -> None:
    """The private attributes of `modules` (all of PRIVATE_HOOKS when none are named) that kdagent patches are
    there with the parameters it expects; otherwise a UserError in one line naming the supported versions."""
    from importlib.metadata import version

    from kdagent.errors import UserError

    for module, path, params in PRIVATE_HOOKS:
        if modules and module not in modules:
            continue
        problem = private_hook_problem(module, path, params)
        if problem:
            package = module.split(".")[0]
            raise UserError(
                f"{package} {version(package)}: {problem}; kdagent supports "
                + ", ".join(f"{name}{spec}" for name, spec in SUPPORTED.items())
            )


# TRL's modules that decide, through `_use_triton(device)`, whether the fused LM head projects only the positions
# that have a label ("compact") or every position: the fused log-prob head of SFT, DPO, GRPO, RLOO and KTO
# (trl.trainer.utils) and the distillation divergence (trl.trainer.distillation_trainer).
_COMPACT_HEAD_MODULES = ("trl.trainer.utils", "trl.trainer.distillation_trainer")


@contextlib.contextmanager
def compact_head_on_cpu():
    """While training, let TRL's fused LM head project only the labelled positions on the CPU too.

    TRL compacts to those positions on Triton devices and projects every position elsewhere, so that a
    compiler (Neuron) sees the same tile shapes each batch; eager CPU training has no such constraint, and
    there the vocabulary-sized projection of prompt positions (in fp32: TRL's CPU fallback upcasts the head)
    is work whose result is masked out. The per-position log-probabilities are the same computation either
    way (tests/test_update_sft.py). TRL offers no public switch for it, so this patches the private
    `_use_triton` of those modules, after checking it is there as written for (`require_private_hooks`), and
    restores TRL's choice on exit."""
    import importlib

    require_private_hooks(*_COMPACT_HEAD_MODULES)
    patched = []
    for name in _COMPACT_HEAD_MODULES:
        module = importlib.import_module(name)
        original = module._use_triton
        module._use_triton = lambda device, _original=original: device.type == "cpu" or _original(device)
        patched.append((module, original))
    try:
        yield
    finally:
        for module, original in patched:
            module._use_triton = original


_STAGING = ".staging"


def _ranks(trainer):
    """(whether this is the process that writes, a barrier of all processes) for `trainer`: (True, a no-op)
    on one process; rank 0 and accelerate's `wait_for_everyone` under `accelerate launch`."""
    accelerator = getattr(trainer, "accelerator", None)
    if accelerator is None or accelerator.num_processes == 1:
        return True, lambda: None
    return accelerator.is_main_process, accelerator.wait_for_everyone


def atomic_checkpoints(trainer) -> None:
    """Make `trainer` write each checkpoint under `<output_dir>/.staging/` and rename it into place once whole
    (then rotate old ones, as the Trainer would), so a `checkpoint-N` folder is never seen half-written.
    The Trainer (and TRL's overrides, which add files of their own) find the checkpoint folder through
    `_get_output_dir`, which points at the staging folder while one is written. Under several processes
    (`accelerate launch`) every rank writes into the same staging folder (rank 0 the weights, optimizer and
    state, each rank its own RNG state); once all have, rank 0 renames it into place and rotates, and the
    others wait for it.

    transformers has no public hook that runs before a checkpoint is written (a callback's `on_save` runs
    after), so this replaces the trainer's private `_save_checkpoint` on the instance, after checking that it
    and `_get_output_dir` are there as written for (`require_private_hooks`)."""
    from transformers.trainer_utils import rotate_checkpoints

    require_private_hooks("transformers.trainer")
    save, output_dir = trainer._save_checkpoint, trainer._get_output_dir
    main, wait = _ranks(trainer)

    def save_atomically(model, trial):
        final = Path(output_dir(trial=trial))
        staging = final / _STAGING
        if main:
            shutil.rmtree(staging, ignore_errors=True)
        wait()  # no rank writes into the staging folder before rank 0 has cleared it
        trainer._get_output_dir = lambda trial=None: str(staging)
        try:
            save(model, trial)
        finally:
            del trainer._get_output_dir  # the class's own again
        wait()  # every rank's files are in
        if main:
            name = f"checkpoint-{trainer.state.global_step}"
            shutil.rmtree(final / name, ignore_errors=True)
            os.replace(staging / name, final / name)
            shutil.rmtree(staging, ignore_errors=True)
            rotate_checkpoints(
                output_dir=str(final),
                save_total_limit=trainer.args.save_total_limit,
                best_model_checkpoint=trainer.state.best_model_checkpoint,
                use_mtime=False,
            )
        wait()

    trainer._save_checkpoint = save_atomically


def train(trainer, work: Path):
    """`trainer.train()`, resumed from the last complete checkpoint under `work` (said on stderr), with the
    compact LM head and checkpoints renamed into place once whole (`atomic_checkpoints`)."""
    import sys

    main, wait = _ranks(trainer)
    if main:  # rank 0 clears what a kill left; the others then read the same checkpoints
        shutil.rmtree(Path(work) / "trainer" / _STAGING, ignore_errors=True)  # a kill while one was written
        checkpoint = resume_point(work)
    wait()
    if not main:
        checkpoint = resume_point(work)
    atomic_checkpoints(trainer)
    from kdagent.terminal import trainer_callback

    trainer_callback(trainer, work)  # one labelled bar, plain lines off a terminal, instead of a dict per step
    if checkpoint is not None and main:
        step = _CHECKPOINT.match(Path(checkpoint).name).group(1)
        print(f"resuming training from {checkpoint} (step {step})", file=sys.stderr, flush=True)
    with compact_head_on_cpu(), warnings.catch_warnings():
        # TRL's generation (GRPO, RLOO, GKD, DistillationTrainer) reads transformers' deprecated
        # `is_gradient_checkpointing`: only that warning is silenced
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*deprecated", category=FutureWarning)
        return trainer.train(resume_from_checkpoint=checkpoint)


def report_to(update, work: Path) -> list[str]:
    """`update.report_to` as a list. TensorBoard's folder is set through the environment (how transformers takes
    it), beside the round's students: the work folder, where it would go otherwise, is deleted after training."""
    trackers = [update.report_to] if isinstance(update.report_to, str) else list(update.report_to)
    if "tensorboard" in trackers:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(
            Path(work).parent / "tensorboard" / Path(work).name.strip(".").removesuffix(".partial")
        )
    return trackers


def trainer_kwargs(update, work: Path, seed: int) -> dict:
    """The TRL/transformers arguments every updater sets the same way."""
    import torch
    from transformers import TrainingArguments

    # transformers 5.2x renamed gradient_checkpointing (a FutureWarning when set under its old name)
    checkpointing = (
        "activation_checkpointing"
        if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
        else "gradient_checkpointing"
    )

    cuda = torch.cuda.is_available()
    return dict(
        output_dir=str(Path(work) / "trainer"),
        learning_rate=update.learning_rate,
        num_train_epochs=update.epochs,
        per_device_train_batch_size=update.batch_size,
        gradient_accumulation_steps=update.gradient_accumulation_steps,
        warmup_steps=update.warmup_ratio,  # a float below 1 is a share of the steps
        lr_scheduler_type="linear",
        logging_steps=1,
        save_strategy="steps",
        save_steps=update.checkpoint_steps,
        save_total_limit=2,
        report_to=report_to(update, work),
        seed=seed,
        bf16=cuda or cpu_bf16(),  # fp32 master weights, bf16 autocast on a GPU and on CPUs with bf16 instructions
        **{
            checkpointing: False
        },  # TRL's configs turn it on; recomputing activations costs a third more time (the memory plan counts them)
        use_cpu=not cuda,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )


def peft_config(lora):
    """peft's LoraConfig for the recipe's `update.lora`, or None for full fine-tuning."""
    if lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )


def with_lora(model, lora):
    """`model` with a fresh LoRA adapter for the recipe's `update.lora` (peft), or `model` itself for full
    fine-tuning; for a trainer that takes a model, not a `peft_config` (transformers' Trainer)."""
    if lora is None:
        return model
    from peft import get_peft_model

    return get_peft_model(model, peft_config(lora))


def load_student(base_model: Path):
    """The tokenizer and the model to train, from a local checkpoint: fp32 master weights whatever dtype the
    checkpoint was saved in (a GPU, or a CPU with bf16 instructions, runs the passes under bf16 autocast).
    The model's config keeps `base_model` as its name, which is where TRL loads a reference model from."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kdagent.models.registry import safetensors_only

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32, use_safetensors=safetensors_only())
    return tokenizer, model


def save_student(trainer, tokenizer, update, work: Path, out_dir: Path) -> None:
    """The trained student as users take a Hugging Face checkpoint: LoRA merged, weights in `update.save_dtype`
    (float32, or bfloat16, which kdagent loads back into fp32 to train and to run on the CPU), the
    KV cache on for generation, the base model's name as `_name_or_path`, files readable by all (0644, folders
    0755). Saved into the work folder and renamed into place as `out_dir`; by rank 0 alone under several
    processes (the others wait until it is in place)."""
    main, wait = _ranks(trainer)
    wait()
    if main:
        _save_student(trainer, tokenizer, update, work, out_dir)
    wait()


def _save_student(trainer, tokenizer, update, work: Path, out_dir: Path) -> None:
    import torch

    final = trainer.model
    if update.lora is not None:  # merge so the next round (and `from_pretrained`) sees a plain checkpoint
        final = final.merge_and_unload()
    base = final.config.name_or_path  # the folder training started from
    final.config.use_cache = True  # the trainers turn the cache off for gradient checkpointing; generation wants it
    if update.save_dtype == "bfloat16":
        final = final.to(torch.bfloat16)
    staging = Path(work) / "student"
    shutil.rmtree(staging, ignore_errors=True)
    final.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    _name_config(staging, model_name(Path(base)) if base else None)
    _readable(staging)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(staging, out_dir)
    shutil.rmtree(work, ignore_errors=True)


def model_name(base: Path) -> str:
    """What a student trained from the checkpoint `base` is called in its config: the name `base` carries
    (a student of an earlier round), else the Hub id of the model alias whose folder it is, else its folder name."""
    import json

    from kdagent.models import ALIASES

    try:
        name = json.loads((Path(base) / "config.json").read_text(encoding="utf-8")).get("_name_or_path")
    except (OSError, ValueError):
        name = None
    if name:
        return name
    for alias in ALIASES.values():
        try:
            folder = alias.target() if alias.gguf else alias.source()
        except Exception:  # an alias whose package is absent is not this one
            continue
        if folder.resolve() == Path(base).resolve():
            return alias.hub_id or alias.name
    return Path(base).resolve().name


def _name_config(folder: Path, name: str | None) -> None:
    """The saved config names the model: `_name_or_path` (which transformers leaves out when saving), and not
    the display name a GGUF conversion carries over (`_model_name_or_path`, the GGUF file's general.name)."""
    import json

    path = Path(folder) / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config.pop("_model_name_or_path", None)
    if name:
        config = {"_name_or_path": name, **config}
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _readable(folder: Path) -> None:
    """Files 0644 and folders 0755: a student is shared and served, and some writers create files 0600."""
    os.chmod(folder, 0o755)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)


def report(trainer, result, examples: int) -> dict:
    return {
        "examples": examples,
        "steps": trainer.state.global_step,
        "train_loss": round(result.training_loss, 4),
        "losses": [round(h["loss"], 4) for h in trainer.state.log_history if "loss" in h],
    }
