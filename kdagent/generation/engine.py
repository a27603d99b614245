"""The batched generation engine over a local Hugging Face causal LM.

Prompts are chat messages rendered with the model's chat template, sorted by length so each batch pads
little (length bucketing), generated with left padding and `num_return_sequences=n`, and returned in the
caller's order. Sampling is seeded per batch, so a batch's outputs depend only on its prompts and seed.
"""

from pathlib import Path

from kdagent.records import Message
from kdagent.models.registry import safetensors_only


def pick_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_causal_lm(path: Path, device: str | None = None):
    """Load a checkpoint (safetensors only, no remote code) and its tokenizer for inference."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or pick_device()
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
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


class Engine:
    def __init__(self, model_path: Path, device: str | None = None):
        self.model_path = Path(model_path)
        self.model, self.tokenizer = load_causal_lm(self.model_path, device)
        self.device = self.model.device

    def render(self, messages: list[Message]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

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
        import torch
        from tqdm.auto import tqdm

        texts = [self.render(m) for m in prompts]
        lengths = [len(self.tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: lengths[i])
        results: list[list[str]] = [[] for _ in texts]
        sampling = temperature > 0
        with tqdm(total=len(texts), desc=desc, unit="prompt", leave=False) as bar:
            for b, start in enumerate(range(0, len(order), batch_size)):
                idx = order[start : start + batch_size]
                enc = self.tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
                enc = {k: v.to(self.device) for k, v in enc.items()}
                torch.manual_seed((seed * 1_000_003 + b) % 2**63)
                with torch.inference_mode():
                    out = self.model.generate(
                        **enc,
                        do_sample=sampling,
                        temperature=temperature if sampling else None,
                        top_p=top_p if sampling else None,
                        top_k=None,
                        num_return_sequences=n,
                        max_new_tokens=max_new_tokens,
                        pad_token_id=self.tokenizer.pad_token_id,
                        **({"stop_strings": stop, "tokenizer": self.tokenizer} if stop else {}),
                    )
                new = out[:, enc["input_ids"].shape[1] :]
                decoded = self.tokenizer.batch_decode(new, skip_special_tokens=True)
                for j, i in enumerate(idx):
                    results[i] = [_cut(d, stop).strip() for d in decoded[j * n : (j + 1) * n]]
                bar.update(len(idx))
        return results

    def choice_logprobs(self, prompts: list[list[Message]], choices: list[list[str]], batch_size: int = 16) -> list[list[float]]:
        """For each prompt, the summed log-probability of each choice as the assistant's reply."""
        pairs = [(messages, option) for messages, options in zip(prompts, choices) for option in options]
        sums = iter([sum(lp) for lp in self.token_logprobs([m for m, _ in pairs], [o for _, o in pairs], batch_size)])
        return [[next(sums) for _ in options] for options in choices]

    def token_logprobs(self, prompts: list[list[Message]], replies: list[str], batch_size: int = 16) -> list[list[float]]:
        """For each (prompt, reply) pair, the log-probability of each of the reply's tokens (white-box)."""
        import torch

        rows = []
        for messages, reply in zip(prompts, replies):
            prefix = self.render(messages)
            prefix_ids = self.tokenizer(prefix, add_special_tokens=False).input_ids
            ids = self.tokenizer(prefix + reply, add_special_tokens=False).input_ids
            rows.append((ids, len(prefix_ids)))
        out: list[list[float]] = []
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, (ids, _) in enumerate(batch):
                input_ids[r, : len(ids)] = torch.tensor(ids)
                mask[r, : len(ids)] = 1
            with torch.inference_mode():
                logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)).logits.float()
            logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
            targets = input_ids[:, 1:].to(self.device)
            token_lp = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            for r, (ids, prefix_len) in enumerate(batch):
                out.append(token_lp[r, prefix_len - 1 : len(ids) - 1].tolist())
        return out

    def close(self) -> None:
        import gc

        del self.model
        gc.collect()
