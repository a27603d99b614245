"""`rloo`: TRL's RLOOTrainer (REINFORCE leave-one-out) on the round's tasks that have a reference answer: the
student samples `num_generations` completions a prompt, the skill's verifier scores them (blended with the
teacher as judge by `judge_weight`), and each completion's baseline is the mean reward of the others.

The same shape as `grpo` (kdagent/update/grpo.py), whose reward function and generation batch it shares;
options go under `update.options.rloo`.
"""

from pathlib import Path
from statistics import fmean

from pydantic import BaseModel, ConfigDict, Field

from kdagent.hookspecs import hookimpl
from kdagent.update.common import load_student, peft_config, report, save_student, train, trainer_kwargs, work_dir
from kdagent.update.grpo import generation_batch_size, job_reward
from kdagent.update.updater import UpdateJob, Updater, check_completion_length, training_mb


class RLOOOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    num_generations: int = Field(
        4, ge=2, description="Completions sampled per prompt (each one's baseline is the others' mean reward)."
    )
    max_completion_length: int = Field(64, ge=1, description="Longest completion, in tokens.")
    beta: float = Field(
        0.05, ge=0.0, description="KL penalty against the reference model, as TRL's default (0 loads none)."
    )
    temperature: float = Field(1.0, gt=0.0, description="Sampling temperature of the completions.")
    judge_weight: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Share of the reward that comes from the teacher as judge; the rest is the skill's verifier.",
    )


def train_rloo(job: UpdateJob, prompts: list[list[dict]], reward_fn, task_ids: list[str]) -> dict:
    """Train on `prompts` (chat messages; `task_ids` reach the reward function) from `job.student` with
    `job.options` (RLOOOptions); save to `job.out`. Prompts longer than `max_length - max_completion_length`
    tokens are skipped and counted."""
    from datasets import Dataset
    from trl import RLOOConfig, RLOOTrainer

    options, update = job.options, job.update
    tokenizer, model = load_student(job.student)
    budget = job.max_length - options.max_completion_length
    rows = [
        {"prompt": p, "task_id": tid}
        for p, tid in zip(prompts, task_ids)
        if len(
            tokenizer(
                tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False), add_special_tokens=False
            ).input_ids
        )
        <= budget
    ]
    gen_batch = generation_batch_size(update.batch_size, update.gradient_accumulation_steps, options.num_generations)
    if len(rows) < gen_batch // options.num_generations:
        raise ValueError(
            f"RLOO samples {gen_batch // options.num_generations} prompts x {options.num_generations} completions at a "
            f"time, but only {len(rows)} of {len(prompts)} prompts fit in {budget} tokens: add prompts or lower batch_size"
        )
    out_dir = Path(job.out)
    work = work_dir(out_dir)
    args = RLOOConfig(
        **trainer_kwargs(update, work, job.seed),
        generation_batch_size=gen_batch,
        num_generations=options.num_generations,
        max_completion_length=options.max_completion_length,
        temperature=options.temperature,
        beta=options.beta,
        remove_unused_columns=False,  # task_id reaches the reward function
    )
    trainer = RLOOTrainer(
        model=model,
        reward_funcs=[reward_fn],
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config(update.lora),
    )
    result = train(trainer, work)
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    save_student(trainer, tokenizer, update, work, out_dir)
    metrics = {**report(trainer, result, len(rows)), "skipped": len(prompts) - len(rows)}
    return metrics | ({"reward_mean": round(fmean(rewards), 4)} if rewards else {})


class RLOO(Updater):
    """REINFORCE leave-one-out on the round's referenced tasks, rewarded by the skill's verifier."""

    options_model = RLOOOptions
    skipped = "no tasks with a reference answer to reward"

    def check(self, recipe, options):
        check_completion_length("update.options.rloo.max_completion_length", recipe, options.max_completion_length)

    def memory_mb(self, recipe, options, student, teacher, act_bytes):
        frozen = student["params"] * 4 if options.beta > 0 and recipe.update.lora is None else 0  # the reference model
        return training_mb(recipe, student, act_bytes, frozen)

    def train(self, job):
        referenced = [t for t in job.tasks if t.answer]
        if not referenced:
            return None
        reward = job_reward(job, {t.id: t for t in referenced}, job.options.judge_weight, "rloo")
        try:
            return train_rloo(job, [job.skill.messages(t) for t in referenced], reward, [t.id for t in referenced])
        finally:
            reward.close()


@hookimpl
def kdagent_register_updaters(register):
    register("rloo", RLOO())
