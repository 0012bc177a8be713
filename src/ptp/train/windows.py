"""Training windows over packed rows, laid out exactly as the decoding engine lays out auxiliary slots.

A window starts at a row index i (a completion token) and has N slots; slot j predicts the token at row index i + j.
As in decoding (:mod:`ptp.decode.engine`), the slot that predicts document position p has position id p - 1, sees
the document's tokens before the window start (through the teacher's KV cache of the row), and sees the earlier
slots of its own window. Many windows share one teacher pass: the slot block is ``[B, A = W * N]`` and its
attention mask is ``[B, 1, A, L + A]`` (L teacher keys, then the A slot keys).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ptp.data.packing import PackedRows


@dataclass
class Windows:
    """The slot layout of W windows of N slots in each of B rows (A = W * N slots per row)."""

    starts: torch.Tensor
    """int64 ``[B, W]``: row index of each window's first target; -1 where a row has fewer windows."""
    targets: torch.Tensor
    """int64 ``[B, A]``: row index of the token each slot predicts (clamped into the row where invalid)."""
    in_document: torch.Tensor
    """bool ``[B, A]``: the window exists and the slot's target lies in the window's document."""
    positions: torch.Tensor
    """int64 ``[B, A]``: position ids (target position in its document, minus one)."""
    current: torch.Tensor
    """int64 ``[B, A]``: the row's token before each slot's target (for a window's first slot, the last context
    token: what :meth:`ptp.PTPModel.slot_tokens` may give it)."""
    attention: torch.Tensor
    """bool ``[B, 1, A, L + A]``: which teacher keys and which slot keys each slot sees."""
    window_length: int

    @property
    def num_windows(self) -> int:
        return self.starts.shape[1]


def sample_window_starts(rows: PackedRows, windows: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Up to ``windows`` distinct window starts per row, uniform over the completion tokens.

    Returns int64 ``[B, windows]`` in ascending order per row, -1 where a row has fewer completion tokens.
    Draws come from ``generator`` (on the rows' device).
    """
    eligible = rows.targets
    scores = torch.rand(eligible.shape, generator=generator, device=eligible.device)
    scores = torch.where(eligible, scores, -1.0)
    k = min(windows, eligible.shape[1])
    top = scores.topk(k, dim=1)
    starts = torch.where(top.values >= 0, top.indices, -1)
    starts = torch.where(starts >= 0, starts, eligible.shape[1]).sort(dim=1).values
    starts = torch.where(starts < eligible.shape[1], starts, -1)
    if k < windows:
        starts = torch.cat([starts, starts.new_full((starts.shape[0], windows - k), -1)], dim=1)
    return starts


def evaluation_starts(rows: PackedRows, windows: int, seed: int = 0) -> torch.Tensor:
    """Fixed window starts for evaluation: the same windows every time for the same rows and seed."""
    generator = torch.Generator().manual_seed(seed)
    return sample_window_starts(rows.to("cpu"), windows, generator).to(rows.tokens.device)


def layout_windows(rows: PackedRows, starts: torch.Tensor, window_length: int) -> Windows:
    """Slot targets, validity, position ids and the attention mask of the windows at ``starts`` ``[B, W]``."""
    batch, length = rows.tokens.shape
    device = rows.tokens.device
    n = window_length
    exists = starts >= 0
    start = starts.clamp(min=0)
    j = torch.arange(n, device=device)
    target = start.unsqueeze(-1) + j  # [B, W, N]
    clamped = target.clamp(max=length - 1)
    doc = rows.document.gather(1, start)  # [B, W]
    doc_of_target = rows.document.gather(1, clamped.flatten(1)).view_as(target)
    in_document = exists.unsqueeze(-1) & (target < length) & (doc_of_target == doc.unsqueeze(-1))
    positions = (rows.positions.gather(1, start).unsqueeze(-1) + j - 1).clamp(min=0)

    key = torch.arange(length, device=device)
    # A window sees its document's tokens before its start: [B, W, L], the same for all its slots.
    sees_context = (rows.document.unsqueeze(1) == doc.unsqueeze(-1)) & (key.view(1, 1, -1) < start.unsqueeze(-1))
    sees_context = sees_context & exists.unsqueeze(-1)
    windows = starts.shape[1]
    to_context = sees_context.unsqueeze(2).expand(batch, windows, n, length).reshape(batch, windows * n, length)
    slot = torch.arange(windows * n, device=device)
    same_window = (slot.view(-1, 1) // n) == (slot.view(1, -1) // n)
    to_slots = (same_window & (slot.view(-1, 1) >= slot.view(1, -1))).expand(batch, -1, -1)
    attention = torch.cat([to_context, to_slots], dim=2).unsqueeze(1)
    return Windows(
        starts=starts,
        targets=clamped.flatten(1),
        in_document=in_document.flatten(1),
        positions=positions.flatten(1),
        current=rows.tokens.gather(1, (clamped - 1).clamp(min=0).flatten(1)),
        attention=attention,
        window_length=n,
    )


def previous_in_window(values: torch.Tensor, window_length: int, fill: float) -> torch.Tensor:
    """``[B, A]`` -> the value of the slot before each slot in its window (``fill`` for the first slot)."""
    shaped = values.view(values.shape[0], -1, window_length)
    shifted = torch.cat([torch.full_like(shaped[..., :1], fill), shaped[..., :-1]], dim=-1)
    return shifted.reshape(values.shape)


def held_in_window(flags: torch.Tensor, window_length: int) -> torch.Tensor:
    """bool ``[B, A]``: ``flags`` (bool ``[B, A]``) is set on the slot and on every earlier slot of its window."""
    shaped = flags.view(flags.shape[0], -1, window_length)
    return shaped.long().cumprod(dim=-1).bool().reshape(flags.shape)


def first_in_window(shape: tuple[int, int], window_length: int, device) -> torch.Tensor:
    """bool ``[B, A]``: True at the first slot of each window."""
    return (torch.arange(shape[1], device=device) % window_length == 0).expand(shape)
