"""`dpo`: TRL's DPOTrainer on conversational preference pairs (prompt, chosen, rejected).

The same shape as `sft`: full fine-tuning or LoRA (peft, merged at the end), fp32 master weights with bf16 autocast
on a GPU and on CPUs with bf16 instructions, fp32 on other CPUs (kdagent/update/common.py). The reference model is
TRL's default: for full fine-tuning a frozen copy that TRL loads from `base_model`; with LoRA, the same model with its adapter disabled. The trained student is saved to a temporary
folder and renamed into place.
"""

import dataclasses
import re
from pathlib import Path

from kdagent.errors import UserError
from kdagent.hookspecs import hookimpl
from kdagent.recipe import DPOOptions
from kdagent.update.common import load_student, peft_config, save_student, train, trainer_kwargs, work_dir
from kdagent.update.updater import UpdateJob, Updater, training_mb


def dpo_loss_types() -> list[str]:
    """The loss types this TRL version's DPOConfig documents (sigmoid, hinge, ipo, ...)."""
    from trl import DPOConfig

    field = next(f for f in dataclasses.fields(DPOConfig) if f.name == "loss_type")
    return re.findall(r"`'([a-z0-9_]+)'`", field.metadata.get("help", ""))


def train_dpo(job: UpdateJob) -> dict:
    """Train on `job.pairs` starting from `job.student` with `job.options` (DPOOptions); save a full checkpoint to
    `job.out`. Returns metrics."""
    options, pairs = job.options, job.pairs
    valid = dpo_loss_types()
    if options.loss_type not in valid:
        raise ValueError(f"unknown DPO loss_type {options.loss_type!r}; this TRL version accepts: {', '.join(valid)}")
    if not pairs:
        raise ValueError("train_dpo needs at least one preference pair")

    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    update, out_dir = job.update, Path(job.out)
    work = work_dir(out_dir)
    dataset = Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs])
    tokenizer, model = load_student(job.student)  # for full fine-tuning TRL loads the reference model from its name
    kwargs = trainer_kwargs(update, work, job.seed)
    kwargs["learning_rate"] = options.learning_rate or update.learning_rate
    args = DPOConfig(
        **kwargs,
        max_length=job.max_length,
        beta=options.beta,
        loss_type=[options.loss_type],
        # TRL requires a non-zero label smoothing for EXO; 1e-3 is the paper's value (unused by the other losses,
        # where 0.0 means none)
        label_smoothing=1e-3 if options.loss_type == "exo_pair" else 0.0,
    )
    trainer = DPOTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config(update.lora)
    )
    result = train(trainer, work)
    history = trainer.state.log_history
    losses = [round(h["loss"], 4) for h in history if "loss" in h]
    margins = [h["rewards/margins"] for h in history if "rewards/margins" in h]
    save_student(trainer, tokenizer, update, work, out_dir)
    metrics = {
        "examples": len(pairs),
        "steps": trainer.state.global_step,
        "train_loss": round(result.training_loss, 4),
        "losses": losses,
        "learning_rate": args.learning_rate,
    }
    if margins:
        metrics["rewards_margin"] = round(margins[-1], 4)
    return metrics


class DPO(Updater):
    """Direct preference optimisation on the round's preference pairs (preferences.jsonl)."""

    options_model = DPOOptions
    skipped = "no preference pairs"

    def check(self, recipe, options):
        if not recipe.feedback.preferences:
            raise UserError("update.method: 'dpo' trains on preference pairs; set feedback.preferences: true")

    def check_models(self, recipe, options, student):
        valid = dpo_loss_types()  # imports trl, so not in `check` (validate stays fast)
        if options.loss_type not in valid:
            raise UserError(
                f"update.dpo.loss_type: unknown {options.loss_type!r} (this TRL offers: {', '.join(valid)})"
            )

    def memory_mb(self, recipe, options, student, teacher, act_bytes):
        frozen = student["params"] * 4 if recipe.update.lora is None else 0  # the reference model
        return training_mb(recipe, student, act_bytes, frozen, rows_per_example=2)  # chosen and rejected together

    def train(self, job):
        if not job.pairs:
            return None
        return train_dpo(job)


@hookimpl
def kdagent_register_updaters(register):
    register("dpo", DPO())
