"""kdagent's own decode loop over a Hugging Face causal LM's forward and transformers' DynamicCache.

`decode` turns one batch of tokenised prompts into `n` continuations each:

- prefix reuse: each prompt is prefilled once for its `n` samples instead of `n` times; greedy decodes one
  copy and repeats the result, since the `n` greedy copies are the same;
- shared prefix in attention (on the CPU, for models on transformers' sdpa attention): the samples' cache
  holds only what they generate, and each step's attention reads each prompt's keys and values once for all
  its samples (`SharedPrefix`, a registered transformers attention function over PyTorch's CPU flash
  attention, the two parts joined by their log-sum-exps), where a repeated cache
  (`DynamicCache.batch_repeat_interleave`, used elsewhere) reads them once per sample;
- finished rows (an end-of-sequence token, a stop string, `max_new_tokens`) leave the running batch
  (`DynamicCache.batch_select_indices`), so no step is spent on them: rows from the end of the batch take
  their places (`fill_holes`), so few rows of the cache move, and leading columns that are padding for every
  remaining row are cut from a repeated cache;
- the KV cache lives in one buffer per layer sized for the whole batch (`RoomLayer`, kdagent/generation/
  cache.py): a step writes in place instead of copying the cache (transformers' DynamicLayer concatenates a
  new copy every step), and dropping rows or padding columns moves little or nothing;
- on the CPU, the vocabulary-sized output projection runs in cache-sized slices (`_sliced_head`): bitwise the
  same logits, faster;
- sampling on one CPU thread lays the float32 linear weights out column-major (`column_major`), which MKL's
  single-threaded products run faster;
- sampling ranks only the top TOP_CANDIDATES tokens (`_top_k`, by blocks) and normalises in place instead of
  sorting the whole vocabulary each step (exact: a wider nucleus falls back to the full sort);
- left padding with an attention mask, and position ids counted from each row's first real token, so a
  padded prompt is decoded as it would be alone;
- temperature and nucleus (top-p) sampling drawn from a `torch.Generator`, so the outputs depend only on the
  batch's prompts and the seed; greedy (argmax) when the temperature is 0.

The engine imports this module only when it generates, so torch and transformers load here at the top.
"""

import contextlib
import inspect
from collections.abc import Callable

import torch
from transformers import AttentionInterface, DynamicCache
from transformers.cache_utils import DynamicLayer

from kdagent.generation.cache import fill_holes, room_cache, trim_padding

# Nucleus sampling first looks for the nucleus among this many most likely tokens (exact: rows whose nucleus
# is wider fall back to a full sort; on the speed benchmark's bare prompts, 0.2% of rows were wider).
TOP_CANDIDATES = 64
# Rows of the output projection's weight per matmul on the CPU (see `_sliced_head`).
HEAD_SLICE = 512


