"""`sft`: TRL's SFTTrainer on conversational prompt/completion examples (loss on the completion only).

Full fine-tuning or LoRA (peft), fp32 master weights with bf16 autocast on a GPU when one is present and on CPUs with
bf16 instructions (AVX512-BF16 or AMX; `KDAGENT_CPU_BF16=0` keeps them in fp32), fp32 on other CPUs, with no
change to the recipe. An interrupted run resumes from its last complete checkpoint; the trained student is saved to a work
folder and renamed into place (kdagent/update/common.py).
"""

from pathlib import Path

from kdagent.records import SFTExample
from kdagent.update.common import report, save_student, train, trainer_kwargs, work_dir
from kdagent.models.registry import safetensors_only


def _peft_config(lora):
    if lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules, task_type="CAUSAL_LM")


def train_sft(examples: list[SFTExample], base_model: Path, out_dir: Path, update, max_length: int, seed: int) -> dict:
    """Train on `examples` starting from `base_model`; save a full checkpoint to `out_dir`. Returns metrics."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    out_dir = Path(out_dir)
    work = work_dir(out_dir)
    dataset = Dataset.from_list([{"prompt": e.prompt, "completion": e.completion} for e in examples])
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32, use_safetensors=safetensors_only())
    args = SFTConfig(**trainer_kwargs(update, work, seed), max_length=max_length, completion_only_loss=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=_peft_config(update.lora))
    result = train(trainer, work)
    save_student(trainer, tokenizer, update.lora, work, out_dir)
    return report(trainer, result, len(examples))
