"""`distill_cached`: off-policy white-box distillation from an offline teacher-logit cache.

The recipe's local teacher (`hf`) runs once over the round's training examples (prompt + curated completion) and
stores its top-k log-probabilities at each completion token (kdagent/update/logit_cache.py, content-addressed, so
a second student of the same teacher on the same data reuses the cache and never loads the teacher); it is then
released, and the student trains from the cache alone. A teacher served at OpenAI-compatible endpoints
(`teacher.base_url`, one server or a pool) fills the same cache from the servers' `prompt_logprobs`
(kdagent/update/remote_logits.py: vLLM's OpenAI server returns them), so no teacher weights are loaded here. The loss at each completion token is

    (1 - ce_weight) * divergence(teacher, student) + ce_weight * cross-entropy(label)

with the divergence named by `loss` (kdagent/update/losses.py: forward_kl, reverse_kl, jsd, skew_kl,
skew_reverse_kl, tvd), computed on the teacher's k tokens plus one tail category. The student's logits are
computed only at the completion positions (left padding and `logits_to_keep`), so training from the cache costs
about what SFT does. The training loop is transformers' Trainer with this loss (`compute_loss`, its documented
subclass hook): checkpoints, resume and the atomic save are kdagent/update/common.py's, as for every updater.

Options go under `update.options.distill_cached`. Feature (hidden-state) distillation needs the teacher's hidden
states, which the cache does not hold: `kdagent.update.losses.feature_loss` is there for an online trainer.
"""

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kdagent.errors import UserError
from kdagent.hookspecs import hookimpl
from kdagent.teachers.kinds import other_teacher_path, runs_locally_white_box
from kdagent.update.updater import UpdateJob, Updater, training_mb

MB = 2**20


class DistillCachedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    loss: Literal["forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl", "tvd"] = Field(
        "skew_kl",
        description="Token-level divergence between the cached teacher and the student (kdagent/update/losses.py).",
    )
    beta: float = Field(
        0.5, ge=0.0, le=1.0, description="For 'jsd': the generalised JSD's interpolation weight (TRL's beta)."
    )
    skew: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="For 'skew_kl' and 'skew_reverse_kl': DistiLLM's skew alpha (0 gives the plain KL).",
    )
    top_k: int = Field(
        32, ge=1, le=1024, description="Teacher log-probabilities cached per token (the rest is one tail mass)."
    )
    ce_weight: float = Field(
        0.1, ge=0.0, le=1.0, description="Weight of the cross-entropy on the labels; the divergence gets 1 - ce_weight."
    )
    cache_dir: str | None = Field(
        None,
        description="Where caches live (one folder per teacher, tokenizer, data and k); default KDAGENT_HOME/logit-cache.",
    )
    chunk_size: int = Field(64, ge=1, description="Sequences per cache chunk (the unit a killed build resumes by).")
    teacher_batch_size: int = Field(4, ge=1, description="Sequences per teacher forward pass while the cache is built.")


def collate(cache, indices):
    """A left-padded batch of cached sequences, with where each completion row sits in the kept logits, its label
    and the teacher's top-k."""
    import numpy as np
    import torch

    from kdagent.update.logit_cache import left_padded

    rows = [cache.sequence(i) for i in indices]
    sequences = [(r["input_ids"].tolist(), r["start"]) for r in rows]
    input_ids, mask, positions, keep = left_padded(sequences, pad_id=0)
    batch_index, column = [], []
    for b, (ids, start) in enumerate(sequences):
        n = len(ids) - start  # kept column keep - n - 1 + j predicts completion token j
        batch_index += [b] * n
        column += list(range(keep - n - 1, keep - 1))
    return {
        "input_ids": input_ids,
        "attention_mask": mask,
        "position_ids": positions,
        "keep": torch.tensor(keep),
        "batch_index": torch.tensor(batch_index),
        "column": torch.tensor(column),
        "targets": torch.tensor([t for ids, start in sequences for t in ids[start:]]),
        "topk_ids": torch.from_numpy(np.concatenate([r["topk_ids"] for r in rows])),
        "topk_logp": torch.from_numpy(np.concatenate([r["topk_logp"] for r in rows])),
        "tail": torch.from_numpy(np.concatenate([r["tail"] for r in rows])),
    }


def cached_loss(model, inputs, options: DistillCachedOptions):
    """The mixed loss of one collated batch, and its two parts (for the logs)."""
    import torch
    import torch.nn.functional as F

    from kdagent.update.losses import token_loss

    keep = int(inputs["keep"])
    logits = model(
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        position_ids=inputs["position_ids"],
        logits_to_keep=keep,
        use_cache=False,
    ).logits
    rows = logits[inputs["batch_index"], inputs["column"]].float()
    every = torch.ones(rows.shape[0], dtype=torch.bool, device=rows.device)
    kd = token_loss(
        options.loss,
        rows,
        every,
        topk_ids=inputs["topk_ids"],
        topk_logp=inputs["topk_logp"],
        tail_mass=inputs["tail"],
        beta=options.beta,
        skew=options.skew,
    )
    ce = F.cross_entropy(rows, inputs["targets"])
    return (1 - options.ce_weight) * kd + options.ce_weight * ce, kd.detach(), ce.detach()


