"""One teacher pass per batch, then the auxiliary slots of all its windows in a second pass (docs/method.md,
Distillation).

1. The packed rows run through the frozen base with the adapter off (no gradient). This gives the KV cache the
   slots attend to and, for every token that a slot predicts, its bin ``[F(t-1), F(t))`` under the data's sampling
   configuration S, computed by :func:`ptp.sampling.bins` (the project's one implementation of S).
2. Each slot gets an auxiliary u inside the bin of the token it predicts (Beta(beta, beta) within the bin;
   beta = 1 for evaluation), mapped to the slot's input by :meth:`ptp.PTPModel.slot_auxiliaries`, the same mapping
   the decoder uses.
3. One pass over all slots, with the teacher cache as context, gives the drafter's logits.

With a separate drafter (docs/method.md, Architecture) the teacher is another, frozen model: its pass gives the bins
only, and the drafter runs the rows itself first (adapter off) to build the cache its slots attend to; that context
pass keeps its gradient when the drafter's base weights train.

A target with an empty bin (a token outside the kept set of S, possible for raw text or data from another model)
ends its window: that slot and the later slots of the window do not train, since no u can select it. With
``out_of_set="error"`` it raises instead.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from ptp.data.packing import PackedRows, document_mask
from ptp.model.embeddings import NULL_AUXILIARY
from ptp.model.ptp import PTPModel, teacher_logits
from ptp.sampling import SamplingConfig, bins, sample_in_bins
from ptp.train.windows import Windows, first_in_window, held_in_window, layout_windows, previous_in_window

#: Elements of one chunk of the ``[positions, V]`` work in the bin computation (bounds its memory).
BIN_CHUNK_ELEMENTS = 1 << 26


@dataclass
class TeacherPass:
    """The teacher's view of a batch of packed rows."""

    logits: torch.Tensor
    """``[B, T, V]``: the logits that give each target's distribution (those at the row index before it; at index 0
    for a target at 0)."""
    cache: DynamicCache | None
    """The rows' KV cache (the context of every slot); None when not kept."""
    left: torch.Tensor
    """float32 ``[B, T]``: left edge of the bin under S of the token at each of the pass's targets (row indices; 0
    at index 0)."""
    right: torch.Tensor
    """float32 ``[B, T]``: right edge (equal to ``left`` where the token is outside the kept set, and at index 0)."""


@dataclass
class WindowBatch:
    """Everything a loss or a metric needs about the slots of one batch (A slots per row)."""

    logits: torch.Tensor
    """``[B, A, V]`` drafter logits of the slots."""
    tokens: torch.Tensor
    """int64 ``[B, A]``: the teacher's token at each slot's target."""
    valid: torch.Tensor
    """bool ``[B, A]``: the slot trains (in its document, and no out-of-set target at or before it)."""
    u: torch.Tensor
    """float32 ``[B, A]``: each slot's target auxiliary (inside the target's bin where valid)."""
    windows: Windows
    teacher_logits: torch.Tensor | None
    """``[B, A, V]`` the teacher's logits for each slot's target (only when requested: C-PTP divergences)."""
    out_of_set: torch.Tensor
    """int64 scalar: in-document targets whose bin is empty under S."""
    on_chain: torch.Tensor | None
    """bool ``[B, A]``: every earlier slot of the slot's window has the teacher's mode (the argmax of its logits)
    as its token, so the slot's target follows the greedy chain that a mode-chain drafter assumes (only when
    requested: the chain loss)."""


