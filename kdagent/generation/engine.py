"""The batched generation engine over a local Hugging Face causal LM.

Prompts are chat messages rendered with the model's chat template, sorted by length so each batch pads
little (length bucketing), generated a batch at a time and returned in the caller's order. Sampling is
seeded per batch, so a batch's outputs depend only on its prompts and seed.

Two backends decode a batch:

- "kdagent" (the default): kdagent's own decode loop (kdagent/generation/decode.py), which prefills each
  prompt once for its `n` samples, drops finished rows from the running batch and writes the KV cache in
  place; greedy output is the same as `model.generate`'s;
- "hf": `model.generate` with left padding and `num_return_sequences=n`, kept as the reference.
"""

import contextlib
from pathlib import Path

from kdagent.models.registry import safetensors_only
from kdagent.records import Message

BACKENDS = ("kdagent", "hf")


def pick_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def inference_dtype(dtype: str, device: str) -> str:
    """The dtype name inference runs in: `dtype`, or for "auto" bfloat16 on a GPU and float32 on the CPU."""
    return ("bfloat16" if device == "cuda" else "float32") if dtype == "auto" else dtype


def load_causal_lm(path: Path, device: str | None = None, dtype: str = "auto"):
    """Load a checkpoint (safetensors only, no remote code) and its tokenizer for inference, in `dtype`
    ("auto": bfloat16 on a GPU, float32 on the CPU; or "float32", "bfloat16", "float16")."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or pick_device()
    dtype = getattr(torch, inference_dtype(dtype, device))
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=safetensors_only()).to(device)
    model.eval()
    return model, tokenizer


def _cut(text: str, stop: list[str] | None) -> str:
    """The text up to and including its first stop string (a token may run past one)."""
    ends = [text.find(s) + len(s) for s in stop or [] if s in text]
    return text[: min(ends)] if ends else text


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown generation backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    return backend


def _batch_seed(seed: int, batch: int) -> int:
    return (seed * 1_000_003 + batch) % 2**63


class Engine:
    def __init__(self, model_path: Path, device: str | None = None, backend: str = "kdagent", dtype: str = "auto"):
        self.backend = _check_backend(backend)
        self.model_path = Path(model_path)
        self.model, self.tokenizer = load_causal_lm(self.model_path, device, dtype)
        self.device = self.model.device

    @classmethod
    def from_model(cls, model, tokenizer, backend: str = "kdagent") -> "Engine":
        """An engine over an already loaded model and tokenizer (shared, not copied)."""
        engine = cls.__new__(cls)
        engine.backend = _check_backend(backend)
        engine.model_path = Path(getattr(model, "name_or_path", "") or ".")
        engine.model, engine.tokenizer = model, tokenizer
        engine.device = model.device
        return engine

    def render(self, messages: list[Message]) -> str:
        """The prompt text. A conversation that ends with an assistant message is a prefilled reply: the model
        continues that message (the reply returned is what follows it)."""
        if messages and messages[-1]["role"] == "assistant":
            return self.tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=True)
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    @property
    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return self.tokenizer.eos_token_id if pad is None else pad

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return set(eos) if isinstance(eos, (list, tuple)) else {eos}

    def generate(
        self,
        prompts: list[list[Message]],
        n: int = 1,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_new_tokens: int = 128,
        batch_size: int = 16,
        seed: int = 0,
        desc: str = "generate",
        stop: list[str] | None = None,
    ) -> list[list[str]]:
        """For each prompt, `n` replies (greedy when temperature is 0), each ending at the first of the
        `stop` strings (kept) when given."""
        tokens = self.generate_tokens(prompts, n, temperature, top_p, max_new_tokens, batch_size, seed, desc, stop)
        return [
            [_cut(d, stop).strip() for d in self.tokenizer.batch_decode(row, skip_special_tokens=True)]
            for row in tokens
        ]

    def generate_tokens(
        self,
        prompts: list[list[Message]],
        n: int = 1,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_new_tokens: int = 128,
        batch_size: int = 16,
        seed: int = 0,
        desc: str = "generate",
        stop: list[str] | None = None,
    ) -> list[list[list[int]]]:
        """For each prompt, `n` continuations as token ids, each ending with the end-of-sequence token when
        one was generated; a continuation also ends once its text holds one of the `stop` strings."""
        from tqdm.auto import tqdm

        ids = [self.tokenizer(self.render(m), add_special_tokens=False).input_ids for m in prompts]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        results: list[list[list[int]]] = [[] for _ in ids]
        run = self._decode_batch if self.backend == "kdagent" else self._generate_batch
        with self._layout(temperature), tqdm(total=len(ids), desc=desc, unit="prompt", leave=False) as bar:
            for b, start in enumerate(range(0, len(order), batch_size)):
                idx = order[start : start + batch_size]
                rows = run([ids[i] for i in idx], n, temperature, top_p, max_new_tokens, _batch_seed(seed, b), stop)
                for i, row in zip(idx, rows):
                    results[i] = row
                bar.update(len(idx))
        return results

    def _layout(self, temperature: float):
        """Where kdagent's sampling lays the model's weights out column-major (`decode.column_major`, on one CPU
        thread), once for all batches instead of once per batch."""
        if self.backend != "kdagent":
            return contextlib.nullcontext()
        from kdagent.generation.decode import sampling_layout

        return sampling_layout(self.model, temperature)

    def _stopped(self, stop: list[str] | None):
        if not stop:
            return None
        decode = self.tokenizer.decode
        # decode checks after every token, so a stop string that has just appeared ends in the newest token and
        # starts at most its length in characters before: decoding that many tokens back (plus room for tokens
        # that decode to nothing or to part of a character) finds it without decoding the whole reply each step.
        window = max(len(s) for s in stop) + 16

        def stopped(tokens: list[int]) -> bool:
            text = decode(tokens[-window:], skip_special_tokens=True)
            return any(s in text for s in stop)

        return stopped

    def _decode_batch(self, ids, n, temperature, top_p, max_new_tokens, seed, stop):
        import torch

        from kdagent.generation.decode import decode

        generator = torch.Generator(device=self.device).manual_seed(seed) if temperature > 0 else None
        return decode(
            self.model,
            ids,
            n=n,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            eos_ids=self._eos_ids(),
            pad_id=self._pad_id,
            generator=generator,
            stopped=self._stopped(stop),
        )

    def _generate_batch(self, ids, n, temperature, top_p, max_new_tokens, seed, stop):
        """The reference: `model.generate` on the left-padded batch with `num_return_sequences=n`."""
        import torch

        from kdagent.generation.decode import left_padded

        pad = self._pad_id
        input_ids, mask, _ = left_padded(ids, pad, self.device)
        width = input_ids.shape[1]
        sampling = temperature > 0
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=mask,
                do_sample=sampling,
                temperature=temperature if sampling else None,
                top_p=top_p if sampling else None,
                top_k=None,
                num_return_sequences=n,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad,
                **({"stop_strings": stop, "tokenizer": self.tokenizer} if stop else {}),
            )
        eos = self._eos_ids()
        rows = []
        for row in out[:, width:].tolist():
            end = next((k + 1 for k, t in enumerate(row) if t in eos), len(row))
            row = row[:end]
            while row and row[-1] == pad and pad not in eos:  # padding after a stop string
                row.pop()
            rows.append(row)
        return [rows[j * n : (j + 1) * n] for j in range(len(ids))]

    def choice_logprobs(
        self, prompts: list[list[Message]], choices: list[list[str]], batch_size: int = 16
    ) -> list[list[float]]:
        """For each prompt, the summed log-probability of each choice as the assistant's reply."""
        pairs = [(messages, option) for messages, options in zip(prompts, choices) for option in options]
        sums = iter([sum(lp) for lp in self.token_logprobs([m for m, _ in pairs], [o for _, o in pairs], batch_size)])
        return [[next(sums) for _ in options] for options in choices]

    def branch_logprobs(self, prompts: list[list[Message]], stems: list[str], leaves: list[str]) -> list[list[float]]:
        """For each prompt, the summed log-probability of each stem + leaf as the assistant's reply, stems in
        order and each stem's leaves in order: `choice_logprobs` over every stem + leaf, to float rounding.

        Where each leaf is one token after every stem (as ` true` and ` false` after a judge's score), a prompt
        and all its stems run as one sequence, in one forward pass with no cache: each stem attends to the
        prompt and to itself only (a 4D mask), takes the positions it would have alone, and its leaves are read
        off its last position. Otherwise every combination is scored as a choice."""
        import torch

        combos = [stem + leaf for stem in stems for leaf in leaves]
        leaf_ids = [self.tokenizer(leaf, add_special_tokens=False).input_ids for leaf in leaves]
        packed = []  # per prompt: (prompt tokens, [stem tokens])
        for messages in prompts:
            prefix = self.render(messages)
            head = self.tokenizer(prefix, add_special_tokens=False).input_ids
            tails = []
            for stem in stems:
                ids = self.tokenizer(prefix + stem, add_special_tokens=False).input_ids
                clean = (
                    ids[: len(head)] == head
                    and len(ids) > len(head)
                    and all(
                        len(leaf) == 1
                        and self.tokenizer(prefix + stem + text, add_special_tokens=False).input_ids == ids + leaf
                        for text, leaf in zip(leaves, leaf_ids)
                    )
                )
                if not clean:
                    return self.choice_logprobs(prompts, [combos] * len(prompts))
                tails.append(ids[len(head) :])
            packed.append((head, tails))
        after = torch.tensor([leaf[0] for leaf in leaf_ids], device=self.device)
        out = []
        for head, tails in packed:
            n, width = len(head), len(head) + sum(len(t) for t in tails)
            ids = head + [tok for tail in tails for tok in tail]
            positions = list(range(n))
            allowed = torch.zeros((width, width), dtype=torch.bool)
            allowed[:n, :n] = torch.ones((n, n), dtype=torch.bool).tril()
            spans, at = [], n
            for tail in tails:
                k = len(tail)
                positions += range(n, n + k)
                allowed[at : at + k, :n] = True
                allowed[at : at + k, at : at + k] = torch.ones((k, k), dtype=torch.bool).tril()
                spans.append((at, k))
                at += k
            mask = torch.zeros((1, 1, width, width), dtype=self.model.dtype)
            mask[0, 0][~allowed] = torch.finfo(self.model.dtype).min
            keep = width - n + 1  # the prompt's last position (a stem's first token) and every stem position
            with torch.inference_mode():
                logits = self.model(
                    input_ids=torch.tensor([ids], device=self.device),
                    attention_mask=mask.to(self.device),
                    position_ids=torch.tensor([positions], device=self.device),
                    use_cache=False,
                    logits_to_keep=keep,
                ).logits[0]
                logps = logits.float().log_softmax(-1)  # row r predicts the token at width - keep + r + 1
            row = []
            for (start, k), tail in zip(spans, tails):
                # tail token j sits at start + j; it is predicted from the row before (the prompt's last, for j = 0)
                before = [n - 1] + list(range(start, start + k - 1))
                stem_lp = sum(logps[b - (width - keep), t].item() for b, t in zip(before, tail))
                ends = logps[start + k - 1 - (width - keep)]
                row += [stem_lp + lp for lp in ends[after].tolist()]
            out.append(row)
        return out

    def token_logprobs(
        self, prompts: list[list[Message]], replies: list[str], batch_size: int = 16
    ) -> list[list[float]]:
        """For each (prompt, reply) pair, the log-probability of each of the reply's tokens (white-box).

        Pairs that share a prompt (a choice task's options) share its prefill: each distinct prompt of a batch
        runs once, left-padded, and its KV cache is repeated for its replies, which run on top of it, and only
        the replies' positions go through the vocabulary projection. The same computation as one forward over
        prompt + reply, to float rounding (tests/test_whitebox.py). `batch_size` counts distinct prompts."""
        import torch
        from transformers import DynamicCache

        from kdagent.generation.decode import _cache_keyword, left_padded

        groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}  # prompt tokens -> [(pair, reply tokens)]
        for i, (messages, reply) in enumerate(zip(prompts, replies)):
            prefix = self.render(messages)
            cut = len(self.tokenizer(prefix, add_special_tokens=False).input_ids)
            ids = self.tokenizer(prefix + reply, add_special_tokens=False).input_ids
            groups.setdefault(tuple(ids[:cut]), []).append((i, ids[cut:]))
        out: list[list[float]] = [[] for _ in prompts]
        pad, cache_kw, items = self._pad_id, _cache_keyword(self.model), list(groups.items())
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            input_ids, mask, positions = left_padded([head for head, _ in batch], pad, self.device)
            rows = [(g, pair, tail) for g, (_, pairs) in enumerate(batch) for pair, tail in pairs if tail]
            if not rows:
                continue
            cache = DynamicCache(config=self.model.config)
            with torch.inference_mode():
                first = (
                    self.model(
                        input_ids=input_ids,
                        attention_mask=mask,
                        position_ids=positions,
                        use_cache=True,
                        logits_to_keep=1,
                        **{cache_kw: cache},
                    )
                    .logits[:, -1]
                    .float()
                    .log_softmax(-1)
                )
                index = torch.tensor([g for g, _, _ in rows], device=self.device)
                firsts = first[index, torch.tensor([tail[0] for _, _, tail in rows], device=self.device)].tolist()
                longest = max(len(tail) for _, _, tail in rows)
                rest = None
                if longest > 1:  # the replies' tokens but the last, on the repeated prompt cache
                    tails = torch.full((len(rows), longest), pad, dtype=torch.long)
                    tail_mask = torch.zeros((len(rows), longest - 1), dtype=torch.long)
                    for r, (_, _, tail) in enumerate(rows):
                        tails[r, : len(tail)] = torch.tensor(tail, dtype=torch.long)
                        tail_mask[r, : len(tail) - 1] = 1
                    tails, tail_mask = tails.to(self.device), tail_mask.to(self.device)
                    cache.batch_select_indices(index)
                    steps = torch.arange(1, longest, device=self.device)
                    logits = self.model(
                        input_ids=tails[:, :-1],
                        attention_mask=torch.cat([mask[index], tail_mask], dim=-1),
                        position_ids=positions[index, -1:] + steps,
                        use_cache=True,
                        **{cache_kw: cache},
                    ).logits
                    rest = logits.float().log_softmax(-1).gather(-1, tails[:, 1:, None]).squeeze(-1).tolist()
            for r, (_, pair, tail) in enumerate(rows):
                out[pair] = [firsts[r]] + (rest[r][: len(tail) - 1] if rest is not None else [])
        return out

    def close(self) -> None:
        import gc

        del self.model
        gc.collect()
