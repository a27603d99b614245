"""The decode loop's KV cache: `RoomLayer`, a transformers DynamicLayer that writes each step into one
preallocated buffer and drops finished rows by moving few of them in place (`fill_holes`, `_moves`), and the
helpers that put it in a DynamicCache (`room_cache`) and cut padding columns every running row has
(`trim_padding`)."""

from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

# Positions a cache layer grows by when its buffer is full (decode sizes the buffer to need none).
CACHE_ROOM = 64


class RoomLayer(DynamicLayer):
    """A DynamicLayer that keeps its keys and values in one preallocated buffer and hands out views of it,
    instead of concatenating each step onto a fresh copy of the whole cache (`DynamicLayer.update`).

    - `update` writes the step's keys and values into the room after the filled part;
    - `batch_repeat_interleave` writes the `n` copies straight into a new buffer (one copy);
    - `batch_select_indices` moves the kept rows in place by block copies (`_moves`): for decode's order
      (`fill_holes`) only the rows that fill dropped ones' places move;
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
        self.room[0][:rows, :, end : end + new] = key_states
        self.room[1][:rows, :, end : end + new] = value_states
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
        order = indices.tolist()
        end = self.start + self.get_seq_length()
        moves = _moves(order)
        for buf in self.room:
            if moves is None:  # an order that block copies in place cannot make: gather
                buf[: len(order), :, self.start : end] = buf[indices, :, self.start : end]
                continue
            for dst, src, rows in moves:
                buf[dst : dst + rows, :, self.start : end].copy_(buf[src : src + rows, :, self.start : end])
        self._set_view(len(order), self.start, end)

    def trim_front(self, columns: int) -> None:
        if self._owned():
            self._set_view(self.keys.shape[0], self.start + columns, self.start + self.get_seq_length())
        else:
            self.keys, self.values = self.keys[..., columns:, :], self.values[..., columns:, :]

    def reset(self) -> None:
        self.room = self.view = None
        self.start = 0
        super().reset()


def _moves(order: list[int]) -> list[tuple[int, int, int]] | None:
    """The block copies (destination row, source row, rows) that leave row i holding old row `order[i]`, in
    an order that is safe in place (no copy reads rows an earlier or the same copy wrote), for the two orders
    decode makes:

    - ascending rows (the kept ones, compacted to the front): kept rows that were neighbours move together,
      and a block is cut into pieces no longer than its shift;
    - `fill_holes` orders: every row either stays or comes from past the new end.

    None for any other order. Copying in place reads and writes each moved row once; indexing (`buf[order]`)
    gathers every row into a temporary first (docs/benchmarks.md compares the two)."""
    moves, i = [], 0
    if all(a < b for a, b in zip(order, order[1:])):
        while i < len(order):
            j = i
            while j + 1 < len(order) and order[j + 1] == order[j] + 1:
                j += 1
            shift = order[i] - i
            if shift:
                for dst in range(i, j + 1, shift):
                    moves.append((dst, dst + shift, min(shift, j + 1 - dst)))
            i = j + 1
        return moves
    if any(row != i and row < len(order) for i, row in enumerate(order)):
        return None
    while i < len(order):
        j = i
        if order[i] != i:
            while j + 1 < len(order) and order[j + 1] == order[j] + 1 and order[j + 1] != j + 1:
                j += 1
            moves.append((i, order[i], j + 1 - i))
        i = j + 1
    return moves


def fill_holes(keep: list[int]) -> list[int]:
    """The kept rows `keep` (ascending) in the order that moves the fewest: each kept row before position
    `len(keep)` stays where it is, and those past it fill, in turn, the places of the dropped ones. Moving the
    rows behind the first dropped one each up instead copies most of the cache each time a row finishes."""
    size = len(keep)
    staying = {row for row in keep if row < size}
    movers = iter(row for row in keep if row >= size)
    return [row if row in staying else next(movers) for row in range(size)]


def room_cache(cache: DynamicCache, capacity: int = 0) -> DynamicCache:
    """`cache` with its plain DynamicLayers replaced by RoomLayers holding `capacity` positions (any other kind
    of layer keeps them all)."""
    if cache.layers and all(type(layer) is DynamicLayer for layer in cache.layers):
        cache.layers = [RoomLayer() for _ in cache.layers]
        for layer in cache.layers:
            layer.capacity = capacity
    return cache


def trim_padding(cache, mask):
    """Cut the leading cache columns that are padding in every running row; returns the cut mask."""
    pad = int((mask.cumsum(-1) == 0).sum(-1).min())
    if pad == 0 or not all(
        isinstance(layer, DynamicLayer) and not layer.is_sliding for layer in cache.layers
    ):  # a sliding window keeps its own length
        return mask
    for layer in cache.layers:
        if isinstance(layer, RoomLayer):
            layer.trim_front(pad)
        else:
            layer.keys = layer.keys[..., pad:, :]
            layer.values = layer.values[..., pad:, :]
    return mask[:, pad:]
