"""A fast plain sampler for large batches (pregeneration): the tokens of :func:`ptp.sample_autoregressive`, sooner.

One token per forward call and new token g of row b is ``Pick(u[b, g], S)``, as in the reference; what differs is
only the bookkeeping. The host reads the device every ``check_every`` steps and nowhere else: the rows that stopped
at EOS are then dropped from the batch (their cache rows too) and the loop ends when none is left. Between checks a
stopped row is still computed, but its tokens are never written. The prefill keeps only the last position's logits.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache, PreTrainedModel

from ptp.compat import cache_argument
from ptp.decode.inputs import GenerationOutput, check_plain_inputs
from ptp.sampling import SamplingConfig, pick


@torch.no_grad()
def sample_batched(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    auxiliaries: torch.Tensor,
    max_new_tokens: int,
    sampling: SamplingConfig,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    check_every: int = 16,
) -> GenerationOutput:
    """Plain autoregressive sampling with given auxiliaries; the same tokens and lengths as the reference sampler.

    Args:
        model, input_ids, attention_mask, auxiliaries, max_new_tokens, eos_token_id, pad_token_id: as for
            :func:`ptp.sample_autoregressive`.
        sampling: the sampling configuration S.
        check_every: steps between the host's looks at which rows are still running.
    Returns:
        :class:`GenerationOutput`; ``num_calls`` counts the forward calls made (up to ``check_every - 1`` more than
        the reference's, after the last row stopped).
    """
    if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
        raise ValueError(f"check_every must be an integer >= 1, got {check_every!r}")
    model, input_ids, mask, u, eos, pad = check_plain_inputs(
        model, input_ids, attention_mask, auxiliaries, max_new_tokens, eos_token_id, pad_token_id
    )
    batch, width = input_ids.shape
    device = input_ids.device
    fill = pad if pad is not None else 0
    new = torch.full((batch, max_new_tokens), fill, dtype=torch.int64, device=device)
    lengths = torch.zeros(batch, dtype=torch.int64, device=device)
    rows = torch.arange(batch, device=device)  # the row of the output that each row of the batch fills
    running = torch.ones(batch, dtype=torch.bool, device=device)
    positions = (mask.long().cumsum(dim=1) - 1).clamp(min=0)
    mask = torch.cat([mask.long(), torch.ones((batch, max_new_tokens), dtype=torch.int64, device=device)], dim=1)
    tokens, cache, calls = input_ids, DynamicCache(), 0
    for g in range(max_new_tokens):
        logits = model(
            input_ids=tokens,
            attention_mask=mask[:, : width + g],
            position_ids=positions,
            use_cache=True,
            **cache_argument(model, cache),
            logits_to_keep=1,
        ).logits[:, -1]
        calls += 1
        token = pick(u[:, g], logits, sampling)
        new[rows, g] = torch.where(running, token, fill)
        lengths[rows] += running.long()
        running &= ~torch.isin(token, eos)
        if (g + 1) % check_every == 0:
            keep = running.nonzero().squeeze(1)  # the host sync
            if len(keep) == 0:
                break
            if len(keep) < len(rows):
                rows, running, token, positions, mask, u = (t[keep] for t in (rows, running, token, positions, mask, u))
                cache.batch_select_indices(keep)
        tokens = token.unsqueeze(1)
        positions = positions[:, -1:] + 1
    return GenerationOutput(
        sequences=torch.cat([input_ids, new], dim=1),
        lengths=lengths,
        prompt_width=width,
        num_calls=calls,
        accept_lengths=[[1] * n for n in lengths.tolist()],
    )
