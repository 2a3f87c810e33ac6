"""A KV cache that grows in place: room reserved ahead, so a forward pass writes into it instead of copying it.

transformers' ``DynamicLayer`` grows by concatenation: every forward pass with a cache copies the
whole of every layer's keys and values to append its few new positions. The packed scorer
(``faithcb.packed``) runs a few passes on top of a long cache (the prefix, then every variant
packed in a row), and its decode steps add one or a few positions per request to thousands
cached: each step copied the whole cache of every row it ran. ``reserve`` swaps each such layer
for one whose keys and values sit at the front of a larger buffer, with room for the positions
still to come (keeping only some batch rows, when asked, in the same copy); each pass then writes
its keys and values into the room and attends over a view of the filled part. The values are the
same, only where they are stored changes, so scores and decoded answers are unchanged.

A layer of any other kind (sliding window, quantized, a cache without ``layers``) is left to its
own growth; only the row selection is applied to it.
"""

from __future__ import annotations

import torch

try:  # transformers >= 4.56 keeps a cache's layers as objects
    from transformers.cache_utils import DynamicLayer
except ImportError:  # pragma: no cover - older transformers: no layers to give room to
    DynamicLayer = None  # type: ignore[assignment, misc]

__all__ = ["RoomyLayer", "decode_room", "reserve"]


def reserve(cache, room: int, rows: torch.Tensor | None = None) -> None:
    """Give every plain layer of ``cache`` room for ``room`` more positions, keeping batch ``rows`` (all if None)."""
    layers = getattr(cache, "layers", None)
    if DynamicLayer is None or layers is None:
        if rows is not None:
            cache.reorder_cache(rows)
        return
    for i, layer in enumerate(layers):
        if isinstance(layer, RoomyLayer) or (type(layer) is DynamicLayer and layer.get_seq_length() > 0):
            layers[i] = RoomyLayer(layer.keys, layer.values, room, rows)
        elif rows is not None:
            layer.reorder_cache(rows)


def decode_room(limits: list[int], rows: list[int], guessed: int = 0) -> int:
    """Positions the packed decode steps can add to every row: request i decodes at most ``limits[i]``
    tokens, in batch row ``rows[i]``, and ``guessed`` tokens in all are fed as guesses that may be wrong.

    A step adds its widest row's tokens to every row. The first step feeds up to a request's whole
    answer so far and its guess (together at most its limit), each later one a token per request
    still decoding, at most ``max(limits) - 1`` of them; and all steps together feed no more than
    every request's limit plus the guesses greedy did not write.
    """
    per_row: dict[int, list[int]] = {}
    for limit, row in zip(limits, rows):
        per_row.setdefault(row, []).append(limit)
    first = max(sum(v) for v in per_row.values())
    later = (max(limits) - 1) * max(len(v) for v in per_row.values())
    return min(sum(limits) + guessed, first + later)


class RoomyLayer(DynamicLayer if DynamicLayer is not None else object):  # type: ignore[misc]
    """A ``DynamicLayer`` whose keys and values are the filled front of a buffer with room to grow."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, room: int, rows: torch.Tensor | None = None):
        super().__init__()
        self._keys = self._buffer(keys, room, rows)
        self._values = self._buffer(values, room, rows)
        self._filled = keys.shape[-2]
        self.device, self.is_initialized = keys.device, True
        self._show()

    @staticmethod
    def _buffer(states: torch.Tensor, room: int, rows: torch.Tensor | None, row_by_row: bool | None = None) -> torch.Tensor:
        batch, heads, length, dim = states.shape
        buffer = states.new_empty((batch if rows is None else len(rows), heads, length + max(0, room), dim))
        if row_by_row is None:
            row_by_row = states.device.type == "cpu"
        if rows is None:
            buffer[:, :, :length] = states
        elif row_by_row:  # on the CPU: one copy, no temporary of the selected rows
            for to, row in enumerate(rows.tolist()):
                buffer[to, :, :length] = states[row]
        else:  # an accelerator: two launches (a temporary) beat one small copy per row and layer
            buffer[:, :, :length] = states.index_select(0, rows.to(states.device))
        return buffer

    def _show(self) -> None:
        self.keys = self._keys[:, :, : self._filled]
        self.values = self._values[:, :, : self._filled]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        start, end = self._filled, self._filled + key_states.shape[-2]
        if end > self._keys.shape[-2]:  # more than was reserved: grow by copying, as DynamicLayer would
            self._keys, self._values = self._buffer(self.keys, end - start, None), self._buffer(self.values, end - start, None)
        self._keys[:, :, start:end] = key_states
        self._values[:, :, start:end] = value_states
        self._filled = end
        self._show()
        return self.keys, self.values

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._keys = self._keys.index_select(0, beam_idx.to(self._keys.device))
        self._values = self._values.index_select(0, beam_idx.to(self._values.device))
        self._show()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.reorder_cache(indices)

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("faithcb's packed cache is never cropped")
