"""`kto`: TRL's KTOTrainer (Kahneman-Tversky optimisation) on the round's preference pairs, unpaired: each
chosen reply is a desirable example and each rejected one an undesirable example of its prompt.

Full fine-tuning (TRL loads the reference model from the starting checkpoint) or LoRA (the adapter-disabled
model is the reference), merged at the end; the shared parts (TRL arguments, resumable checkpoints, the
atomic save) are kdagent/update/common.py's. Needs `feedback.preferences: true`; options go under
`update.options.kto`.
"""

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kdagent.errors import UserError
from kdagent.hookspecs import hookimpl
from kdagent.update.common import load_student, peft_config, report, save_student, train, trainer_kwargs, work_dir
from kdagent.update.updater import UpdateJob, Updater, training_mb


class KTOOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    beta: float = Field(
        0.1, gt=0.0, description="How far the student may move from the reference model (TRL's KTOConfig.beta)."
    )
    loss_type: Literal["kto", "apo_zero_unpaired"] = Field("kto", description="TRL's KTO loss variant.")
    desirable_weight: float = Field(1.0, gt=0.0, description="Weight of the losses of desirable (chosen) replies.")
    undesirable_weight: float = Field(
        1.0, gt=0.0, description="Weight of the losses of undesirable (rejected) replies."
    )


def train_kto(job: UpdateJob) -> dict:
    """Train on the unpaired `job.pairs` (PreferencePair) starting from `job.student` with `job.options`
    (KTOOptions); save a full checkpoint to `job.out`. Returns metrics."""
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    update, out_dir, pairs = job.update, Path(job.out), job.pairs
    work = work_dir(out_dir)
    dataset = Dataset.from_list(
        [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs]
    )  # TRL unpairs it
    tokenizer, model = load_student(job.student)
    args = KTOConfig(**trainer_kwargs(update, work, job.seed), max_length=job.max_length, **job.options.model_dump())
    trainer = KTOTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config(update.lora)
    )
    result = train(trainer, work)
    save_student(trainer, tokenizer, update, work, out_dir)
    return {**report(trainer, result, 2 * len(pairs)), "pairs": len(pairs)}


class KTO(Updater):
    """KTO on the round's preference pairs, each side an unpaired example."""

    options_model = KTOOptions
    skipped = "no preference pairs"

    def check(self, recipe, options):
        if not recipe.feedback.preferences:
            raise UserError("update.method: 'kto' trains on preference pairs; set feedback.preferences: true")
        if options.loss_type == "kto" and recipe.update.batch_size < 2:
            raise UserError("update.batch_size: 'kto' estimates its KL term within a batch and needs at least 2")

    def memory_mb(self, recipe, options, student, teacher, act_bytes):
        frozen = student["params"] * 4 if recipe.update.lora is None else 0  # the reference model
        return training_mb(recipe, student, act_bytes, frozen, rows_per_example=2)  # each reply and its KL completion

    def train(self, job):
        if not job.pairs:
            return None
        return train_kto(job)


@hookimpl
def kdagent_register_updaters(register):
    register("kto", KTO())
