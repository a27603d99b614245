"""How fast does kdagent generate and train? Measured in one run against the plain Hugging Face / TRL paths on
the same model, data and settings.

    .venv/bin/python benchmarks/speed.py                      # embedded SmolLM2-135M on the CPU, ~14 minutes
    .venv/bin/python benchmarks/speed.py --threads 1          # on a CPU shared with other jobs
    .venv/bin/python benchmarks/speed.py --only generation    # or --only training
    .venv/bin/python benchmarks/speed.py --only generation --passages 0 1 2   # bare prompts, 1 and 2 passages
    .venv/bin/python benchmarks/speed.py --model-shape smollm2-135m --device cuda --prompts 256 --batch-size 64 \
        --tokenizer /path/to/smollm2-tokenizer-folder     # random weights of SmolLM2's shape, bf16, on a GPU

Generation: kdagent's engine (kdagent/generation/decode.py) against `model.generate` with
`num_return_sequences=n` (Engine backend "hf"), on the chat prompts the `cot` skill sends for tasks of
the `arithmetic` domain, once for each `--passages K` (default 0 and 1): each prompt grounded in K chunks of
the domain's corpus, as the loop's retrieval stage grounds them (the quickstart retrieves one; 0 is the bare
prompt), `n` samples a prompt at temperature 0.7 and top-p 0.95, the same batch size and
length bucketing, over the same loaded model. New tokens count each reply up to and including its
end-of-sequence token. The two paths take different random draws, so their replies (and token counts) differ;
tokens per second is the fair measure.

Training (benchmarks/speed_training.py): kdagent's updaters as the loop calls them (kdagent/update/sft.py
`train_sft`, kdagent/update/dpo.py `train_dpo`, with UpdateConfig's defaults but one epoch) against TRL's
SFTTrainer and DPOTrainer with their default settings (only the output folder, the step count, the batch size and
the CPU flag set), on the same examples (the `cot` skill's prompts with the tasks' reference solutions; for DPO a
wrong answer as the rejected reply) for the same number of steps. Speed is trained (non-padding) tokens per
second, counted from the batches each trainer's `compute_loss` receives and timed from step begin to step end
(optimizer step included), without the first step (warm-up); the loading and saving around `train()` are not
timed. The two trainers alternate `--train-repeats` times (default 2) and each reports its best run: the first
runs of a process pay for growing its memory, whichever trainer goes first. Each arm reports the settings its
trainer actually ran with (padding-free, packing, gradient checkpointing, bf16).

Prints one JSON object. Each phase reports its own peak RSS (process RSS sampled every 20 ms while it runs);
on CUDA each generation run also reports its peak allocated memory.
"""

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from speed_training import PhasePeak, _peak_rss_mb, bench_training  # the sibling module (benchmarks/ is on sys.path)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# SmolLM2-135M-Instruct's architecture, to build random weights where the real ones cannot travel.
SHAPES = {
    "smollm2-135m": dict(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        rope_theta=100000.0,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    ),
}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _machine(device: str) -> dict:
    import torch
    import transformers

    info = {
        "cpu": _cpu_name(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "device": device,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "date": datetime.date.today().isoformat(),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def load_model(args):
    """(model, tokenizer, description) for `--model` or `--model-shape`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from kdagent.generation.engine import inference_dtype, load_causal_lm
    from kdagent.models import resolve_model

    dtype = getattr(torch, inference_dtype(args.dtype, args.device))
    if args.model_shape:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or resolve_model("smollm2-135m-instruct"))
        torch.manual_seed(0)
        config = LlamaConfig(**SHAPES[args.model_shape])
        model = AutoModelForCausalLM.from_config(config, dtype=dtype).to(args.device).eval()
        return (
            model,
            tokenizer,
            f"{args.model_shape} (random weights from its config, {str(dtype).removeprefix('torch.')})",
        )
    path = resolve_model(args.model)
    model, tokenizer = load_causal_lm(path, args.device, args.dtype)
    return model, tokenizer, f"{args.model} ({path}, {str(model.dtype).removeprefix('torch.')})"


def chat_prompts(count: int, seed: int, skill_name: str, passages: int = 0) -> list:
    """The skill's chat prompts for `count` arithmetic tasks; with `passages`, each grounded in that many chunks
    of the domain's corpus (as the loop's grounding stage sends them, with the recipe's default chunk size),
    taken in turn instead of retrieved: the prompts' length is what matters here."""
    from kdagent.plugins import build_plugins
    from kdagent.recipe import RetrievalConfig
    from kdagent.records import Passage, stable_id
    from kdagent.retrieval.store import chunk

    plugins = build_plugins(load_entry_points=False)
    skill = plugins.create("skills", skill_name)
    domain = plugins.create("domains", "arithmetic")
    tasks = domain.seed_tasks(count, seed)
    if not passages:
        return [skill.messages(task) for task in tasks]
    size = RetrievalConfig().chunk_chars
    pool = [
        Passage(id=stable_id(text), text=text, source=doc.source)
        for doc in domain.corpus()
        for text in chunk(doc.text, size)
    ]
    return [
        skill.messages(task, [pool[(i * passages + j) % len(pool)] for j in range(passages)])
        for i, task in enumerate(tasks)
    ]


def _timed_generation(engine, prompts, args, seed: int) -> dict:
    import torch

    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with PhasePeak() as rss:
        start = time.perf_counter()
        tokens = engine.generate_tokens(
            prompts,
            n=args.n,
            temperature=args.temperature,
            top_p=args.top_p,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            seed=seed,
            desc=engine.backend,
        )
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    new = sum(len(t) for row in tokens for t in row)
    out = {"seconds": round(seconds, 2), "new_tokens": new, "tokens_per_s": round(new / seconds, 1), **rss.report()}
    if cuda:
        out["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def bench_generation(model, tokenizer, args, passages: int) -> dict:
    """Both backends over the same loaded model, alternating, `--repeats` times; the median of each."""
    from kdagent.generation.engine import Engine

    prompts = chat_prompts(args.prompts, args.seed, args.skill, passages)
    engines = {b: Engine.from_model(model, tokenizer, backend=b) for b in ("hf", "kdagent")}
    for engine in engines.values():  # warm-up: first calls allocate and pick kernels
        engine.generate_tokens(
            prompts[:2],
            n=2,
            temperature=args.temperature,
            top_p=args.top_p,
            max_new_tokens=4,
            batch_size=2,
            desc="warm-up",
        )
    runs = {b: [] for b in engines}
    for r in range(args.repeats):
        for backend, engine in engines.items():
            runs[backend].append(_timed_generation(engine, prompts, args, seed=args.seed + r))
            print(json.dumps({backend: runs[backend][-1]}), file=sys.stderr, flush=True)
    result = {
        "prompts": len(prompts),
        "n": args.n,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "skill": args.skill,
        "passages": passages,
        "prompt_tokens_mean": round(
            statistics.mean(
                len(
                    tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=True)[
                        "input_ids"
                    ]
                )
                for p in prompts
            ),
            1,
        ),
    }
    for backend, measured in runs.items():
        best = sorted(measured, key=lambda m: m["tokens_per_s"])[len(measured) // 2]
        result[backend] = dict(best, runs=[m["tokens_per_s"] for m in measured]) if len(measured) > 1 else best
    result["speedup"] = round(result["kdagent"]["tokens_per_s"] / result["hf"]["tokens_per_s"], 2)
    if args.greedy_check:
        result["greedy_check"] = greedy_check(engines, prompts[: args.greedy_check], args)
    return result


def greedy_check(engines: dict, prompts: list, args) -> dict:
    """Both backends decode `prompts` greedily in one batch: how many replies agree token for token (on the
    CPU in fp32 all do, as tests/test_engine.py asserts; in bf16 on a GPU, kernels picked by batch shape may
    round differently), and the first position where the others part."""
    new_tokens = min(args.max_new_tokens, 32)
    got = {
        b: e.generate_tokens(prompts, max_new_tokens=new_tokens, batch_size=len(prompts), desc=f"greedy {b}")
        for b, e in engines.items()
    }
    ours, plain = ([row[0] for row in got[b]] for b in ("kdagent", "hf"))
    parted = [
        next((i for i, (a, b) in enumerate(zip(x, y)) if a != b), min(len(x), len(y)))
        for x, y in zip(ours, plain)
        if x != y
    ]
    return {
        "prompts": len(prompts),
        "max_new_tokens": new_tokens,
        "equal": sum(x == y for x, y in zip(ours, plain)),
        "first_difference_at": parted,
    }


# ---------------------------------------------------------------------------------------------------- training


def _model_dir(model, tokenizer, args, tmp: str) -> Path:
    """A folder the updaters can load the model from (the trainers load their own copies)."""
    if not args.model_shape:
        from kdagent.models import resolve_model

        return resolve_model(args.model)
    import torch

    folder = Path(tmp) / args.model_shape
    model.to(torch.float32).save_pretrained(folder)  # fp32 like the embedded checkpoint (TRL loads the saved dtype)
    tokenizer.save_pretrained(folder)
    return folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="a model alias or a local HF folder")
    parser.add_argument(
        "--model-shape",
        choices=sorted(SHAPES),
        default=None,
        help="build random weights of this shape instead of loading --model",
    )
    parser.add_argument(
        "--tokenizer", default=None, help="tokenizer folder for --model-shape (default: the embedded SmolLM2's)"
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16"),
        default="auto",
        help="generation weights, both engines (as teacher.dtype; auto: bfloat16 on a GPU, float32 on the CPU)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--only", choices=("generation", "training"), default=None, help="run one part only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skill", default="cot", help="the skill whose prompts are sent")
    gen = parser.add_argument_group("generation")
    gen.add_argument("--prompts", type=int, default=8, help="chat prompts (arithmetic tasks)")
    gen.add_argument(
        "--passages",
        type=int,
        nargs="+",
        default=[0, 1],
        help="workloads: each prompt grounded in this many corpus chunks (0: bare prompts); one result each",
    )
    gen.add_argument("--n", type=int, default=8, help="samples per prompt")
    gen.add_argument("--batch-size", type=int, default=8, help="prompts per batch")
    gen.add_argument("--max-new-tokens", type=int, default=128)
    gen.add_argument("--temperature", type=float, default=0.7)
    gen.add_argument("--top-p", type=float, default=0.95)
    gen.add_argument("--repeats", type=int, default=1, help="timed runs of each backend (median reported)")
    gen.add_argument(
        "--greedy-check",
        type=int,
        default=8,
        metavar="K",
        help="also decode the first K prompts greedily with both backends and count equal replies (0: skip)",
    )
    train = parser.add_argument_group("training")
    train.add_argument("--train-batch-size", type=int, default=4, help="examples per step")
    train.add_argument("--train-steps", type=int, default=4, help="SFT steps (examples = steps x batch size)")
    train.add_argument("--train-dpo-steps", type=int, default=2, help="DPO steps; 0 skips DPO")
    train.add_argument("--train-repeats", type=int, default=2, help="runs of each trainer, alternating (best reported)")
    train.add_argument(
        "--train-max-length",
        type=int,
        default=512,
        help="kdagent's max_length (the recipe default; TRL's default is its own)",
    )
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    started = time.perf_counter()
    if args.only == "training" and not args.model_shape:  # the trainers load their own copies
        from kdagent.models import resolve_model

        model = tokenizer = None
        described = f"{args.model} ({resolve_model(args.model)})"
    else:
        model, tokenizer, described = load_model(args)
    out = {"machine": _machine(args.device), "model": described, "argv": sys.argv[1:] if argv is None else argv}
    with contextlib.redirect_stdout(sys.stderr):  # the trainers print their logs: stdout is for the JSON only
        if args.only in (None, "generation"):
            out["generation"] = [bench_generation(model, tokenizer, args, k) for k in args.passages]
        if args.only in (None, "training"):
            with tempfile.TemporaryDirectory(prefix="kdagent-speed-model-") as tmp:
                folder = _model_dir(model, tokenizer, args, tmp)
                del model
                out["training"] = bench_training(folder, args)
    out["peak_rss_mb"] = _peak_rss_mb()
    out["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
