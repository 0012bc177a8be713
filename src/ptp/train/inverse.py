"""Training C-PTP without a teacher: inverse autoregressive training (docs/method.md, Inverse training).

For a window of data tokens t_i..t_{i+N-1} the u's are recovered one after another from the model's *own* C-PTP
distributions: slot k (input u_{k-1}, nothing for k = 0) gives P_k, and u_k is drawn uniformly inside the bin of the
data token t_{i+k} under P_k. Slot k depends only on the context and slots 0..k, so the recovery runs one slot per
window at a time on an incremental cache (context keys, then the keys of the slots already run), N small passes in
all; the u's are constants. Then one ordinary slot pass, laid out as in distillation (:mod:`ptp.train.windows`),
trains the C-PTP predictions by cross-entropy on the data tokens, next to the next-token loss of the context pass.

The same incremental chain, with given u's, is the model's sequential C-PTP sampling; one slot pass is its parallel
sampling, and the two agree token for token (the tests check it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from ptp.data.packing import PackedRows, document_mask
from ptp.model.embeddings import NULL_AUXILIARY
from ptp.model.ptp import teacher_logits
from ptp.sampling import SamplingConfig, bins, pick, sample_in_bins
from ptp.train.losses import cross_entropy_loss, next_token_loss
from ptp.train.teacher import slot_logits
from ptp.train.windows import Windows, layout_windows, sample_window_starts

#: Text is modelled at T = 1 with nothing cut off: every token has a non-empty bin.
TEXT_SAMPLING = SamplingConfig(temperature=1.0)


@dataclass
class InverseBatch:
    """The outputs of one inverse-autoregressive step on a batch of rows (A = W * N slots per row)."""

    loss: torch.Tensor
    """Scalar: slot cross-entropy + ``next_token_weight`` * next-token loss."""
    slot_loss: torch.Tensor
    """Scalar: cross-entropy of the C-PTP predictions on the data tokens (valid slots)."""
    next_token_loss: torch.Tensor
    """Scalar: the ordinary next-token loss of the context pass."""
    logits: torch.Tensor
    """``[B, A, V]`` slot logits with the recovered u's."""
    tokens: torch.Tensor
    """int64 ``[B, A]``: the data token of each slot."""
    u: torch.Tensor
    """float32 ``[B, A]``: the recovered u's (:data:`NULL_AUXILIARY` where not valid)."""
    valid: torch.Tensor
    """bool ``[B, A]``: the slot has a data token with a non-empty bin (and so have the earlier slots of its window)."""
    windows: Windows


def context_pass(model, rows: PackedRows) -> tuple[torch.Tensor, DynamicCache]:
    """The model's own base over the rows (adapter off): next-token logits ``[B, L, V]`` and the cache."""
    cache = DynamicCache()
    logits = model(rows.tokens, position_ids=rows.positions, attention_mask=document_mask(rows.document),
                   past_key_values=cache)  # fmt: skip
    return logits, cache


