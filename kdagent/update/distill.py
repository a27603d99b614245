"""`distill`: white-box, token-level distillation of a teacher's next-token distributions into the student.

A thin wrapper over TRL. Our divergence names map onto TRL's generalised Jensen-Shannon `beta`
(`trl.trainer.distillation_config.DistillationConfig.beta`: "0.0 = forward KL, 0.5 = JSD, 1.0 = reverse KL"):

- ``forward_kl``: KL(teacher || student) = sum p_t (log p_t - log p_s), TRL ``beta=0.0`` (mode-covering);
- ``reverse_kl``: KL(student || teacher) = sum p_s (log p_s - log p_t), TRL ``beta=1.0`` (mode-seeking);
- ``jsd``: beta * KL(p_t || m) + (1 - beta) * KL(p_s || m) with the mixture m = beta * p_t + (1 - beta) * p_s,
  TRL ``beta=beta`` (TRL treats beta 0 and 1 as the two KLs above, not as the limits of this formula, which vanish).

Each is summed over the vocabulary at each completion token, after dividing both models' logits by `temperature`,
and averaged over the completion tokens (prompt and padding excluded). `divergence_loss` computes it with TRL's own
function, so the tests and the trainers share one definition.

Which TRL trainer runs depends on `lmbda`, the share of on-policy (student-sampled) completions:

- ``lmbda == 1``: `trl.DistillationTrainer` (stable): every completion is sampled from the student, at `temperature`.
- ``lmbda < 1``: `trl.experimental.gkd.GKDTrainer`: each step is on-policy with probability `lmbda`, otherwise it
  trains on the off-policy completions: the given `completions` (e.g. the teacher's answers) when there are some,
  else completions the teacher samples itself (TRL's `seq_kd`). GKD samples at `temperature` but leaves its loss at
  temperature 1; we pass `temperature` to its loss too, so both trainers compute `divergence_loss`.

fp32 master weights, bf16 autocast on a GPU and on CPUs with bf16 instructions (common.cpu_bf16), fp32 on other
CPUs. The trained student is saved to a temporary folder beside `out_dir` and renamed into place; temporary folders left by killed runs are removed.
"""

import warnings
from pathlib import Path

from kdagent.errors import UserError
from kdagent.hookspecs import hookimpl
from kdagent.models.registry import safetensors_only
from kdagent.recipe import DistillOptions
from kdagent.teachers.kinds import other_teacher_path, runs_locally_white_box
from kdagent.teachers.vocab import require_shared_vocabulary
from kdagent.update.common import load_student, peft_config, save_student, train, trainer_kwargs, work_dir
from kdagent.update.updater import UpdateJob, Updater, check_completion_length, training_mb

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")


def trl_beta(divergence: str, beta: float = 0.5) -> float:
    """TRL's generalised-JSD `beta` for one of our divergence names (`beta` is used only for "jsd")."""
    if divergence == "forward_kl":
        return 0.0
    if divergence == "reverse_kl":
        return 1.0
    if divergence == "jsd":
        if not 0.0 <= beta <= 1.0:
            raise UserError(f"distillation beta must be between 0 and 1, got {beta}")
        return float(beta)
    raise UserError(f"unknown divergence {divergence!r}; choose one of: {', '.join(DIVERGENCES)}")


def _gkd():
    """TRL's GKD module (experimental: its import notice is silenced here)."""
    from trl.import_utils import TRLExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TRLExperimentalWarning)
        from trl.experimental import gkd
    return gkd


