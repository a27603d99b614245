"""`grpo`: TRL's GRPOTrainer on conversational prompts scored by a TRL-style reward function.

The same shape as `sft`: full fine-tuning or LoRA (peft, merged at the end), fp32 master weights with bf16 autocast
on a GPU and on CPUs with bf16 instructions, fp32 on other CPUs (kdagent/update/common.py). The student samples
`num_generations` completions per prompt; `reward_fn(prompts, completions, **kwargs)` scores them, and TRL passes
each extra dataset column to it as a keyword (one value per completion). With `beta > 0` TRL adds a KL penalty against a reference model (a frozen copy loaded from
`base_model`, or the adapter-disabled model with LoRA); with `beta == 0` (TRL's default) none is loaded.
The trained student is saved to a temporary folder and renamed into place.
"""

import math
import os
from pathlib import Path
from statistics import fmean

from kdagent.hookspecs import hookimpl
from kdagent.recipe import GRPOOptions
from kdagent.update.common import load_student, peft_config, save_student, train, trainer_kwargs, work_dir
from kdagent.update.updater import UpdateJob, Updater, check_completion_length, training_mb


def generation_batch_size(
    batch_size: int, gradient_accumulation_steps: int, num_generations: int, world_size: int = 1
) -> int:
    """Completions sampled at once: TRL's default (one optimiser step's worth) rounded up to whole prompt groups."""
    return math.lcm(batch_size * world_size * gradient_accumulation_steps, num_generations)


def train_grpo(
    job: UpdateJob,
    prompts: list[list[dict]],
    reward_fn,
    extra_columns: dict[str, list] | None = None,
    temperature: float | None = None,
) -> dict:
    """Train on `prompts` (lists of chat messages) starting from `job.student` with `job.options` (GRPOOptions);
    save a full checkpoint to `job.out`.

    `job.max_length` bounds prompt plus completion: prompts longer than `max_length - max_completion_length`
    tokens (chat template applied) are skipped and counted in the metrics. `reward_fn(prompts, completions,
    **kwargs)` scores the completions; `extra_columns` maps a column name to one value per prompt, which the
    reward function receives as a keyword argument. `temperature` is the sampling temperature (default: the
    options' `temperature`). Returns metrics.
    """
    options, update, max_length = job.options, job.update, job.max_length
    temperature = options.temperature if temperature is None else temperature
    num_generations, max_completion_length = options.num_generations, options.max_completion_length
    extra_columns = dict(extra_columns or {})
    for name, values in extra_columns.items():
        if name in ("prompt", "completion", "completions", "prompts", "completion_ids"):
            raise ValueError(f"extra column name {name!r} is reserved by TRL's reward-function call")
        if len(values) != len(prompts):
            raise ValueError(f"extra column {name!r} has {len(values)} values for {len(prompts)} prompts")
    if max_completion_length >= max_length:
        raise ValueError(f"max_completion_length ({max_completion_length}) must be below max_length ({max_length})")

    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    out_dir = Path(job.out)
    tokenizer = AutoTokenizer.from_pretrained(job.student)
    budget = max_length - max_completion_length
    keep = [
        i
        for i, p in enumerate(prompts)
        if len(
            tokenizer(
                tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False), add_special_tokens=False
            ).input_ids
        )
        <= budget
    ]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    gen_batch = generation_batch_size(update.batch_size, update.gradient_accumulation_steps, num_generations, world)
    if len(keep) < gen_batch // num_generations:
        raise ValueError(
            f"GRPO samples {gen_batch // num_generations} prompts x {num_generations} completions at a time, but only "
            f"{len(keep)} of {len(prompts)} prompts fit in {budget} tokens: add prompts or lower batch_size"
        )
    rows = [{"prompt": prompts[i], **{name: values[i] for name, values in extra_columns.items()}} for i in keep]
    dataset = Dataset.from_list(rows)

    work = work_dir(out_dir)
    model = load_student(job.student)[1]  # with beta > 0 TRL loads the reference model from its name
    args = GRPOConfig(
        **trainer_kwargs(update, work, job.seed),  # per-device batch size counts completions, not prompts
        generation_batch_size=gen_batch,
        num_generations=num_generations,
        max_completion_length=max_completion_length,
        temperature=temperature,
        beta=options.beta,
        remove_unused_columns=False,  # the extra columns reach the reward function
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward_fn],
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config(update.lora),
    )
    result = train(trainer, work)
    history = trainer.state.log_history
    losses = [round(h["loss"], 4) for h in history if "loss" in h]
    rewards = [round(h["reward"], 4) for h in history if "reward" in h]
    reward_stds = [round(h["reward_std"], 4) for h in history if "reward_std" in h]
    zero_std = [h["frac_reward_zero_std"] for h in history if "frac_reward_zero_std" in h]
    save_student(trainer, tokenizer, update, work, out_dir)
    metrics = {
        "examples": len(keep),
        "skipped": len(prompts) - len(keep),
        "steps": trainer.state.global_step,
        "train_loss": round(result.training_loss, 4),
        "losses": losses,
        "temperature": temperature,
    }
    if rewards:
        metrics["reward_mean"] = round(fmean(rewards), 4)
        metrics["rewards"] = rewards
        metrics["reward_stds"] = reward_stds
    if zero_std:  # share of prompt groups whose completions all got the same reward, i.e. taught nothing
        metrics["frac_reward_zero_std"] = round(fmean(zero_std), 4)
    return metrics


def job_reward(job: UpdateJob, tasks: dict, judge_weight: float, label: str):
    """The reward function of a sampling updater: the skill's verifier on `tasks` (by id), blended with the
    recipe's teacher as judge by `judge_weight` (the teacher loads on the first judged batch)."""
    from kdagent.feedback.rewards import skill_reward
    from kdagent.teachers.lazy import LazyTeacher

    r = job.recipe
    judge = LazyTeacher(job.plugins, r.teacher, job.student) if judge_weight > 0 else None
    rubric = r.feedback.rubric or getattr(job.domain, "rubric", None)
    return skill_reward(
        job.skill,
        tasks,
        job.round,
        judge,
        judge_weight,
        rubric,
        seed=r.seed * 1000 + job.round,
        attempts=r.feedback.judge_attempts,
        score=r.feedback.judge_score,
        label=label,
    )


class GRPO(Updater):
    """Group relative policy optimisation on the round's tasks that have a reference answer, rewarded by the
    skill's verifier (and the teacher as judge, by `update.grpo.judge_weight`)."""

    options_model = GRPOOptions
    skipped = "no tasks with a reference answer to reward"

    def check(self, recipe, options):
        check_completion_length("update.grpo.max_completion_length", recipe, options.max_completion_length)

    def memory_mb(self, recipe, options, student, teacher, act_bytes):
        frozen = student["params"] * 4 if options.beta > 0 and recipe.update.lora is None else 0  # the reference model
        return training_mb(recipe, student, act_bytes, frozen)

    def train(self, job):
        o = job.options
        referenced = [t for t in job.tasks if t.answer]
        if not referenced:
            return None
        reward = job_reward(job, {t.id: t for t in referenced}, o.judge_weight, "grpo")
        try:
            return train_grpo(
                job, [job.skill.messages(t) for t in referenced], reward, {"task_id": [t.id for t in referenced]}
            )
        finally:
            reward.close()


@hookimpl
def kdagent_register_updaters(register):
    register("grpo", GRPO())
