"""Splitting a fixed number of auxiliary slots per call across acceptance hypotheses.

A call verifies the pending drafts x_1..x_{P-1} and, in the same pass, proposes continuations for every hypothesis
"exactly d drafts will be accepted" (group d hangs after x_d). Only one group will be live. With the drafter's
confidences c_j that x_j is right,

    P(exactly d accepted) = c_1 ... c_d (1 - c_{d+1}),   with c_P = 0,

and the l-th slot of group d is worth ``P(d) * S(l)``, where S(l) is the chance that a live group has at least l of
its drafts accepted (from the acceptance histogram measured in training). The budget goes to the slots of highest
worth; since S decreases, every group gets a prefix. Everything is batched per row and stays on the device.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from ptp.decode.cost import CallCost


def slot_budget(
    window_length: int,
    device,
    auxiliary_budget: int | None = None,
    max_draft_length: int | None = None,
    *,
    histogram: list[float] | None = None,
    call_cost: Callable[[int], float] | None = None,
) -> tuple[int, int]:
    """The engine's ``(auxiliary_budget, max_draft_length)``: the caller's where given, else the device's default.

    On a GPU (any device but the CPU) a call's extra slots cost little next to its fixed cost (weights read once,
    kernels launched once), so the default is generous: twice the window length N in slots, groups up to N long. On
    a CPU every position costs compute, so the default is the one of most tokens per second (:func:`fastest_budget`):
    ``call_cost`` gives the seconds of a call by its positions (:func:`ptp.decode.cost.call_cost` measures it) and
    the drafter's acceptance ``histogram`` what its slots are worth. A caller who gives only the budget gets groups up
    to N long.
    """
    if torch.device(device).type == "cpu" and auxiliary_budget is None:
        if call_cost is None:
            raise ValueError("the default slot budget on a CPU needs the call's cost (call_cost)")
        return fastest_budget(histogram, call_cost, window_length, max_draft_length)
    budget = 2 * window_length if auxiliary_budget is None else auxiliary_budget
    draft = window_length if max_draft_length is None else max_draft_length
    return budget, draft


def fastest_budget(
    histogram: list[float] | None,
    call_cost: Callable[[int], float],
    window_length: int,
    max_draft_length: int | None = None,
) -> tuple[int, int]:
    """The ``(slots, longest group)`` of most expected tokens per second: :func:`expected_commits` over
    ``call_cost(pending + slots)``, for groups up to the window length (or ``max_draft_length`` exactly) and up to
    twice the window length in slots. A measured :class:`ptp.decode.cost.CallCost` restricts the search to the call
    sizes it measured (where one of them fits): between two sizes a call may cost more than at either. The search is
    remembered (a few hundred small allocations, about 20 ms for a window of 16), since every call of ``generate`` on
    a CPU asks for it with the same arguments."""
    return _fastest_budget(None if histogram is None else tuple(histogram), call_cost, window_length, max_draft_length)


@functools.lru_cache(maxsize=64)
def _fastest_budget(histogram, call_cost, window_length: int, max_draft_length: int | None) -> tuple[int, int]:
    drafts = range(1, window_length + 1) if max_draft_length is None else (max_draft_length,)
    sizes = call_cost.sizes if isinstance(call_cost, CallCost) else None
    shapes = [(budget, draft) for draft in drafts for budget in range(1, min(draft * draft, 2 * window_length) + 1)]
    if sizes is not None and any(draft + budget in sizes for budget, draft in shapes):
        shapes = [(budget, draft) for budget, draft in shapes if draft + budget in sizes]
    best, choice = -1.0, shapes[0]
    curves = {draft: survival(histogram, draft) for draft in dict.fromkeys(draft for _, draft in shapes)}
    for budget, draft in shapes:
        rate = expected_commits(curves[draft], budget) / call_cost(draft + budget)
        if rate > best:
            best, choice = rate, (budget, draft)
    return choice


def expected_commits(survival_curve: torch.Tensor, budget: int) -> float:
    """Tokens a call commits on average when ``budget`` slots are split (:func:`allocate`) over the groups of a
    pending block as long as ``survival_curve``.

    A stationary estimate: the pending drafts were the live group of the last call, d of them are accepted with
    probability S(d) - S(d + 1) (the last: S(P - 1)), and a live group of length g leaves g - 1 drafts, of which the
    next call commits S(1) + ... + S(g - 1) on average besides the teacher's own token.
    """
    s = survival_curve.double().cpu()
    weights = s - torch.cat([s[1:], s.new_zeros(1)])
    lengths = allocate(weights.float().unsqueeze(0), s.float(), budget)[0]
    extra = torch.cat([s.new_zeros(2), s[1:].cumsum(0)])  # extra[g] = S(1) + ... + S(g - 1)
    return float((weights * (1.0 + extra[lengths])).sum())


def survival(histogram: list[float] | None, length: int, device=None) -> torch.Tensor:
    """S(l) for l = 0..length-1: the chance that slots 1..l of a live group are all right.

    ``histogram[n]`` is the fraction of training windows whose correct prefix was n. Slot 0 of a group predicts the
    token the teacher decides anyway, so S(l) = P(prefix >= l + 1 | prefix >= 1). Without a histogram a geometric
    prior 0.6^l is used. A tiny decreasing floor keeps the order of slots meaningful where the histogram is 0.
    """
    steps = torch.arange(length, dtype=torch.float64)
    if histogram is None:
        s = 0.6**steps
    else:
        h = torch.tensor(histogram, dtype=torch.float64)
        at_least = h.flip(0).cumsum(0).flip(0)  # at_least[n] = P(prefix >= n)
        padded = torch.cat([at_least, torch.zeros(max(0, length + 1 - len(at_least)), dtype=torch.float64)])
        s = padded[1 : length + 1] / max(float(padded[1]), 1e-12)
        s[0] = 1.0
    floor = 1e-9 * 0.5**steps
    return torch.maximum(s, floor).float().to(device)


def hypothesis_weights(confidence: torch.Tensor) -> torch.Tensor:
    """``[B, P]`` confidences (index 0: the already verified token, 1; pads: 0) -> ``[B, P]`` P(exactly d accepted)."""
    reach = torch.cumprod(confidence, dim=1)
    stop = 1.0 - torch.cat([confidence[:, 1:], torch.zeros_like(confidence[:, :1])], dim=1)
    return reach * stop


def allocate(weights: torch.Tensor, survival_curve: torch.Tensor, budget: int) -> torch.Tensor:
    """Group lengths ``[B, D]`` (each <= len(survival_curve)) summing to ``budget`` per row."""
    batch, groups = weights.shape
    worth = weights.unsqueeze(-1) * survival_curve.view(1, 1, -1)  # [B, D, Lmax]
    flat = worth.flatten(1)
    budget = min(budget, flat.shape[1])
    chosen = torch.zeros_like(flat, dtype=torch.long)
    chosen.scatter_(1, flat.topk(budget, dim=1).indices, 1)
    return chosen.view(batch, groups, -1).sum(-1)


def layout(lengths: torch.Tensor, budget: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each of the ``budget`` slots goes: groups are laid out one after another in order of d.

    Returns ``(group, index, start)``: ``[B, A]`` group of each slot, ``[B, A]`` its index inside the group, and
    ``[B, D]`` the first slot of each group.
    """
    ends = lengths.cumsum(dim=1)
    slots = torch.arange(budget, device=lengths.device).expand(lengths.shape[0], -1).contiguous()
    group = torch.searchsorted(ends, slots, right=True).clamp(max=lengths.shape[1] - 1)
    start = ends - lengths
    index = slots - start.gather(1, group)
    return group, index, start
