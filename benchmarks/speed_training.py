"""benchmarks/speed.py's training half and its memory meter: kdagent's SFT and DPO updaters against TRL's
trainers with their defaults, on the same examples for the same steps (the method is in speed.py's docstring),
and `PhasePeak`, the peak RSS of a phase, which the generation half uses too."""

import json
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from unittest import mock


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def _rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class PhasePeak:
    """The process's peak RSS while a `with` block runs, sampled every 20 ms (ru_maxrss only ever grows)."""

    def __enter__(self):
        self.start_mb = self.peak_mb = _rss_mb()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._done.wait(0.02):
            self.peak_mb = max(self.peak_mb, _rss_mb())

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, _rss_mb())

    def report(self) -> dict:
        return {"rss_at_start_mb": round(self.start_mb, 1), "rss_peak_mb": round(self.peak_mb, 1)}


_SETTINGS = (
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "padding_free",
    "packing",
    "gradient_checkpointing",
    "bf16",
    "learning_rate",
)


def _real_tokens(inputs) -> int:
    """Non-padding tokens in one batch as the trainer's compute_loss receives it (padding-free batches have no
    attention mask and no padding)."""
    mask = inputs.get("attention_mask")
    return int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel())


def metered(trainer_cls, meter: dict):
    """`trainer_cls` that records, into `meter`, the settings it ran with, each step's wall time (step begin to
    step end, optimizer step included) and the non-padding tokens of each step's batches. Nothing it computes
    changes."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            meter["steps"].append({"tokens": 0})
            meter["_start"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            meter["steps"][-1]["seconds"] = time.perf_counter() - meter["_start"]

    class Metered(trainer_cls):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.add_callback(Clock())
            meter.update(steps=[], settings={k: getattr(self.args, k, None) for k in _SETTINGS})

        def compute_loss(self, model, inputs, *a, **kw):
            if meter["steps"] and model.training:
                meter["steps"][-1]["tokens"] += _real_tokens(inputs)
            return super().compute_loss(model, inputs, *a, **kw)

    Metered.__name__ = Metered.__qualname__ = trainer_cls.__name__
    return Metered


def _summary(meter: dict, rss: "PhasePeak") -> dict:
    steps = [s for s in meter["steps"] if "seconds" in s]
    timed = steps[1:] or steps  # the first step warms up
    tokens, seconds = sum(s["tokens"] for s in timed), sum(s["seconds"] for s in timed)
    return {
        "steps": len(steps),
        "timed_steps": len(timed),
        "trained_tokens": tokens,
        "seconds": round(seconds, 2),
        "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
        "first_step_s": round(steps[0]["seconds"], 2) if steps else None,
        "settings": meter.get("settings"),
        **rss.report(),
    }


def training_data(count: int, seed: int, skill_name: str):
    """(SFT examples, preference pairs): the skill's prompts with the tasks' reference completions; for a pair,
    the reference against the same reasoning ending in a wrong answer."""
    from kdagent.plugins import build_plugins
    from kdagent.records import PreferencePair, Provenance, SFTExample

    plugins = build_plugins(load_entry_points=False)
    skill = plugins.create("skills", skill_name)
    sft, pairs = [], []
    for task in plugins.create("domains", "arithmetic").seed_tasks(count, seed):
        reference = skill.reference_completion(task)
        if reference is None:
            continue
        prompt, origin = (
            skill.messages(task),
            Provenance(round=0, teacher="reference", skill=skill_name, domain="arithmetic", task_id=task.id),
        )
        chosen = [{"role": "assistant", "content": reference}]
        wrong = reference.replace(f"The answer is {task.answer}.", f"The answer is {int(float(task.answer)) + 3}.")
        sft.append(SFTExample(id=task.id, prompt=prompt, completion=chosen, provenance=origin))
        pairs.append(
            PreferencePair(
                id=task.id,
                prompt=prompt,
                chosen=chosen,
                rejected=[{"role": "assistant", "content": wrong}],
                margin=1.0,
                provenance=origin,
            )
        )
    return sft, pairs


def _best(runs: list[dict]) -> dict:
    """The run with the most tokens per second, with every run's figure (the first runs pay for warming up
    the process's memory, whichever trainer goes first)."""
    best = max(runs, key=lambda r: r["tokens_per_s"] or 0)
    return dict(best, runs=[r["tokens_per_s"] for r in runs]) if len(runs) > 1 else best


