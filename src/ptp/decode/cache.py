"""The decoder's KV cache: fixed-size buffers written at an offset that the decoder moves.

A step of :mod:`ptp.decode.engine` appends ``[block | slots]`` to the cache, then keeps only the block's accepted
tokens. With a growing cache that means cropping, and every step has a new shape. Here the cache is allocated once
for the whole generation (``capacity`` positions per row) and every forward call writes its keys and values at
``offset``, a device scalar shared by all layers (and by the teacher's and drafter's caches): keeping ``kept`` tokens
is ``offset += kept``, and whatever was written past it is overwritten by the next call. The attention mask decides
which columns a query sees, so stale columns are never read. Shapes and addresses stay fixed from step to step, which
is what lets a whole step be captured once as a CUDA graph and replayed.

The layers subclass ``transformers``' ``StaticLayer`` (buffers allocated on the first write, with the model's dtype,
heads and device); only where they write differs.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, StaticLayer


class OffsetLayer(StaticLayer):
    """One layer's ``[B, heads, capacity, head_dim]`` keys and values, written at the shared ``offset``; attention
    reads the first ``cache.columns`` of them (all when None)."""

    def __init__(self, cache: OffsetCache):
        super().__init__(max_cache_len=cache.capacity)
        self.cache, self.offset = cache, cache.offset

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        columns = self.offset + torch.arange(key_states.shape[-2], device=self.offset.device)
        self.keys.index_copy_(2, columns, key_states.to(self.keys.dtype))
        self.values.index_copy_(2, columns, value_states.to(self.values.dtype))
        if self.cache.columns is None:
            return self.keys, self.values
        return self.keys[:, :, : self.cache.columns], self.values[:, :, : self.cache.columns]


class OffsetCache(Cache):
    """A ``transformers`` cache of :class:`OffsetLayer` (added as the model's layers first write).

    ``columns``: how many leading columns attention reads (None: the whole capacity, the fixed shape a captured step
    needs). An eager step sets it to the columns in use, so that it costs what a growing cache would.
    """

    def __init__(self, capacity: int, offset: torch.Tensor):
        self.capacity, self.offset = capacity, offset
        self.columns: int | None = None
        super().__init__(layer_class_to_replicate=lambda: OffsetLayer(self))

    def reorder(self, order: torch.Tensor) -> None:
        """Move every row's columns to ``order`` (int ``[B, capacity]``: new column i holds old column order[b, i])."""
        for layer in self.layers:
            if not layer.is_initialized:
                continue
            for buffer in (layer.keys, layer.values):
                index = order[:, None, :, None].expand_as(buffer)
                buffer.copy_(buffer.gather(2, index))

    def copy_rows(self, source: OffsetCache, rows: torch.Tensor, places: torch.Tensor, columns: int) -> None:
        """Make the first ``columns`` columns of this cache's rows ``places`` those of ``source``'s rows ``rows`` (int
        tensors of one length), in place where this cache's buffers exist already (a captured graph reads them); a
        cache not written yet is made with ``len(places)`` rows."""
        for index, layer in enumerate(source.layers):
            if index == len(self.layers):
                self.layers.append(OffsetLayer(self))
            mine = self.layers[index]
            keys = layer.keys[:, :, :columns].index_select(0, rows)
            values = layer.values[:, :, :columns].index_select(0, rows)
            if not mine.is_initialized:
                mine.lazy_initialization(keys, values)
            mine.keys[:, :, :columns].index_copy_(0, places, keys)
            mine.values[:, :, :columns].index_copy_(0, places, values)
