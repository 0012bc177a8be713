"""Attention under PTP's custom masks, without copying grouped keys and values.

Every PTP call passes its own visibility mask (slots see their group and the context, not each other's groups), and
``transformers``' SDPA attention, given a mask on a CUDA device, repeats each key/value head for every query head of
its group before the kernel runs (``repeat_kv``): with few queries per row, as in decoding, that copy costs more than
the attention itself (measured: 60% of a plain decoding step of SmolLM2-135M at batch 256 went to it).

:func:`grouped_sdpa` folds the query heads of a group into the query length instead: query head ``k * groups + g``
at position ``l`` becomes query ``g * L + l`` of key/value head ``k``, and the mask is repeated along the queries,
which is the same attention, per query, over keys and values read once. It does so while the folded queries are
few (:data:`FOLD_QUERIES`); longer calls (training rows, prompts) go to ``transformers``' own SDPA function. Either
way the mask, the same in every layer of a call, is put in the form SDPA reads (additive, and folded) once per call
(:func:`sdpa_mask_of`), where SDPA would make a bool mask additive in every layer. Models switched to it
(:func:`use_mask_attention`) report the attention implementation :data:`NAME`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "ptp_sdpa"
#: Folded queries per key/value head up to which folding is used; a longer call's repeated mask would cost more than
#: the keys and values it saves copying.
FOLD_QUERIES = 512


def grouped_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """``transformers``' attention-function interface: ``query`` ``[B, H, L, D]``, ``key``/``value``
    ``[B, H_kv, K, D]``, a mask shared by all heads; returns ``[B, L, H, D]``."""
    groups = getattr(module, "num_key_value_groups", 1)
    batch, heads, length, dim = query.shape
    shared_mask = attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[1] == 1
    unfolded = groups == 1 or not shared_mask or groups * length > FOLD_QUERIES
    if unfolded or kwargs.get("position_bias") is not None:
        if shared_mask and kwargs.get("position_bias") is None:
            attention_mask = sdpa_mask_of(attention_mask, query.dtype)
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)  # fmt: skip
    folded = query.reshape(batch, heads // groups, groups * length, dim)
    mask = sdpa_mask_of(attention_mask, query.dtype, groups, key.shape[-2])
    output = F.scaled_dot_product_attention(
        folded, key, value, attn_mask=mask, dropout_p=dropout if module.training else 0.0, scale=scaling
    )
    return output.reshape(batch, heads, length, dim).transpose(1, 2).contiguous(), None


def sdpa_mask_of(mask: torch.Tensor, dtype: torch.dtype, groups: int = 1, keys: int | None = None) -> torch.Tensor:
    """A mask shared by all heads (``[B, 1, Q, K]``) as SDPA reads it for queries of ``dtype``: a bool mask made
    additive (0 where a query sees a key, -inf elsewhere, as SDPA itself would make it, in every layer), and with
    ``groups`` > 1 cut to ``keys`` keys and repeated for the ``groups`` query heads folded into the queries.

    Every layer of a call gets the same mask: what is made from it is kept on it (while it is not changed in place),
    so that it is made once per call rather than once per layer. Not under ``torch.compile`` (which traces the
    making itself), for inference tensors (which keep no count of their changes) or while a CUDA graph is captured
    (a graph would read what was kept as it was when captured, whatever the mask holds when replayed).
    """
    form = (dtype, groups, keys)
    capturing = mask.is_cuda and torch.cuda.is_current_stream_capturing()
    keep = not (torch.compiler.is_compiling() or mask.is_inference() or capturing)
    if keep:
        kept = mask.__dict__.get("_sdpa_form")
        if kept is not None and kept[0] == (form, mask._version):
            return kept[1]
    made = mask
    if groups > 1:
        made = made[:, :, :, :keys]
        made = made.unsqueeze(2).expand(-1, -1, groups, -1, -1).reshape(made.shape[0], 1, -1, made.shape[-1])
    if made.dtype == torch.bool:
        # The two values on the mask's device: a CPU scalar would be copied to the GPU, which a CUDA graph's capture
        # refuses (the decoding step would fall back to eager).
        zero = torch.zeros((), dtype=dtype, device=made.device)
        made = torch.where(made, zero, torch.full((), float("-inf"), dtype=dtype, device=made.device))
    if keep:
        mask._sdpa_form = ((form, mask._version), made)
    return made


AttentionInterface.register(NAME, grouped_sdpa)
AttentionMaskInterface.register(NAME, sdpa_mask)


def use_mask_attention(model: PreTrainedModel) -> None:
    """Switch ``model`` to :func:`grouped_sdpa` unless it uses eager attention: only these take custom masks as they
    are (eager as an additive bias, :func:`attention_bias`)."""
    if model.config._attn_implementation not in (NAME, "eager"):
        model.set_attn_implementation(NAME)


def attention_bias(model: PreTrainedModel, allowed: torch.Tensor) -> torch.Tensor:
    """A bool ``[B, 1, Q, K]`` visibility mask in the form ``model``'s attention takes (additive for eager)."""
    if model.config._attn_implementation == "eager":
        lowest = torch.tensor(torch.finfo(model.dtype).min, dtype=model.dtype)
        return torch.where(allowed, torch.zeros((), dtype=model.dtype), lowest).to(allowed.device)
    return allowed
