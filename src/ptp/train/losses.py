"""Losses and metrics of PTP training: pure tensor functions, no host synchronisation (docs/method.md, Distillation).

Slot tensors are ``[B, A]`` with A = W * N (W windows of N slots per row); ``weights`` are per-slot loss weights,
zero on slots that do not train. Every loss is the weighted mean over slots.

* O-PTP (and the independent baseline): cross-entropy of the slot's logits against the teacher's token.
* C-PTP: a divergence between the teacher's distribution and the drafter's, both at the temperature of S and before
  top-k / top-p (those act on both alike afterwards, and would make reverse KL infinite): forward KL
  (teacher || drafter) or reverse KL (drafter || teacher). Cross-entropy on the teacher's token is also valid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ptp.model.config import PICK_MODES
from ptp.sampling import SamplingConfig, pick
from ptp.train.teacher import WindowBatch


def position_weights(window_length: int, decay: float, device=None) -> torch.Tensor:
    """``gamma^j`` for slot j = 0..N-1 of a window: float32 ``[N]``."""
    return decay ** torch.arange(window_length, dtype=torch.float32, device=device)


def slot_weights(valid: torch.Tensor, window_length: int, decay: float = 1.0) -> torch.Tensor:
    """Per-slot loss weights ``[B, A]``: gamma^j on valid slots, 0 elsewhere."""
    per_slot = position_weights(window_length, decay, valid.device).repeat(valid.shape[1] // window_length)
    return valid.float() * per_slot


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    # clamp: a batch without a valid slot gives loss 0 (with a gradient of 0), not NaN.
    return (values * weights).sum() / weights.sum().clamp(min=1e-8)


def cross_entropy_loss(logits: torch.Tensor, tokens: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted cross-entropy of logits ``[..., V]`` against tokens ``[...]``."""
    per_slot = F.cross_entropy(logits.flatten(0, -2).float(), tokens.flatten(), reduction="none")
    return _weighted_mean(per_slot.view(tokens.shape), weights)


