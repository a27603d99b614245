"""`sft`: TRL's SFTTrainer on conversational prompt/completion examples (loss on the completion only).

Full fine-tuning or LoRA (peft), fp32 master weights with bf16 autocast on a GPU when one is present and on CPUs with
bf16 instructions (AVX512-BF16 or AMX; `KDAGENT_CPU_BF16=0` keeps them in fp32), fp32 on other CPUs, with no
change to the recipe. An interrupted run resumes from its last complete checkpoint; the trained student is saved to a work
folder and renamed into place (kdagent/update/common.py).
"""

from pathlib import Path

from kdagent.hookspecs import hookimpl
from kdagent.update.common import load_student, peft_config, report, save_student, train, trainer_kwargs, work_dir
from kdagent.update.updater import UpdateJob, Updater


def train_sft(job: UpdateJob) -> dict:
    """Train on `job.examples` starting from `job.student`; save a full checkpoint to `job.out`. Returns metrics."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    update, out_dir = job.update, Path(job.out)
    work = work_dir(out_dir)
    dataset = Dataset.from_list([{"prompt": e.prompt, "completion": e.completion} for e in job.examples])
    tokenizer, model = load_student(job.student)
    args = SFTConfig(**trainer_kwargs(update, work, job.seed), max_length=job.max_length, completion_only_loss=True)
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config(update.lora)
    )
    result = train(trainer, work)
    save_student(trainer, tokenizer, update, work, out_dir)
    return report(trainer, result, len(job.examples))


class SFT(Updater):
    """Supervised fine-tuning on the round's curated examples (sft.jsonl)."""

    skipped = "no training examples"
    tool_calls = True

    def train(self, job):
        if not job.examples:
            return None
        return train_sft(job)


@hookimpl
def kdagent_register_updaters(register):
    register("sft", SFT())
