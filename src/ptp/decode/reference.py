"""The slow, obviously correct sampler: one token per forward call, new token g of row b is Pick(u[b, g], P).

It is the ground truth of the exactness tests: whatever the drafter proposes, the fast engine must return exactly
these tokens for the same auxiliaries.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache, PreTrainedModel

from ptp.compat import cache_argument
from ptp.decode.inputs import GenerationOutput, check_plain_inputs, sampling_from_arguments
from ptp.sampling import SamplingConfig, pick


@torch.no_grad()
def sample_autoregressive(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    auxiliaries: torch.Tensor,
    max_new_tokens: int,
    do_sample: bool | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    sampling: SamplingConfig | None = None,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
) -> GenerationOutput:
    """Plain autoregressive sampling of a Hugging Face causal LM with given auxiliaries.

    Args:
        model: a causal LM (a :class:`ptp.PTPModel` is sampled through its frozen base, adapter off).
        input_ids, attention_mask: ``[B, S]`` left-padded prompts.
        auxiliaries: float ``[B, max_new_tokens]`` in [0, 1).
        do_sample, temperature, top_k, top_p: the sampling configuration; those not given are plain (sampling,
            temperature 1, top_k 0 or None: off, top_p 1.0 or None: off). Or pass ``sampling`` instead (which also
            sets the order of the bins).
    Returns:
        :class:`GenerationOutput`; every call commits one token per running row.
    """
    config = sampling_from_arguments(sampling, do_sample, temperature, top_k, top_p)
    model, input_ids, mask, u, eos, pad = check_plain_inputs(
        model, input_ids, attention_mask, auxiliaries, max_new_tokens, eos_token_id, pad_token_id
    )
    device = model.device
    batch, width = input_ids.shape

    new = torch.full((batch, max_new_tokens), pad if pad is not None else 0, dtype=torch.int64, device=device)
    lengths = torch.zeros(batch, dtype=torch.int64, device=device)
    running = torch.ones(batch, dtype=torch.bool, device=device)
    accept_lengths: list[list[int]] = [[] for _ in range(batch)]
    cache = DynamicCache()
    positions = (mask.long().cumsum(dim=1) - 1).clamp(min=0)
    tokens, mask2d = input_ids, mask.long()
    calls = 0
    for g in range(max_new_tokens):
        logits = model(
            input_ids=tokens,
            attention_mask=mask2d,
            position_ids=positions,
            use_cache=True,
            **cache_argument(model, cache),
        ).logits[:, -1]
        calls += 1
        token = pick(u[:, g], logits, config)
        new[:, g] = torch.where(running, token, new[:, g])
        for b in torch.nonzero(running).flatten().tolist():
            accept_lengths[b].append(1)
        lengths += running.long()
        running &= ~torch.isin(token, eos)
        if not running.any():
            break
        tokens = token.unsqueeze(1)
        positions = positions[:, -1:] + 1
        mask2d = torch.cat([mask2d, torch.ones_like(mask2d[:, :1])], dim=1)
    return GenerationOutput(
        sequences=torch.cat([input_ids, new], dim=1),
        lengths=lengths,
        prompt_width=width,
        num_calls=calls,
        accept_lengths=accept_lengths,
    )