def divergence_loss(
    student_logits, teacher_logits, divergence: str, beta: float = 0.5, temperature: float = 1.0, mask=None
):
    """The distillation loss the trainers optimise, from logits of shape (batch, seq, vocab).

    Calls TRL's `GKDTrainer.generalized_jsd_loss` with the beta of `trl_beta`; `mask` (batch, seq), true or 1 where a
    token counts, defaults to every token. The result is the per-token divergence averaged over the counted tokens,
    which is also what TRL's `DistillationTrainer` computes (`_chunked_divergence_loss`) when there is no gradient
    accumulation; with it both divide by the tokens of the whole accumulated batch.
    """
    import torch

    trl_b = trl_beta(divergence, beta)
    if temperature <= 0:
        raise UserError(f"distillation temperature must be positive, got {temperature}")
    if mask is None:  # TRL's "batchmean" without labels divides by the batch size, not the token count
        mask = torch.ones(student_logits.shape[:-1], dtype=torch.bool, device=student_logits.device)
    labels = torch.where(mask.bool(), 0, -100)
    return _gkd().GKDTrainer.generalized_jsd_loss(
        student_logits, teacher_logits, labels=labels, beta=trl_b, temperature=temperature, reduction="batchmean"
    )


def _fitting_prompts(prompts, completions, tokenizer, budget: int):
    """Drop the prompts (and their completions) whose chat-formatted tokens exceed `budget`."""
    kept_prompts, kept_completions = [], []
    for i, prompt in enumerate(prompts):
        text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        if len(tokenizer(text, add_special_tokens=False).input_ids) <= budget:
            kept_prompts.append(prompt)
            kept_completions.append(None if completions is None else completions[i])
    return kept_prompts, kept_completions


