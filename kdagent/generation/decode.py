"""kdagent's own decode loop over a Hugging Face causal LM's forward and transformers' DynamicCache.

`decode` turns one batch of tokenised prompts into `n` continuations each:

- prefix reuse: each prompt is prefilled once, then its KV cache and last logits are repeated `n` times
  (`DynamicCache.batch_repeat_interleave`) instead of prefilling `n` copies; greedy decodes one copy and
  repeats the result, since the `n` greedy copies are the same;
- finished rows (an end-of-sequence token, a stop string, `max_new_tokens`) leave the running batch
  (`DynamicCache.batch_select_indices`), so no step is spent on them, and leading columns that are padding
  for every remaining row are cut from the cache;
- the KV cache lives in one buffer per layer sized for the whole batch (`RoomLayer`): a step writes in place
  instead of copying the cache (transformers' DynamicLayer concatenates a new copy every step), and
  dropping rows or padding columns moves little or nothing;
- on the CPU, the vocabulary-sized output projection runs in cache-sized slices (`_sliced_head`): bitwise the
  same logits, faster;
- sampling picks the nucleus among the top TOP_CANDIDATES tokens instead of sorting the whole vocabulary
  each step (exact: a wider nucleus falls back to the full sort);
- left padding with an attention mask, and position ids counted from each row's first real token, so a
  padded prompt is decoded as it would be alone;
- temperature and nucleus (top-p) sampling drawn from a `torch.Generator`, so the outputs depend only on the
  batch's prompts and the seed; greedy (argmax) when the temperature is 0.

The engine imports this module only when it generates, so torch and transformers load here at the top.
"""

import contextlib
import inspect
from typing import Callable

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

# Positions a cache layer grows by when its buffer is full (decode sizes the buffer to need none).
CACHE_ROOM = 64
# Nucleus sampling first looks for the nucleus among this many most likely tokens (exact: rows whose nucleus
# is wider fall back to a full sort).
TOP_CANDIDATES = 128
# Rows of the output projection's weight per matmul on the CPU (see `_sliced_head`).
HEAD_SLICE = 512