def _cache_keyword(model) -> str:
    """The forward argument that takes the cache (`cache` in recent transformers, `past_key_values` before)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _top_k(x, k: int, block: int = 64):
    """(values, indices) of the `k` largest entries of each row of `x`, largest first, as `x.topk(k)`: the k
    largest lie in the k blocks of `block` columns with the largest maxima, so only those blocks are ranked
    (docs/benchmarks.md has its speed against `topk`)."""
    rows, width = x.shape
    if width % block or width // block <= 2 * k:
        return x.topk(k, dim=-1)
    blocks = x.view(rows, width // block, block).amax(-1).topk(k, dim=-1).indices
    columns = (blocks[..., None] * block + torch.arange(block, device=x.device)).view(rows, -1)
    values, picked = x.gather(-1, columns).topk(k, dim=-1)
    return values, columns.gather(-1, picked)


def _nucleus(scores, temperature: float, top_p: float):
    """The tempered probabilities (softmax of `scores / temperature`, rows of float logits) of each row's top-p
    nucleus: a token is kept when the tokens more likely than it sum to less than `top_p` (the most likely token
    is always kept), as transformers' TopPLogitsWarper does. Returns (probabilities, token ids) of the
    candidates, most likely first, zero outside the nucleus; the width is TOP_CANDIDATES, or the widest
    nucleus when a row's reaches past them (that row is then sorted whole).

    Overwrites `scores` (with the unnormalised probabilities): the vocabulary-wide work is a few passes over
    it in place, and only the candidates are ranked (`_top_k`)."""
    k = min(TOP_CANDIDATES, scores.shape[-1])
    peak = scores.amax(-1, keepdim=True)
    weights = scores.sub_(peak).mul_(1.0 / temperature).exp_()
    total = weights.sum(-1, keepdim=True)
    top, ids = _top_k(weights, k)
    values = top.div_(total)
    wide = values.sum(-1) < top_p  # the nucleus reaches past the top k: sort the whole row
    if wide.any():
        full_values, full_ids = weights[wide].div_(total[wide]).sort(dim=-1, descending=True)
        width = max(k, int(((full_values.cumsum(-1) - full_values) < top_p).sum(-1).max()))
        values = torch.nn.functional.pad(values, (0, width - k))
        ids = torch.nn.functional.pad(ids, (0, width - k))
        values[wide], ids[wide] = full_values[:, :width], full_ids[:, :width]
    before = values.cumsum(-1) - values
    return values.masked_fill_(before >= top_p, 0.0), ids


@contextlib.contextmanager
def _sliced_head(model):
    """While decoding on the CPU, compute the vocabulary-sized output projection in slices of HEAD_SLICE rows
    of its weight, each writing its columns of the logits in place. Each logit is the same dot product, so the
    logits are bitwise the same, but one matmul over the whole weight runs memory-bound at decoding batch sizes,
    and slices that stay in cache run it faster (docs/benchmarks.md). A head with a bias (whose sliced sums round differently), any other kind of
    head, or another device is left as it is; the model's own forward is restored on exit. Inference only
    (the matmuls write into a given output)."""
    head = model.get_output_embeddings()
    if (
        model.device.type != "cpu"
        or type(head) is not torch.nn.Linear
        or head.bias is not None
        or head.out_features < 4 * HEAD_SLICE
    ):
        yield
        return
    weights = head.weight.split(HEAD_SLICE)

    def forward(hidden):
        flat = hidden.reshape(-1, hidden.shape[-1])
        out = flat.new_empty((flat.shape[0], head.out_features))
        start = 0
        for w in weights:  # the slice's logits, written in place (the matmul's leading dimension is the row's)
            torch.mm(flat, w.t(), out=out[:, start : start + w.shape[0]])
            start += w.shape[0]
        return out.view(*hidden.shape[:-1], head.out_features)

    head.forward = forward
    try:
        yield
    finally:
        del head.forward


@contextlib.contextmanager
def column_major(model):
    """The model's float32 `nn.Linear` weights on the CPU (all but the output projection, which `_sliced_head`
    runs) laid out column-major: the same matrices, stored transposed, so each `F.linear` is MKL's plain
    product `x @ W.T` over a row-major `W.T` instead of its transposed-operand product. That is faster on one
    thread, with the layers' weights streaming through the core (the same bits from 16 rows up, not below), and
    no faster on two threads or in bfloat16 (docs/benchmarks.md), so decode uses it only when sampling on one
    thread (`sampling_layout`) and other dtypes are left alone. Weights are moved one at a time (one extra matrix
    at the peak) and laid out row-major again on exit, the same values in the same parameters, so training
    and saving after sampling see the model as it was. A weight already column-major (in an enclosing
    `column_major`, or tied to another layer's) is left as it is."""
    head = model.get_output_embeddings()
    moved = []
    try:
        if model.device.type == "cpu":
            with torch.no_grad():
                for module in model.modules():
                    weight = getattr(module, "weight", None)
                    if (
                        type(module) is torch.nn.Linear
                        and module is not head
                        and type(weight) is torch.nn.Parameter
                        and weight.dtype == torch.float32
                        and weight.stride() == (weight.shape[1], 1)
                        and min(weight.shape) > 1
                    ):
                        weight.data = weight.data.t().contiguous().t()
                        moved.append(weight)
        yield
    finally:
        with torch.no_grad():
            for weight in moved:
                weight.data = weight.data.contiguous()


def sampling_layout(model, temperature: float):
    """The weights' layout while decoding: `column_major` when sampling on the CPU on one torch thread, where it
    pays; otherwise the model's own (greedy keeps it, so its output stays bitwise `model.generate`'s)."""
    if temperature > 0 and model.device.type == "cpu" and torch.get_num_threads() == 1:
        return column_major(model)
    return contextlib.nullcontext()


def left_padded(rows: list[list[int]], pad_id: int, device):
    """(input ids, attention mask, position ids) of token-id rows left-padded to the longest, so every row ends
    in the last column; positions count from each row's first real token, so a padded row computes as it
    would alone."""
    width = max(len(r) for r in rows)
    input_ids = torch.tensor([[pad_id] * (width - len(r)) + list(r) for r in rows], dtype=torch.long, device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long, device=device)
    return input_ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def pick_tokens(logits, temperature: float, top_p: float, generator, overwrite: bool = False):
    """One next token per row of `logits` (rows, vocab): argmax when `temperature` is 0, else a draw from
    the tempered, top-p-filtered distribution using `generator`. With `overwrite`, float32 `logits` may be
    overwritten (decode's own logits), which saves a vocabulary-sized copy."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    if top_p >= 1.0:
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    scores = logits.float()
    values, ids = _nucleus(scores if overwrite or scores is not logits else scores.clone(), temperature, top_p)
    choice = torch.multinomial(values, 1, generator=generator)
    return ids.gather(-1, choice).squeeze(-1)


SHARED_PREFIX = "kdagent_shared_prefix"  # the attention implementation decode registers (see SharedPrefix)


class SharedPrefix:
    """The prompts' keys and values from the prefill, per layer, which every sample of a prompt attends to: the
    decode steps' attention (`_shared_prefix_attention`) reads each prompt's once for all its running samples,
    where a repeated cache would read it once per sample. Also where each running row's prompt and sample
    are, as rows finish."""

    def __init__(self, cache, mask, copies: int):
        self.keys = [layer.keys for layer in cache.layers]
        self.values = [layer.values for layer in cache.layers]
        self.copies = copies
        dtype = self.keys[0].dtype
        # added to the scores over the prefix's columns: 0 on a prompt's tokens, the dtype's minimum on its padding
        self.bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(
            mask == 0, torch.finfo(dtype).min
        )[:, None, None, :]
        self.prompts: list[int] = []  # the prompts with running rows, by index in the batch
        self.width = 0  # places a prompt in the queries' buffer (see `keep`)
        self.keep(list(range(mask.shape[0] * copies)))

    def keep(self, rows: list[int]) -> None:
        """Follow the running rows, by index in decode's outputs (prompt * copies + sample), in the batch's
        order; a prompt none of whose samples runs any more leaves the prefix."""
        live = sorted({row // self.copies for row in rows})
        if live != self.prompts:
            if self.prompts:
                index = torch.tensor([self.prompts.index(p) for p in live], device=self.bias.device)
                self.keys = [k[index] for k in self.keys]
                self.values = [v[index] for v in self.values]
                self.bias = self.bias[index]
            self.prompts = live
            self.queries = None  # the queries' buffer, made at the next step
        # each running row's place among its prompt's running samples, `width` places a prompt: the prompts'
        # part of attention runs for that many queries of each prompt, however many of its samples finished
        place = {p: i for i, p in enumerate(self.prompts)}
        ranks = [0] * len(self.prompts)
        slots = []
        for row in rows:
            at = place[row // self.copies]
            slots.append((at, ranks[at]))
            ranks[at] += 1
        width = max(ranks)
        if width != self.width:
            self.width, self.queries = width, None
        self.slots = torch.tensor([at * width + rank for at, rank in slots], device=self.bias.device)

    def repeated(self, layer: int) -> tuple:
        """The layer's prefix keys, values and padding bias, one copy per running row (the plain layout)."""
        index = self.slots // self.width
        return self.keys[layer][index], self.values[layer][index], self.bias[index]


def _shared_prefix_attention(
    module, query, key, value, attention_mask, scaling=None, dropout=0.0, shared_prefix=None, **kwargs
):
    """A transformers attention function (registered as SHARED_PREFIX) for one decode step of rows that share
    prompts: `key` and `value` are each row's own generated part, and `shared_prefix` (SharedPrefix) holds the
    prompts'. Each part runs through the CPU's flash attention, the prompts' part with all of a prompt's rows'
    queries at once, and the two are joined by their log-sum-exps: the same attention as over the whole
    sequence, to float rounding."""
    prefix = shared_prefix
    layer = module.layer_idx
    rows, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    if length != 1:
        raise ValueError(f"shared-prefix attention decodes one position at a time, not {length}")
    if any(kwargs.get(k) is not None for k in ("softcap", "s_aux", "sinks", "sliding_window", "position_bias")):
        # attention this function does not compute: transformers' sdpa over the whole sequence instead
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        keys, values, bias = prefix.repeated(layer)
        bias = torch.nn.functional.pad(bias, (0, key.shape[2]))
        return sdpa_attention_forward(
            module,
            query,
            torch.cat([keys, key], 2),
            torch.cat([values, value], 2),
            bias,
            dropout=dropout,
            scaling=scaling,
            **kwargs,
        )
    groups = heads // kv_heads
    q = query.reshape(rows, kv_heads, groups, dim)  # each key/value head's queries side by side
    own, own_lse = _flash_attention(q, key, value, scale=scaling)[:2]
    prompts, width, slots = len(prefix.prompts), prefix.width, prefix.slots
    # the prompts' part: a prompt's samples' queries side by side, in a buffer laid out as flash attention lays
    # out its output, (prompts, width, groups, kv heads, dim); the places of finished rows are left as they are
    if prefix.queries is None or prefix.queries.dtype != q.dtype:
        prefix.queries = q.new_zeros((prompts * width, groups, kv_heads, dim))
    prefix.queries.index_copy_(0, slots, q.transpose(1, 2))
    shared_q = prefix.queries.view(prompts, width * groups, kv_heads, dim).transpose(1, 2)
    shared, shared_lse = _flash_attention(
        shared_q, prefix.keys[layer], prefix.values[layer], attn_mask=prefix.bias, scale=scaling
    )[:2]
    shared = shared.transpose(1, 2).reshape(prompts * width, groups, kv_heads, dim).index_select(0, slots)
    shared_lse = shared_lse.transpose(1, 2).reshape(prompts * width, groups, kv_heads).index_select(0, slots)
    # each part weighs by its share of the whole softmax's normaliser: exp(lse) / (exp(lse) + exp(own lse))
    weight = torch.sigmoid(shared_lse - own_lse.transpose(1, 2))[..., None]
    out = torch.lerp(own.transpose(1, 2).float(), shared.float(), weight).to(
        query.dtype
    )  # (rows, groups, kv heads, dim)
    return out.transpose(1, 2).reshape(rows, 1, heads, dim), None


def _flash_attention(query, key, value, attn_mask=None, scale=None):
    """(output, log-sum-exp of the scores) from PyTorch's CPU flash attention."""
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        query, key, value, attn_mask=attn_mask, scale=scale
    )