def train_distill_cached(job: UpdateJob, teacher: Path | None, served=None) -> dict:
    """Build (or find) the teacher's cache over `job.examples` (SFTExample), then train `job.student` from it
    alone with `job.options` (DistillCachedOptions); save a full checkpoint to `job.out`. Returns metrics. The
    teacher is the local checkpoint `teacher`, or, with `served` (the recipe's teacher section naming
    endpoints), the model those servers serve."""
    import os
    import time

    from datasets import Dataset
    from transformers import AutoTokenizer, Trainer, TrainingArguments

    from kdagent.home import kdagent_home
    from kdagent.update.common import load_student, save_student, train, trainer_kwargs, with_lora, work_dir
    from kdagent.update.logit_cache import build_cache, tokenize_examples

    examples, options, update = job.examples, job.options, job.update
    max_length, base_model = job.max_length, job.student
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    sequences = tokenize_examples(tokenizer, [(e.prompt, e.completion) for e in examples], max_length)
    if not sequences:
        raise ValueError(f"no training example keeps a completion token within student.max_length ({max_length})")
    root = Path(options.cache_dir) if options.cache_dir else kdagent_home() / "logit-cache"
    builder = os.environ.get("RANK", "0") == "0"  # under accelerate launch rank 0 builds, the other ranks wait for it
    started = time.monotonic()
    if served is not None:
        from kdagent.update.remote_logits import build_remote_cache

        text = tokenizer.apply_chat_template([*examples[0].prompt, *examples[0].completion], tokenize=False)
        probe = (text, tokenizer(text, add_special_tokens=False).input_ids)  # each server must tokenize it the same
        cache = build_remote_cache(
            served, base_model, sequences, probe, options.top_k, root, chunk_size=options.chunk_size, builder=builder
        )
    else:
        cache = build_cache(
            teacher,
            base_model,
            sequences,
            options.top_k,
            root,
            chunk_size=options.chunk_size,
            batch_size=options.teacher_batch_size,
            builder=builder,
        )
    cache_seconds = time.monotonic() - started

    out_dir = Path(job.out)
    work = work_dir(out_dir)
    tokenizer, model = load_student(base_model)
    model = with_lora(model, update.lora)  # save_student merges the adapter
    logged = {"kd": [], "ce": []}

    class CachedDistillTrainer(Trainer):
        loss_is_scaled_for_ga = False  # a per-token mean: the Trainer divides it by the accumulation steps

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, kd, ce = cached_loss(model, inputs, options)
            logged["kd"].append(float(kd))
            logged["ce"].append(float(ce))
            return loss

    args = TrainingArguments(**trainer_kwargs(update, work, job.seed), remove_unused_columns=False)
    trainer = CachedDistillTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list([{"index": i} for i in range(len(cache))]),
        data_collator=lambda rows: collate(cache, [r["index"] for r in rows]),
        processing_class=tokenizer,
    )
    result = train(trainer, work)
    losses = [round(h["loss"], 4) for h in trainer.state.log_history if "loss" in h]
    save_student(trainer, tokenizer, update, work, out_dir)
    manifest = cache.manifest()
    return {
        "examples": len(sequences),
        "skipped": len(examples) - len(sequences),
        "steps": trainer.state.global_step,
        "train_loss": round(result.training_loss, 4),
        "losses": losses,
        "loss": options.loss,
        "ce_weight": options.ce_weight,
        "kd_loss_last": round(logged["kd"][-1], 4) if logged["kd"] else None,
        "ce_loss_last": round(logged["ce"][-1], 4) if logged["ce"] else None,
        "cache": {
            "path": str(cache.path),
            "hit": cache.hit,
            "chunks_built": cache.built,
            "k": options.top_k,
            "completion_tokens": manifest["completion_tokens"],
            "bytes_per_token": manifest["bytes_per_token"],
            "seconds": round(cache_seconds, 2),
        },
    }


def served(teacher, plugins) -> bool:
    """Whether the recipe's teacher is served at OpenAI-compatible endpoints (`teacher.base_url`), not loaded
    here: a kind that runs no local model, with endpoints."""
    from kdagent.teachers.chat import endpoints

    return not runs_locally_white_box(teacher, plugins) and bool(endpoints(teacher))


class DistillCached(Updater):
    """Distillation from a cache of the teacher's top-k log-probabilities over the round's examples: a local
    teacher's forward passes, or the `prompt_logprobs` of the servers at `teacher.base_url`."""

    options_model = DistillCachedOptions
    skipped = "no training examples"

    def check(self, recipe, options, plugins):
        if not runs_locally_white_box(recipe.teacher, plugins) and not served(recipe.teacher, plugins):
            raise UserError(
                "update.method: 'distill_cached' needs a local teacher with token log-probs (teacher.kind: hf, "
                "teacher.model: ...) or one served at OpenAI-compatible endpoints that return prompt_logprobs "
                f"(teacher.base_url: ...); the {recipe.teacher.kind!r} teacher is neither"
            )

    def check_models(self, recipe, options, student, plugins):
        from kdagent.teachers.vocab import require_shared_vocabulary

        if served(recipe.teacher, plugins):
            return  # the servers' tokenizer is compared with the student's when the cache is built (remote_logits)
        require_shared_vocabulary(other_teacher_path(recipe.teacher, plugins, student, "distill_cached"), student)

    def memory_mb(self, recipe, options, student, teacher, act_bytes):
        training = training_mb(recipe, student, act_bytes)  # the teacher is released before the student loads
        if teacher is None:
            return training
        tokens = options.teacher_batch_size * recipe.student.max_length
        caching = (teacher["params"] * 4 + tokens * teacher["hidden"] * 4 * 4 + tokens * teacher["vocab"] * 4) / MB
        return max(training, caching)

    def train(self, job):
        if not job.examples:
            return None
        teacher = job.teacher_path()  # None: the teacher is served, not loaded here
        return train_distill_cached(job, teacher, served=job.recipe.teacher if teacher is None else None)


@hookimpl
def kdagent_register_updaters(register):
    register("distill_cached", DistillCached())