def _cache_keyword(model) -> str:
    """The forward argument that takes the cache (`cache` in recent transformers, `past_key_values` before)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _nucleus(probs, top_p: float):
    """Probabilities zeroed outside the top-p nucleus: a token is kept when the tokens more likely than it sum
    to less than `top_p` (the most likely token is always kept), as transformers' TopPLogitsWarper does.
    Returns (values, token ids) of the candidates, most likely first."""
    k = min(TOP_CANDIDATES, probs.shape[-1])
    values, ids = probs.topk(k, dim=-1)
    wide = values.sum(-1) < top_p  # the nucleus reaches past the top k: sort the whole row
    if wide.any():
        full_values, full_ids = probs[wide].sort(dim=-1, descending=True)
        pad = probs.shape[-1] - k
        values = torch.nn.functional.pad(values, (0, pad))
        ids = torch.nn.functional.pad(ids, (0, pad))
        values[wide], ids[wide] = full_values, full_ids
    before = values.cumsum(-1) - values
    return values.masked_fill(before >= top_p, 0.0), ids


@contextlib.contextmanager
def _sliced_head(model):
    """While decoding on the CPU, compute the vocabulary-sized output projection in slices of HEAD_SLICE rows
    of its weight. Each logit is the same dot product, so the logits are bitwise the same, but one matmul over
    the whole weight (113 MB for SmolLM2's 49152 x 576 head in fp32) runs memory-bound at decoding batch sizes,
    and slices that stay in cache ran it 1.3-1.6x faster (MKL, 1 thread, 4 to 128 rows). Any other head, or
    another device, is left as it is; the model's own forward is restored on exit."""
    head = model.get_output_embeddings()
    if model.device.type != "cpu" or type(head) is not torch.nn.Linear or head.out_features < 4 * HEAD_SLICE:
        yield
        return
    weights = head.weight.split(HEAD_SLICE)
    biases = head.bias.split(HEAD_SLICE) if head.bias is not None else [None] * len(weights)

    def forward(hidden):
        return torch.cat([torch.nn.functional.linear(hidden, w, b) for w, b in zip(weights, biases)], dim=-1)

    head.forward = forward
    try:
        yield
    finally:
        del head.forward


def left_padded(rows: list[list[int]], pad_id: int, device):
    """(input ids, attention mask, position ids) of token-id rows left-padded to the longest, so every row ends
    in the last column; positions count from each row's first real token, so a padded row computes as it
    would alone."""
    width = max(len(r) for r in rows)
    input_ids = torch.tensor([[pad_id] * (width - len(r)) + list(r) for r in rows], dtype=torch.long, device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long, device=device)
    return input_ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def pick_tokens(logits, temperature: float, top_p: float, generator):
    """One next token per row of `logits` (rows, vocab): argmax when `temperature` is 0, else a draw from
    the tempered, top-p-filtered distribution using `generator`."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p >= 1.0:
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    values, ids = _nucleus(probs, top_p)
    choice = torch.multinomial(values, 1, generator=generator)
    return ids.gather(-1, choice).squeeze(-1)


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

    cache = _room_cache(DynamicCache(config=model.config), capacity=input_ids.shape[1] + max_new_tokens)
    cache_kw = _cache_keyword(model)
    with torch.inference_mode(), _sliced_head(model):
        logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                       logits_to_keep=1, **{cache_kw: cache}).logits[:, -1, :]
        copies = n if temperature > 0 else 1
        if copies > 1:  # one prefill per prompt, shared by its samples
            cache.batch_repeat_interleave(copies)
            logits = logits.repeat_interleave(copies, dim=0)
            mask = mask.repeat_interleave(copies, dim=0)
            positions = positions.repeat_interleave(copies, dim=0)
        next_position = positions[:, -1:] + 1
        rows = list(range(len(prompts) * copies))  # the running rows, by their index in `outputs`
        outputs: list[list[int]] = [[] for _ in rows]
        for step in range(max_new_tokens):
            tokens = pick_tokens(logits, temperature, top_p, generator)
            keep = []
            for j, (row, token) in enumerate(zip(rows, tokens.tolist())):
                out = outputs[row]
                out.append(token)
                if token not in eos_ids and len(out) < max_new_tokens and not (stopped and stopped(out)):
                    keep.append(j)
            if not keep:
                break
            if len(keep) < len(rows):  # drop finished rows from the running batch
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                rows = [rows[j] for j in keep]
                tokens, mask, next_position = tokens[index], mask[index], next_position[index]
                mask = _trim_padding(cache, mask)
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=-1)
            logits = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=next_position, use_cache=True,
                           **{cache_kw: cache}).logits[:, -1, :]
            next_position = next_position + 1
    per_prompt = [outputs[i * copies:(i + 1) * copies] for i in range(len(prompts))]
    return [[list(o) for o in group * (n // copies)] for group in per_prompt]


class RoomLayer(DynamicLayer):
    """A DynamicLayer that keeps its keys and values in one preallocated buffer and hands out views of it,
    instead of concatenating each step onto a fresh copy of the whole cache (`DynamicLayer.update`).

    - `update` writes the step's keys and values into the room after the filled part;
    - `batch_repeat_interleave` writes the `n` copies straight into a new buffer (one copy);
    - `batch_select_indices` compacts the kept rows to the front of the buffer, moving only the rows after
      the first dropped one;
    - `trim_front` drops leading columns by moving the view's start (no copy).

    The buffer holds `capacity` positions (the prompt width plus `max_new_tokens` when `decode` sets it, so it
    is allocated once), growing by CACHE_ROOM when it is full. Anything else that replaces `keys`/`values`
    (they are then no longer this layer's view) is copied into a new buffer at the next update."""

    _layer_type = None  # not registered in transformers' layer mappings
    capacity = 0
    room: tuple | None = None  # (keys buffer, values buffer): (rows, heads, positions, head_dim)
    start = 0  # the buffer position of the view's first column
    view = None  # the keys view this layer last handed out

    def _owned(self) -> bool:
        return self.room is not None and self.keys is self.view

    def _set_view(self, rows: int, start: int, end: int) -> None:
        self.start = start
        self.keys, self.values = (buf[:rows, :, start:end] for buf in self.room)
        self.view = self.keys

    def _new_room(self, like, rows: int, positions: int):
        size = max(positions + CACHE_ROOM if positions > self.capacity else self.capacity, 1)
        return tuple(s.new_empty((rows, s.shape[1], size, s.shape[-1])) for s in like)

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length, new, rows = self.get_seq_length(), key_states.shape[-2], key_states.shape[0]
        if not self._owned() or self.keys.shape[0] != rows or self.start + length + new > self.room[0].shape[-2]:
            room = self._new_room((key_states, value_states), rows, length + new)
            if length:
                room[0][:, :, :length] = self.keys
                room[1][:, :, :length] = self.values
            self.room = room
            self.start = 0
        end = self.start + length
        self.room[0][:rows, :, end:end + new] = key_states
        self.room[1][:rows, :, end:end + new] = value_states
        self._set_view(rows, self.start, end + new)
        return self.keys, self.values

    def batch_repeat_interleave(self, repeats: int) -> None:
        length = self.get_seq_length()
        if length == 0:
            return
        rows = self.keys.shape[0]
        room = self._new_room((self.keys, self.values), rows * repeats, length)
        for buf, old in zip(room, (self.keys, self.values)):
            buf.view(rows, repeats, *buf.shape[1:])[:, :, :, :length] = old[:, None]
        self.room = room
        self._set_view(rows * repeats, 0, length)

    def batch_select_indices(self, indices) -> None:
        if not self._owned():
            return super().batch_select_indices(indices)
        keep = indices.tolist()
        end = self.start + self.get_seq_length()
        for dst, src, rows in _moves(keep):
            for buf in self.room:
                buf[dst:dst + rows, :, self.start:end].copy_(buf[src:src + rows, :, self.start:end])
        self._set_view(len(keep), self.start, end)

    def trim_front(self, columns: int) -> None:
        if self._owned():
            self._set_view(self.keys.shape[0], self.start + columns, self.start + self.get_seq_length())
        else:
            self.keys, self.values = self.keys[..., columns:, :], self.values[..., columns:, :]

    def reset(self) -> None:
        self.room = self.view = None
        self.start = 0
        super().reset()


def _moves(keep: list[int]) -> list[tuple[int, int, int]]:
    """The block copies (destination row, source row, rows) that compact the rows `keep` (ascending) to the
    front, in an order that is safe in place: kept rows that were neighbours move together, and a block
    is cut into pieces no longer than its shift, so no copy reads rows that it writes. Copying in place
    reads and writes each moved row once; indexing (`buf[keep]`) gathers them into a temporary first,
    and was 2.7x slower on the decode loop's cache (1 CPU thread)."""
    moves, i = [], 0
    while i < len(keep):
        j = i
        while j + 1 < len(keep) and keep[j + 1] == keep[j] + 1:
            j += 1
        shift = keep[i] - i
        if shift:
            for dst in range(i, j + 1, shift):
                moves.append((dst, dst + shift, min(shift, j + 1 - dst)))
        i = j + 1
    return moves


def _room_cache(cache: DynamicCache, capacity: int = 0) -> DynamicCache:
    """`cache` with its plain DynamicLayers replaced by RoomLayers holding `capacity` positions (any other kind
    of layer keeps them all)."""
    if cache.layers and all(type(layer) is DynamicLayer for layer in cache.layers):
        cache.layers = [RoomLayer() for _ in cache.layers]
        for layer in cache.layers:
            layer.capacity = capacity
    return cache


def _trim_padding(cache, mask):
    """Cut the leading cache columns that are padding in every running row; returns the cut mask."""
    pad = int((mask.cumsum(-1) == 0).sum(-1).min())
    if pad == 0 or not all(isinstance(layer, DynamicLayer) and not layer.is_sliding for layer in cache.layers):  # a sliding window keeps its own length
        return mask
    for layer in cache.layers:
        if isinstance(layer, RoomLayer):
            layer.trim_front(pad)
        else:
            layer.keys = layer.keys[..., pad:, :]
            layer.values = layer.values[..., pad:, :]
    return mask[:, pad:]