@torch.no_grad()
def teacher_pass(
    model, rows: PackedRows, sampling: SamplingConfig, targets: torch.Tensor, keep_cache: bool = True
) -> TeacherPass:
    """The frozen base over packed rows (documents isolated), and the bins under ``sampling`` of the tokens at
    ``targets`` (int ``[B, T]`` row indices, e.g. the slots' targets: only those are computed).

    ``model``: a :class:`ptp.PTPModel` (its base) or a plain causal LM (the teacher of a separate drafter, whose
    cache nobody attends to: ``keep_cache=False``).
    """
    cache = DynamicCache() if keep_cache else None
    # A teacher in float32 computes in float32 (float32_bins), also inside a 16-bit run's autocast; a drafter's base
    # keeps the run's precision (its adapter's own parameters are float32 either way).
    base = model.base_model if isinstance(model, PTPModel) else model
    precise = base.get_input_embeddings().weight.dtype == torch.float32
    with torch.autocast(rows.tokens.device.type, enabled=False) if precise else contextlib.nullcontext():
        # The logits at index k - 1 give the bin of the token at k: the head runs at those positions alone.
        logits = teacher_logits(
            model, rows.tokens, position_ids=rows.positions, attention_mask=document_mask(rows.document),
            past_key_values=cache, at=(targets - 1).clamp(min=0),
        )  # fmt: skip
    vocab = logits.shape[-1]
    flat_logits, flat_tokens = logits.reshape(-1, vocab), rows.tokens.gather(1, targets).reshape(-1)
    step = max(1, BIN_CHUNK_ELEMENTS // vocab)
    edges = [
        bins(flat_logits[i : i + step], flat_tokens[i : i + step], sampling) for i in range(0, len(flat_tokens), step)
    ]
    first = targets > 0
    left = torch.where(first, torch.cat([e[0] for e in edges]).view(targets.shape), 0.0)
    right = torch.where(first, torch.cat([e[1] for e in edges]).view(targets.shape), 0.0)
    return TeacherPass(logits, cache, left, right)


def window_auxiliaries(
    teacher: TeacherPass,
    windows: Windows,
    *,
    beta: float = 1.0,
    generator: torch.Generator | None = None,
    out_of_set: str = "stop",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Auxiliaries of the slots, sampled inside their targets' bins (``teacher``: the pass made for
    ``windows.targets``).

    Returns:
        ``u`` float32 ``[B, A]`` (:data:`NULL_AUXILIARY` on slots that do not train), ``valid`` bool ``[B, A]``, and
        the number of in-document targets outside the kept set (int64 scalar).
    """
    left, right = teacher.left, teacher.right
    in_document = windows.in_document
    empty = in_document & ~(right > left)
    if out_of_set == "error" and bool(empty.any()):
        raise ValueError(
            f"{int(empty.sum())} target token(s) lie outside the kept set of the sampling configuration (empty bins); "
            "the data were not sampled with it. Use out_of_set='stop' or a wider sampling configuration."
        )
    kept = held_in_window(in_document & ~empty, windows.window_length)
    u = sample_in_bins(torch.where(kept, left, 0.0), torch.where(kept, right, 1.0), beta, generator)
    return torch.where(kept, u, NULL_AUXILIARY), kept, empty.sum()


def context_cache(model, rows: PackedRows) -> DynamicCache:
    """A separate drafter's own pass over the rows (adapter off): the cache its slots attend to.

    The pass keeps its gradient when the drafter's base weights train (``model.config.train_base``). It runs on the
    unwrapped model even under DDP: its gradient reaches the parameters in the same backward as the slot pass's
    (which goes through the DDP wrapper), summed before DDP's per-parameter hooks fire and average it.
    """
    cache = DynamicCache()
    with torch.set_grad_enabled(torch.is_grad_enabled() and model.config.train_base):
        model(rows.tokens, position_ids=rows.positions, attention_mask=document_mask(rows.document),
              past_key_values=cache, logits_to_keep=1)  # fmt: skip
    return cache


def slot_logits(model, windows: Windows, u: torch.Tensor, cache: DynamicCache, forward=None) -> torch.Tensor:
    """The drafter's logits ``[B, A, V]`` for slots with target auxiliaries ``u`` ``[B, A]``.

    ``model`` is the :class:`ptp.PTPModel`; ``forward`` the module to call (e.g. its DDP wrapper; default: model).
    The slots' keys are appended to ``cache``.
    """
    n = windows.window_length
    first = first_in_window(tuple(u.shape), n, u.device)
    inputs = model.slot_auxiliaries(u, previous_in_window(u, n, NULL_AUXILIARY), first)
    return (model if forward is None else forward)(
        model.slot_tokens(windows.current, first),
        position_ids=windows.positions,
        attention_mask=windows.attention,
        auxiliaries=inputs,
        slots_from=0,
        past_key_values=cache,
    )


def run_windows(
    model,
    rows: PackedRows,
    starts: torch.Tensor,
    sampling: SamplingConfig,
    *,
    beta: float = 1.0,
    generator: torch.Generator | None = None,
    out_of_set: str = "stop",
    teacher_targets: bool = False,
    chain: bool = False,
    forward=None,
    teacher=None,
) -> WindowBatch:
    """Teacher pass, auxiliaries and slot pass for windows starting at ``starts`` ``[B, W]``.

    Args:
        model: the :class:`ptp.PTPModel` that drafts; ``forward``: the module that runs its passes (default: model).
        teacher_targets: also return the teacher's logits at each slot's target (for the C-PTP divergences).
        chain: also return which slots follow their window's mode chain (for the chain loss).
        teacher: a separate frozen teacher (any causal LM with the drafter's vocabulary); None: the model's base.
    """
    windows = layout_windows(rows, starts, model.config.window_length)
    bins_of = teacher_pass(model if teacher is None else teacher, rows, sampling, windows.targets, teacher is None)
    cache = bins_of.cache if teacher is None else context_cache(model, rows)
    u, valid, empty = window_auxiliaries(bins_of, windows, beta=beta, generator=generator, out_of_set=out_of_set)
    logits = slot_logits(model, windows, u, cache, forward)
    targets = bins_of.logits if teacher_targets else None
    tokens = rows.tokens.gather(1, windows.targets)
    on_chain = None
    if chain:
        modes = bins_of.logits.argmax(dim=-1)
        is_mode = previous_in_window(tokens == modes, windows.window_length, True)
        on_chain = held_in_window(is_mode, windows.window_length)
    return WindowBatch(logits, tokens, valid, u, windows, targets, empty, on_chain)