def forward_kl_loss(
    logits: torch.Tensor, teacher_logits: torch.Tensor, weights: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Weighted KL(teacher || drafter) of ``[..., V]`` logits at ``temperature``."""
    student, teacher = _log_probs(logits, teacher_logits, temperature)
    return _weighted_mean(_kl(teacher, student), weights)


def reverse_kl_loss(
    logits: torch.Tensor, teacher_logits: torch.Tensor, weights: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Weighted KL(drafter || teacher) of ``[..., V]`` logits at ``temperature``."""
    student, teacher = _log_probs(logits, teacher_logits, temperature)
    return _weighted_mean(_kl(student, teacher), weights)


def _log_probs(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float):
    """(drafter, teacher) log-probabilities in float32 at ``temperature``."""
    return tuple(F.log_softmax(x.float() / temperature, dim=-1) for x in (logits, teacher_logits))


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last axis, from log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def next_token_loss(logits: torch.Tensor, tokens: torch.Tensor, document: torch.Tensor) -> torch.Tensor:
    """Plain autoregressive loss on packed rows: position k predicts token k + 1 of the same document.

    Args:
        logits: ``[B, L, V]``; tokens, document: ``[B, L]`` (:class:`ptp.data.PackedRows`).
    """
    return cross_entropy_loss(logits[:, :-1], tokens[:, 1:], next_token_targets(document).float())


def next_token_targets(document: torch.Tensor) -> torch.Tensor:
    """bool ``[B, L - 1]``: position k has a target (token k + 1 belongs to the same document)."""
    return (document[:, 1:] == document[:, :-1]) & (document[:, 1:] >= 0)


def draft_tokens(logits: torch.Tensor, u: torch.Tensor, mode: str, sampling: SamplingConfig) -> torch.Tensor:
    """The token a slot drafts, as the decoder does: C-PTP and the mode chain pick with the slot's own u, the others
    take the argmax."""
    if mode in PICK_MODES:
        return pick(u, logits, sampling)
    return logits.argmax(dim=-1)


def window_metrics(correct: torch.Tensor, valid: torch.Tensor, exists: torch.Tensor, window_length: int) -> dict:
    """Sums over windows, ready to be added up across batches and processes.

    Args:
        correct: bool ``[B, A]`` the slot's draft equals the teacher's token.
        valid: bool ``[B, A]`` the slot has a target (a window cut short by its document's end or an out-of-set
            token counts the missing slots as wrong: its correct prefix stops there).
        exists: bool ``[B, W]`` the window exists.
    Returns:
        ``windows`` (count), ``prefix`` (sum of correct prefixes), ``after_first`` (sum of the leading correct slots
        from the second slot on), ``histogram`` ``[N + 1]`` (windows per correct prefix), ``position_correct`` and
        ``position_count`` ``[N]`` (accuracy per slot over valid slots).
    """
    batch = correct.shape[0]
    n = window_length
    hit = (correct & valid).view(batch, -1, n)
    prefix = hit.long().cumprod(dim=-1).sum(dim=-1)  # [B, W]
    after_first = hit[..., 1:].long().cumprod(dim=-1).sum(dim=-1)
    histogram = torch.zeros(n + 1, dtype=torch.float32, device=correct.device)
    histogram.index_add_(0, prefix[exists], torch.ones_like(prefix[exists], dtype=torch.float32))
    return {
        "windows": exists.float().sum(),
        "prefix": (prefix * exists).float().sum(),
        "after_first": (after_first * exists).float().sum(),
        "histogram": histogram,
        "position_correct": hit.float().sum(dim=(0, 1)),
        "position_count": valid.view(batch, -1, n).float().sum(dim=(0, 1)),
    }


def summarize(sums: dict) -> dict:
    """Plain numbers from summed :func:`window_metrics`: mean correct prefix, normalised histogram, accuracies, and
    ``tokens_per_call``: 1 + the mean run of correct slots from the second slot on. The decoder replaces every
    group's first draft by the teacher's own token (docs/method.md, Partial quadratic decoding), so that run, not the
    correct prefix, is what a call gains; averaged over windows rather than calls it reads above the decoder's tau
    where the drafter is right over long stretches (docs/journal.md, 2026-11-26: the window metric against the
    engine)."""
    windows = float(sums["windows"])
    histogram = (sums["histogram"] / max(windows, 1.0)).tolist()
    accuracy = (sums["position_correct"] / sums["position_count"].clamp(min=1.0)).tolist()
    return {
        "correct_prefix": float(sums["prefix"]) / max(windows, 1.0),
        "tokens_per_call": 1.0 + float(sums["after_first"]) / max(windows, 1.0),
        "histogram": histogram,
        "accuracy": accuracy,
        "windows": int(windows),
    }


def window_loss(
    batch: WindowBatch, objective: str, sampling: SamplingConfig, decay: float, chain: bool = False
) -> torch.Tensor:
    """The training loss of a batch of windows (``objective``: cross_entropy, forward_kl or reverse_kl); ``chain``:
    only slots on their window's mode chain count."""
    weights = slot_weights(batch.valid & batch.on_chain if chain else batch.valid, batch.windows.window_length, decay)
    if objective == "cross_entropy":
        return cross_entropy_loss(batch.logits, batch.tokens, weights)
    temperature = sampling.temperature if sampling.do_sample else 1.0
    divergence = forward_kl_loss if objective == "forward_kl" else reverse_kl_loss
    return divergence(batch.logits, batch.teacher_logits, weights, temperature)


def batch_metrics(batch: WindowBatch, mode: str, sampling: SamplingConfig) -> dict:
    """:func:`window_metrics` of a batch, with drafts made as the decoder makes them."""
    drafts = draft_tokens(batch.logits.detach(), batch.u, mode, sampling)
    exists = batch.windows.starts >= 0
    return window_metrics(drafts == batch.tokens, batch.valid, exists, batch.windows.window_length)


def accumulate(total: dict | None, sums: dict) -> dict:
    """``total + sums`` key by key (detached; ``total`` None: a copy of ``sums``)."""
    if total is None:
        return {k: v.detach().clone() for k, v in sums.items()}
    return {k: total[k] + sums[k].detach() for k in total}
