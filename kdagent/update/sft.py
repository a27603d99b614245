"""`sft`: TRL's SFTTrainer on conversational prompt/completion examples (loss on the completion only).

Full fine-tuning or LoRA (peft), bf16 on a GPU when one is present, fp32 on the CPU otherwise, with no
change to the recipe. The trained student is saved to a temporary folder and renamed into place.
"""

import os
import shutil
from pathlib import Path

from kdagent.records import SFTExample


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

    cuda = torch.cuda.is_available()
    out_dir = Path(out_dir)
    for stale in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    work = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    dataset = Dataset.from_list([{"prompt": e.prompt, "completion": e.completion} for e in examples])
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    # fp32 master weights; on a GPU, bf16=True runs the forward and backward passes under bf16 autocast
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32, use_safetensors=True)
    args = SFTConfig(
        output_dir=str(work / "trainer"),
        learning_rate=update.learning_rate,
        num_train_epochs=update.epochs,
        per_device_train_batch_size=update.batch_size,
        gradient_accumulation_steps=update.gradient_accumulation_steps,
        warmup_steps=update.warmup_ratio,  # a float below 1 is a share of the steps
        lr_scheduler_type="linear",
        max_length=max_length,
        completion_only_loss=True,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=seed,
        bf16=cuda,
        use_cpu=not cuda,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=_peft_config(update.lora))
    result = trainer.train()
    losses = [round(h["loss"], 4) for h in trainer.state.log_history if "loss" in h]
    final = trainer.model
    if update.lora is not None:  # merge so the next round (and `from_pretrained`) sees a plain checkpoint
        final = final.merge_and_unload()
    final.save_pretrained(work / "student", safe_serialization=True)
    tokenizer.save_pretrained(work / "student")
    shutil.rmtree(work / "trainer", ignore_errors=True)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(work / "student", out_dir)
    shutil.rmtree(work, ignore_errors=True)
    return {
        "examples": len(examples),
        "steps": trainer.state.global_step,
        "train_loss": round(result.training_loss, 4),
        "losses": losses,
    }