AttentionInterface.register(SHARED_PREFIX, _shared_prefix_attention)


def _shares_prefix(model, cache) -> bool:
    """Whether decode's samples can share their prompt's prefix in attention: on the CPU, for a model on
    transformers' sdpa attention that can switch its attention function, whose layers all attend to the whole
    sequence (`cache`'s layers are plain DynamicLayers), without logit soft-capping."""
    config = model.config
    return (
        model.device.type == "cpu"
        and getattr(config, "_attn_implementation", None) == "sdpa"
        and bool(cache.layers)
        and all(type(layer) is DynamicLayer for layer in cache.layers)
        and getattr(model, "_can_set_attn_implementation", lambda: False)()
        and getattr(config, "attn_logit_softcapping", None) is None
    )


@contextlib.contextmanager
def _attention(model, name: str | None):
    """The model on the attention implementation `name` (unchanged when None), restored on exit."""
    if name is None:
        yield
        return
    old = model.config._attn_implementation
    model.set_attn_implementation(name)
    try:
        yield
    finally:
        model.set_attn_implementation(old)


def decode(
    model,
    prompts: list[list[int]],
    n: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    eos_ids: set[int],
    pad_id: int,
    generator=None,
    stopped: Callable[[list[int]], bool] | None = None,
) -> list[list[list[int]]]:
    """For each prompt (token ids), `n` continuations (token ids, ending with the end-of-sequence token when
    one was generated). `stopped(tokens)` says whether a row's continuation has reached a stop string."""
    device = model.device
    input_ids, mask, positions = left_padded(prompts, pad_id, device)
    copies = n if temperature > 0 else 1
    prefill = DynamicCache(config=model.config)
    # With a shared prefix, the prefill's cache is the prompts' prefix, read once per prompt by every sample's
    # attention, and the running rows' cache holds only what they generate.
    shared = copies > 1 and _shares_prefix(model, prefill)
    if not shared:
        room_cache(prefill, capacity=input_ids.shape[1] + max_new_tokens)
    cache_kw = _cache_keyword(model)
    with sampling_layout(model, temperature), torch.inference_mode(), _sliced_head(model):
        logits = model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{cache_kw: prefill},
        ).logits[:, -1, :]
        extra = {}
        if shared:
            extra["shared_prefix"] = prefix = SharedPrefix(prefill, mask, copies)
            cache = room_cache(DynamicCache(config=model.config), capacity=max_new_tokens)
            logits = logits.repeat_interleave(copies, dim=0)
            positions = positions.repeat_interleave(copies, dim=0)
        else:
            cache = prefill
            if copies > 1:  # one prefill per prompt, shared by its samples
                cache.batch_repeat_interleave(copies)
                logits = logits.repeat_interleave(copies, dim=0)
                mask = mask.repeat_interleave(copies, dim=0)
                positions = positions.repeat_interleave(copies, dim=0)
        next_position = positions[:, -1:] + 1
        rows = list(range(len(prompts) * copies))  # the running rows, by their index in `outputs`
        outputs: list[list[int]] = [[] for _ in rows]
        with _attention(model, SHARED_PREFIX if shared else None):
            for _ in range(max_new_tokens):
                tokens = pick_tokens(logits, temperature, top_p, generator, overwrite=True)
                keep = []
                for j, (row, token) in enumerate(zip(rows, tokens.tolist())):
                    out = outputs[row]
                    out.append(token)
                    if token not in eos_ids and len(out) < max_new_tokens and not (stopped and stopped(out)):
                        keep.append(j)
                if not keep:
                    break
                if len(keep) < len(rows):  # drop finished rows from the running batch
                    keep = fill_holes(keep)
                    index = torch.tensor(keep, device=device)
                    rows = [rows[j] for j in keep]
                    tokens, next_position = tokens[index], next_position[index]
                    cache.batch_select_indices(index)
                    if shared:
                        prefix.keep(rows)
                    else:
                        mask = trim_padding(cache, mask[index])
                if not shared:
                    mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=-1)
                logits = model(
                    input_ids=tokens[:, None],
                    attention_mask=None if shared else mask,
                    position_ids=next_position,
                    use_cache=True,
                    **{cache_kw: cache},
                    **extra,
                ).logits[:, -1, :]
                next_position = next_position + 1
    per_prompt = [outputs[i * copies : (i + 1) * copies] for i in range(len(prompts))]
    return [[list(o) for o in group * (n // copies)] for group in per_prompt]
