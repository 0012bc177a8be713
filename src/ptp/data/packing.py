"""Packing documents into fixed-length rows, with attention isolated per document.

A row holds several documents back to back. Each document restarts its position ids at 0 and sees only itself
(:func:`document_mask`), so the teacher's logits and KV cache for a packed document are those of the document alone.
Padding at the end of a row forms no document (id -1) and attends only to itself, which keeps every attention row
non-empty (an all-masked row would give NaN).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import torch

from ptp.data.dataset import Document


@dataclass
class PackedRows:
    """Documents packed into ``R`` rows of length ``L``."""

    tokens: torch.Tensor
    """int64 ``[R, L]``; 0 on padding."""
    document: torch.Tensor
    """int64 ``[R, L]``: which document of the row a position belongs to (0, 1, ...), -1 on padding."""
    positions: torch.Tensor
    """int64 ``[R, L]``: position id inside its document (0 on padding)."""
    targets: torch.Tensor
    """bool ``[R, L]``: completion tokens, the positions a window may predict."""

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def row_length(self) -> int:
        return self.tokens.shape[1]

    def select(self, index) -> PackedRows:
        """The rows at ``index`` (a list or tensor of row numbers)."""
        index = torch.as_tensor(index, dtype=torch.int64)
        return PackedRows(self.tokens[index], self.document[index], self.positions[index], self.targets[index])

    def to(self, device) -> PackedRows:
        return PackedRows(*(t.to(device) for t in (self.tokens, self.document, self.positions, self.targets)))


def pack_documents(documents: list[Document], row_length: int) -> tuple[PackedRows, dict]:
    """Pack documents into rows of ``row_length`` tokens (best fit, longest first; deterministic).

    A document longer than a row is cut at the row length (its prompt and the start of its completion are kept);
    one whose prompt leaves no completion token in a row is dropped.

    Returns:
        the rows and counts ``{"documents", "truncated", "dropped", "rows", "fill"}`` (fill: the fraction of
        positions holding tokens).
    """
    if row_length < 2:
        raise ValueError(f"row length must be >= 2, got {row_length}")
    usable = [d for d in documents if d.prompt_length < min(len(d.tokens), row_length)]
    dropped = len(documents) - len(usable)
    truncated = sum(len(d.tokens) > row_length for d in usable)
    lengths = [min(len(d.tokens), row_length) for d in usable]
    order = sorted(range(len(usable)), key=lambda i: -lengths[i])
    rows: list[list[int]] = []
    # Open rows by remaining room: capacities sorted, with the rows that have each capacity.
    capacities: list[int] = []
    open_rows: dict[int, list[int]] = {}
    for i in order:
        spot = bisect.bisect_left(capacities, lengths[i])
        if spot < len(capacities):
            room = capacities[spot]
            row = open_rows[room].pop()
            if not open_rows[room]:
                del open_rows[room]
                capacities.pop(spot)
        else:
            room, row = row_length, len(rows)
            rows.append([])
        rows[row].append(i)
        left = room - lengths[i]
        if left > 0:
            if left not in open_rows:
                bisect.insort(capacities, left)
                open_rows[left] = []
            open_rows[left].append(row)

    count = len(rows)
    tokens = torch.zeros(count, row_length, dtype=torch.int64)
    document = torch.full((count, row_length), -1, dtype=torch.int64)
    positions = torch.zeros(count, row_length, dtype=torch.int64)
    targets = torch.zeros(count, row_length, dtype=torch.bool)
    for r, members in enumerate(rows):
        cursor = 0
        for slot, i in enumerate(members):
            n = lengths[i]
            tokens[r, cursor : cursor + n] = usable[i].tokens[:n]
            document[r, cursor : cursor + n] = slot
            positions[r, cursor : cursor + n] = torch.arange(n)
            targets[r, cursor + usable[i].prompt_length : cursor + n] = True
            cursor += n
    fill = sum(lengths) / max(count * row_length, 1)
    stats = {"documents": len(usable), "truncated": truncated, "dropped": dropped, "rows": count, "fill": fill}
    return PackedRows(tokens, document, positions, targets), stats


def split_by_prompt(
    documents: list[Document], eval_fraction: float, seed: int = 0
) -> tuple[list[Document], list[Document]]:
    """A held-out split by prompt: all completions of one prompt land on the same side.

    At least one prompt is held out when ``eval_fraction > 0`` and there are two prompts or more.
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction!r}")
    prompts = sorted({d.prompt_index for d in documents})
    if eval_fraction == 0.0 or len(prompts) < 2:
        return list(documents), []
    count = min(len(prompts) - 1, max(1, round(eval_fraction * len(prompts))))
    order = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(seed)).tolist()
    held_out = {prompts[i] for i in order[:count]}
    train = [d for d in documents if d.prompt_index not in held_out]
    evaluation = [d for d in documents if d.prompt_index in held_out]
    return train, evaluation


def document_mask(document: torch.Tensor) -> torch.Tensor:
    """Causal attention within each document of packed rows: bool ``[B, 1, L, L]``, True where query q sees key k.

    ``document``: int ``[B, L]`` from :class:`PackedRows` (-1 on padding, which sees only itself).
    """
    length = document.shape[1]
    index = torch.arange(length, device=document.device)
    causal = index.view(-1, 1) >= index.view(1, -1)
    same = (document.unsqueeze(2) == document.unsqueeze(1)) & (document.unsqueeze(2) >= 0)
    return ((same & causal) | torch.eye(length, dtype=torch.bool, device=document.device)).unsqueeze(1)