def train_distill(
    job: UpdateJob, teacher_model: Path, prompts: list[list[dict]], completions: list[str] | None = None
) -> dict:
    """Distil `teacher_model` into `job.student` on chat `prompts` with `job.options` (DistillOptions); save a full
    checkpoint to `job.out`. Returns metrics.

    `lmbda` is the share of on-policy (student-sampled) completions; the rest are `completions` (one per prompt,
    the assistant's reply) or, without them, sampled from the teacher. `job.max_length` bounds prompt +
    completion: prompts longer than `max_length - max_completion_length` tokens are skipped (counted in the
    metrics).
    """
    o, update, max_length, base_model = job.options, job.update, job.max_length, job.student
    divergence, beta, lmbda, temperature = o.divergence, o.beta, o.lmbda, o.temperature
    max_completion_length = o.max_completion_length
    trl_b = trl_beta(divergence, beta)
    if not 0.0 <= lmbda <= 1.0:
        raise UserError(f"distillation lmbda (the on-policy share) must be between 0 and 1, got {lmbda}")
    if temperature <= 0:
        raise UserError(f"distillation temperature must be positive, got {temperature}")
    if max_completion_length < 1 or max_completion_length >= max_length:
        raise UserError(
            f"max_completion_length must be between 1 and max_length - 1 ({max_length - 1}), got {max_completion_length}"
        )
    if not prompts:
        raise ValueError("train_distill needs at least one prompt")
    if completions is not None and len(completions) != len(prompts):
        raise ValueError(f"train_distill got {len(completions)} completions for {len(prompts)} prompts")
    require_shared_vocabulary(Path(teacher_model), Path(base_model))  # reads the tokenizers only

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir = Path(job.out)
    work = work_dir(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # generation pads on the left
    kept, kept_completions = _fitting_prompts(prompts, completions, tokenizer, max_length - max_completion_length)
    if not kept:
        raise UserError(
            f"every distillation prompt is longer than max_length - max_completion_length = {max_length - max_completion_length} tokens"
        )

    # fp32 master weights; on a GPU, bf16=True runs the forward and backward passes under bf16 autocast
    model = load_student(base_model)[1]
    teacher = AutoModelForCausalLM.from_pretrained(
        teacher_model, dtype=torch.float32, use_safetensors=safetensors_only()
    )
    teacher.eval()
    common = trainer_kwargs(update, work, job.seed)  # checkpoints every update.checkpoint_steps, resumable
    common.pop("per_device_train_batch_size")
    common.update(beta=trl_b, temperature=temperature, disable_dropout=True)
    lora_config = peft_config(update.lora)
    if lmbda == 1.0:  # fully on-policy: TRL's stable trainer
        from trl import DistillationConfig, DistillationTrainer

        trainer_name = "distillation"
        # TRL drops incomplete generation batches (per-device batch x accumulation): fit them to a small prompt set
        accumulation = min(update.gradient_accumulation_steps, len(kept))
        batch_size = max(1, min(update.batch_size, len(kept) // accumulation))
        common["gradient_accumulation_steps"] = accumulation
        args = DistillationConfig(
            **common, per_device_train_batch_size=batch_size, max_completion_length=max_completion_length
        )
        dataset = Dataset.from_list([{"prompt": p} for p in kept])
        trainer = DistillationTrainer(
            model=model,
            teacher_model=teacher,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=lora_config,
        )
    else:  # a share of off-policy completions: TRL's GKD
        gkd = _gkd()
        trainer_name = "gkd"
        batch_size = update.batch_size
        # without completions, the off-policy share is sampled from the teacher (sequence-level KD); the empty
        # assistant turn only marks where the reply goes and is replaced by that sample
        seq_kd = completions is None
        rows = [{"messages": [*p, {"role": "assistant", "content": c or ""}]} for p, c in zip(kept, kept_completions)]
        args = gkd.GKDConfig(
            **common,
            per_device_train_batch_size=batch_size,
            max_length=max_length,
            max_new_tokens=max_completion_length,
            lmbda=lmbda,
            seq_kd=seq_kd,
        )

        class TemperedGKDTrainer(gkd.GKDTrainer):
            """GKD whose loss is at `temperature`: its compute_loss leaves the public `generalized_jsd_loss` at
            temperature 1, so both trainers optimise `divergence_loss`."""

            @staticmethod
            def generalized_jsd_loss(*args, **kwargs):
                return gkd.GKDTrainer.generalized_jsd_loss(*args, **kwargs, temperature=temperature)

        trainer = TemperedGKDTrainer(
            model=model,
            teacher_model=teacher,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=lora_config,
        )
    result = train(trainer, work)
    losses = [round(h["loss"], 4) for h in trainer.state.log_history if "loss" in h]
    save_student(
        trainer, AutoTokenizer.from_pretrained(base_model), update, work, out_dir
    )  # the tokenizer as it was, not as trained with
    return {
        "examples": len(kept),
        "skipped": len(prompts) - len(kept),
        "steps": trainer.state.global_step,
        "train_loss": round(result.training_loss, 4),
        "losses": losses,
        "trainer": trainer_name,
        "divergence": divergence,
        "trl_beta": trl_b,
        "lmbda": lmbda,
        "batch_size": batch_size,
    }


class Distill(Updater):
    """White-box distillation of a local ('hf') teacher's token distributions, on the round's training
    prompts (with their curated replies as the off-policy completions), or on the tasks' prompts when the
    round kept no examples."""

    options_model = DistillOptions

    def check(self, recipe, options, plugins):
        check_completion_length("update.distill.max_completion_length", recipe, options.max_completion_length)
        if not runs_locally_white_box(recipe.teacher, plugins):
            raise UserError(
                f"update.method: 'distill' is white-box and needs a local teacher with token log-probs (teacher.kind: "
                f"hf, teacher.model: ...); the {recipe.teacher.kind!r} teacher is not one"
            )

    def check_models(self, recipe, options, student, plugins):
        teacher = other_teacher_path(recipe.teacher, plugins, student, "distill")
        require_shared_vocabulary(teacher, student)  # refused up front when they differ

    def memory_mb(self, recipe, options, student, teacher, act_bytes):
        frozen = 0
        if teacher is not None:  # the teacher's weights and the logits of one batch
            frozen = teacher["params"] * 4 + recipe.update.batch_size * recipe.student.max_length * teacher["vocab"] * 4
        return training_mb(recipe, student, act_bytes, frozen)

    def train(self, job):
        prompts = [ex.prompt for ex in job.examples] or [job.skill.messages(t) for t in job.tasks]
        completions = [ex.completion[-1]["content"] for ex in job.examples] or None
        return train_distill(job, job.teacher_path(), prompts, completions)


@hookimpl
def kdagent_register_updaters(register):
    register("distill", Distill())