@torch.no_grad()
def chain(
    model, windows: Windows, cache: DynamicCache, next_u: Callable[[int, torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Run the slots of all windows one position at a time; ``cache`` (the context's) grows by the slots.

    Step k runs slot k of every window (``[B, W]`` queries) with input u_{k-1}; ``next_u(k, logits)`` turns its
    logits ``[B, W, V]`` into u_k ``[B, W]``. Returns ``[B, A]`` the u's, in the slot order of ``windows``.
    """
    n, width = windows.window_length, windows.num_windows
    batch, context = windows.attention.shape[0], windows.attention.shape[-1] - windows.targets.shape[1]
    device = windows.targets.device
    owner = torch.arange(width, device=device)
    previous = torch.full((batch, width), NULL_AUXILIARY, device=device)
    chosen = []
    for k in range(n):
        # Keys so far: the context, then the slots of steps 0..k step by step; a slot sees its window's own slots.
        sees_context = windows.attention[:, :, k::n, :context]
        sees_slots = (owner.repeat(k + 1).view(1, 1, 1, -1) == owner.view(1, 1, -1, 1)).expand(batch, 1, -1, -1)
        inputs = model.slot_auxiliaries(previous, previous, torch.full_like(previous, k == 0, dtype=torch.bool))
        logits = model(
            torch.zeros(batch, width, dtype=torch.int64, device=device),
            position_ids=windows.positions[:, k::n],
            attention_mask=torch.cat([sees_context, sees_slots], dim=-1),
            auxiliaries=inputs,
            slots_from=0,
            past_key_values=cache,
        )
        previous = next_u(k, logits)
        chosen.append(previous)
    return torch.stack(chosen, dim=-1).flatten(1)


def recover_auxiliaries(
    model, rows: PackedRows, windows: Windows, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The u's under which the model's own C-PTP sampling yields the data tokens of each window.

    Returns ``u`` float32 ``[B, A]`` (uniform inside the data token's bin, :data:`NULL_AUXILIARY` where not valid)
    and ``valid`` bool ``[B, A]``. Runs without gradient on a fresh context cache.
    """
    n = windows.window_length
    tokens = rows.tokens.gather(1, windows.targets)
    in_document = windows.in_document
    alive = [in_document[:, 0::n]]

    def next_u(k: int, logits: torch.Tensor) -> torch.Tensor:
        left, right = bins(logits, tokens[:, k::n], TEXT_SAMPLING)
        ok = in_document[:, k::n] & (right > left) & (alive[-1] if k else True)
        alive.append(ok)
        u = sample_in_bins(torch.where(ok, left, 0.0), torch.where(ok, right, 1.0), 1.0, generator)
        return torch.where(ok, u, NULL_AUXILIARY)

    with torch.no_grad():
        cache = context_pass(model, rows)[1]
    u = chain(model, windows, cache, next_u)
    valid = torch.stack(alive[1:], dim=-1).flatten(1)
    return u, valid


def inverse_batch(
    model,
    rows: PackedRows,
    starts: torch.Tensor,
    *,
    next_token_weight: float = 1.0,
    generator: torch.Generator | None = None,
    forward=None,
) -> InverseBatch:
    """One training step's forward: recovery, then the context pass and one slot pass, both with gradient.

    ``forward``: the module that runs the slot pass (the model's DDP wrapper under several processes; default: the
    model). The context pass runs on the model itself: its gradient reaches the parameters in the same backward as
    the slot pass's, summed before DDP's per-parameter hooks fire and average it.
    """
    windows = layout_windows(rows, starts, model.config.window_length)
    u, valid = recover_auxiliaries(model, rows, windows, generator)
    logits_context, cache = context_pass(model, rows)
    logits = slot_logits(model, windows, u, cache, forward)
    tokens = rows.tokens.gather(1, windows.targets)
    slot_loss = cross_entropy_loss(logits, tokens, valid.float())
    ar_loss = next_token_loss(logits_context, rows.tokens, rows.document)
    return InverseBatch(slot_loss + next_token_weight * ar_loss, slot_loss, ar_loss, logits, tokens, u, valid, windows)


def window_starts(rows: PackedRows, windows: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Window starts over text rows: any token but a document's first (slot 0 predicts it from some context)."""
    eligible = rows.targets & (rows.positions > 0)
    return sample_window_starts(PackedRows(rows.tokens, rows.document, rows.positions, eligible), windows, generator)


@torch.no_grad()
def parallel_sample(model, rows: PackedRows, starts: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """C-PTP sampling in one pass: the tokens ``[B, A]`` the slots of the windows at ``starts`` pick with ``u``."""
    windows = layout_windows(rows, starts, model.config.window_length)
    logits = slot_logits(model, windows, u, context_pass(model, rows)[1])
    return pick(u, logits, TEXT_SAMPLING)


@torch.no_grad()
def sequential_sample(model, rows: PackedRows, starts: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """C-PTP sampling one position at a time (the chain of the recovery): tokens ``[B, A]``."""
    windows = layout_windows(rows, starts, model.config.window_length)
    n = windows.window_length
    tokens = []

    def next_u(k: int, logits: torch.Tensor) -> torch.Tensor:
        tokens.append(pick(u[:, k::n], logits, TEXT_SAMPLING))
        return u[:, k::n]

    chain(model, windows, context_pass(model, rows)[1], next_u)
    return torch.stack(tokens, dim=-1).flatten(1)


@torch.no_grad()
def evaluate_text(
    model,
    rows: PackedRows,
    *,
    teacher=None,
    windows_per_row: int = 16,
    batch_size: int = 8,
    seed: int = 0,
) -> dict:
    """Held-out text: how well a ``ptp``-trained model predicts, and how far its parallel samples follow a teacher.

    Returns ``perplexity_by_position`` (``[N]``: exp of the mean cross-entropy of the C-PTP prediction for window
    position k on the data token, with the u's recovered from the data as in training), ``perplexity`` (of all slots),
    ``next_token_perplexity`` (the model's own next-token head), ``windows``; with ``teacher`` (an ``ar`` model with
    the same tokenizer) also ``teacher_perplexity`` (its next-token perplexity on the same rows) and
    ``teacher_agreement``: the mean number of leading tokens where the model's parallel sample of a window (uniform
    u's, one pass) equals the teacher's plain sampling from the same context with the same u's.
    """
    from ptp.decode.reference import sample_autoregressive

    n = model.config.window_length
    device = model.device
    slot_sum, slot_count = torch.zeros(n, device=device), torch.zeros(n, device=device)
    token_sum, token_count, teacher_sum, agree_sum, windows_seen = (0.0,) * 5
    for number, first in enumerate(range(0, len(rows), batch_size)):
        batch = rows.select(list(range(first, min(first + batch_size, len(rows))))).to(device)
        generator = torch.Generator(device).manual_seed(seed * 31 + number)
        starts = window_starts(batch, windows_per_row, generator)
        windows = layout_windows(batch, starts, n)
        u, valid = recover_auxiliaries(model, batch, windows, generator)
        logits_context, cache = context_pass(model, batch)
        logits = slot_logits(model, windows, u, cache)
        tokens = batch.tokens.gather(1, windows.targets)
        ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), tokens.flatten(), reduction="none")
        slot_sum += (ce.view(tokens.shape) * valid).view(len(batch), -1, n).sum(dim=(0, 1))
        slot_count += valid.view(len(batch), -1, n).sum(dim=(0, 1))
        pairs = float(((batch.document[:, 1:] == batch.document[:, :-1]) & (batch.document[:, 1:] >= 0)).sum())
        token_sum += float(next_token_loss(logits_context, batch.tokens, batch.document)) * pairs
        token_count += pairs
        if teacher is None:
            continue
        mask = document_mask(batch.document)
        logits_teacher = teacher_logits(teacher, batch.tokens, position_ids=batch.positions, attention_mask=mask)
        teacher_sum += float(next_token_loss(logits_teacher, batch.tokens, batch.document)) * pairs
        fresh = torch.rand(u.shape, generator=generator, device=device)
        parallel = parallel_sample(model, batch, starts, fresh).view(len(batch), -1, n)
        # The teacher samples every window from its context, all windows of the batch as one left-padded batch.
        where = (starts >= 0).nonzero().tolist()
        width = int(starts.max())
        contexts = torch.zeros(len(where), width, dtype=torch.int64, device=device)
        present = torch.zeros_like(contexts)
        for i, (b, w) in enumerate(where):
            start = int(starts[b, w])
            contexts[i, width - start :] = batch.tokens[b, :start]
            present[i, width - start :] = 1
        rows_u = torch.stack([fresh.view(len(batch), -1, n)[b, w] for b, w in where])
        sampled = sample_autoregressive(teacher, contexts, present, auxiliaries=rows_u, max_new_tokens=n,
                                        eos_token_id=[])  # fmt: skip
        ours = torch.stack([parallel[b, w] for b, w in where])
        agree_sum += float((sampled.new_tokens == ours).long().cumprod(dim=1).sum())
        windows_seen += len(where)
    per_position = (slot_sum / slot_count.clamp(min=1)).exp().tolist()
    result = {
        "perplexity_by_position": per_position,
        "perplexity": float((slot_sum.sum() / slot_count.sum().clamp(min=1)).exp()),
        "next_token_perplexity": float(torch.tensor(token_sum / max(token_count, 1.0)).exp()),
        "windows": int(slot_count[0]),
    }
    if teacher is not None:
        result["teacher_perplexity"] = float(torch.tensor(teacher_sum / max(token_count, 1.0)).exp())
        result["teacher_agreement"] = agree_sum / max(windows_seen, 1.0)
    return result
