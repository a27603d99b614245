"""`dpo`: TRL's DPOTrainer on conversational preference pairs (prompt, chosen, rejected).

The same shape as `sft`: full fine-tuning or LoRA (peft, merged at the end), fp32 master weights with bf16 autocast
on a GPU and on CPUs with bf16 instructions, fp32 on other CPUs (kdagent/update/common.py). The reference model is
TRL's default: for full fine-tuning a frozen copy that TRL loads from `base_model`; with LoRA, the same model with its adapter disabled. The trained student is saved to a temporary
folder and renamed into place.
"""

import dataclasses
import re
from pathlib import Path

from kdagent.records import PreferencePair
from kdagent.update.common import save_student, train, trainer_kwargs, work_dir
from kdagent.update.sft import _peft_config
from kdagent.models.registry import safetensors_only


def dpo_loss_types() -> list[str]:
    """The loss types this TRL version's DPOConfig documents (sigmoid, hinge, ipo, ...)."""
    from trl import DPOConfig

    field = next(f for f in dataclasses.fields(DPOConfig) if f.name == "loss_type")
    return re.findall(r"`'([a-z0-9_]+)'`", field.metadata.get("help", ""))


def train_dpo(
    pairs: list[PreferencePair],
    base_model: Path,
    out_dir: Path,
    update,
    max_length: int,
    seed: int,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
) -> dict:
    """Train on `pairs` starting from `base_model`; save a full checkpoint to `out_dir`. Returns metrics."""
    valid = dpo_loss_types()
    if loss_type not in valid:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; this TRL version accepts: {', '.join(valid)}")
    if not pairs:
        raise ValueError("train_dpo needs at least one preference pair")

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    out_dir = Path(out_dir)
    work = work_dir(out_dir)
    dataset = Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs])
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    # fp32 master weights; on a GPU (and a CPU with bf16), bf16=True runs the forward and backward passes under bf16
    # autocast. The model's config keeps `base_model` as its name, which is where TRL loads the reference model from (full fine-tuning).
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32, use_safetensors=safetensors_only())
    args = DPOConfig(
        **trainer_kwargs(update, work, seed),
        max_length=max_length,
        beta=beta,
        loss_type=[loss_type],
        # TRL requires a non-zero label smoothing for EXO; 1e-3 is the paper's value (unused by the other losses,
        # where 0.0 means none)
        label_smoothing=1e-3 if loss_type == "exo_pair" else 0.0,
    )
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=_peft_config(update.lora))
    result = train(trainer, work)
    history = trainer.state.log_history
    losses = [round(h["loss"], 4) for h in history if "loss" in h]
    margins = [h["rewards/margins"] for h in history if "rewards/margins" in h]
    save_student(trainer, tokenizer, update.lora, work, out_dir)
    metrics = {
        "examples": len(pairs),
        "steps": trainer.state.global_step,
        "train_loss": round(result.training_loss, 4),
        "losses": losses,
    }
    if margins:
        metrics["rewards_margin"] = round(margins[-1], 4)
    return metrics