def bench_training(model_dir: Path, args) -> dict:
    """SFT (and DPO unless --train-dpo-steps 0): kdagent's updater, then TRL's trainer with its defaults,
    alternating, `--train-repeats` times; the best run of each."""
    import trl
    from datasets import Dataset

    from kdagent.recipe import DPOOptions, UpdateConfig
    from kdagent.testing import make_job
    from kdagent.update.dpo import train_dpo
    from kdagent.update.sft import train_sft

    cpu = args.device == "cpu"
    out = {}
    for method, steps in (("sft", args.train_steps), ("dpo", args.train_dpo_steps)):
        if steps <= 0:
            continue
        batch = args.train_batch_size
        sft, pairs = training_data(steps * batch, args.seed, args.skill)
        examples = sft if method == "sft" else pairs
        trainer_name, config_name = ("SFTTrainer", "SFTConfig") if method == "sft" else ("DPOTrainer", "DPOConfig")
        rows = [
            {"prompt": e.prompt, "completion": e.completion}
            if method == "sft"
            else {"prompt": e.prompt, "chosen": e.chosen, "rejected": e.rejected}
            for e in examples
        ]
        runs: dict[str, list] = {"kdagent": [], "trl_defaults": []}
        for repeat in range(args.train_repeats):
            with tempfile.TemporaryDirectory(prefix=f"kdagent-speed-{method}-") as tmp:
                meter: dict = {}
                with (
                    PhasePeak() as rss,
                    mock.patch.object(trl, trainer_name, metered(getattr(trl, trainer_name), meter)),
                ):
                    update = UpdateConfig(epochs=1, batch_size=batch, checkpoint_steps=10_000)
                    data = {"examples": examples} if method == "sft" else {"pairs": examples, "options": DPOOptions()}
                    job = make_job(
                        model_dir,
                        Path(tmp) / "kdagent",
                        update=update,
                        max_length=args.train_max_length,
                        seed=args.seed,
                        **data,
                    )
                    (train_sft if method == "sft" else train_dpo)(job)
                runs["kdagent"].append(_summary(meter, rss))
                print(
                    json.dumps({f"{method} kdagent ({repeat + 1})": runs["kdagent"][-1]}), file=sys.stderr, flush=True
                )

                meter = {}
                with PhasePeak() as rss:
                    config = getattr(trl, config_name)(
                        output_dir=str(Path(tmp) / "trl"),
                        max_steps=runs["kdagent"][-1]["steps"] or steps,
                        per_device_train_batch_size=batch,
                        use_cpu=cpu,
                        report_to=[],
                        save_strategy="no",
                    )
                    trainer = metered(getattr(trl, trainer_name), meter)(
                        model=str(model_dir), args=config, train_dataset=Dataset.from_list(rows)
                    )
                    trainer.train()
                    del trainer
                runs["trl_defaults"].append(_summary(meter, rss))
                print(
                    json.dumps({f"{method} trl ({repeat + 1})": runs["trl_defaults"][-1]}), file=sys.stderr, flush=True
                )
        result = {
            "examples": len(examples),
            "batch_size": batch,
            "repeats": args.train_repeats,
            **{arm: _best(measured) for arm, measured in runs.items()},
        }
        ours, theirs = result["kdagent"]["tokens_per_s"], result["trl_defaults"]["tokens_per_s"]
        result["speedup"] = round(ours / theirs, 2) if ours and theirs else None
        out[method] = result
    return out
