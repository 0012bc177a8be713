"""The decoding engine: lossless speculative decoding with shared auxiliaries (METHOD.md section 6).

One loop: a prefill, then one fixed-shape step repeated. Each step runs one forward pass over

    [ x_0 x_1 .. x_{P-1} | group 0 | group 1 | ... ]        (P teacher tokens, then A auxiliary slots)

where x_0 is the last committed token (its KV is not cached yet) and x_1.. are the pending drafts. The teacher
outputs verify the drafts with the same auxiliaries u that plain sampling would use: the token after x_j is
``Pick(u, P_j)``; the longest agreeing prefix x_1..x_m is accepted and the teacher's token after x_m is committed too
(m + 1 tokens per call). Group d assumes exactly d drafts will be accepted: its slots see the cache and x_0..x_d and
propose the tokens after x_d; the group of the actual m supplies the next drafts (its first slot's position is the
token the teacher has just decided, which replaces the drafter's guess). The slot budget is split across groups by
:mod:`ptp.decode.budget`.

The cache keeps only teacher KV: auxiliary slots are cropped after each call, and rows that accept fewer drafts than
the longest row keep masked holes (``cache_valid``). Per row positions and u indices are tracked on the device; the
only host synchronisation per step reads the commit counts (needed to crop the cache and to stop).

A separate drafter (a smaller model with its own weights, METHOD.md section 3) changes only who computes what in
the step: the teacher runs the block on its own cache and verifies, the drafter runs the same ``[block | slots]``
on its own cache and proposes. Both caches hold the same committed tokens and are cropped alike.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from ptp.decode.budget import allocate, hypothesis_weights, layout, survival
from ptp.decode.inputs import (
    GenerationOutput,
    check_prompt,
    check_sliding_window,
    context_length,
    prepare_auxiliaries,
    resolve_stop_tokens,
)
from ptp.model.embeddings import NULL_AUXILIARY
from ptp.model.ptp import PTPModel, check_drafter, teacher_logits
from ptp.sampling import SamplingConfig, pick, probabilities


def visibility(
    cache_valid: torch.Tensor,
    block_valid: torch.Tensor,
    parent: torch.Tensor,
    group: torch.Tensor,
    index: torch.Tensor,
) -> torch.Tensor:
    """Which key each query of ``[block | slots]`` may see. Returns bool ``[B, 1, P + A, S + P + A]``.

    Args:
        cache_valid: bool ``[B, S]`` cached teacher keys that belong to the row's committed text.
        block_valid: bool ``[B, P]`` real (not padding) teacher tokens of the block.
        parent: int ``[B, A]`` the last block token each slot sees (its group hangs after it).
        group, index: int ``[B, A]`` each slot's group and position inside the group.
    """
    batch, blen = block_valid.shape
    alen = parent.shape[1]
    device = block_valid.device
    b = torch.arange(blen, device=device)
    block_to_block = (b.view(1, -1, 1) >= b.view(1, 1, -1)) & block_valid.unsqueeze(1)
    # Every query sees itself, so that a padding query never has all keys masked (that would give NaN).
    block_to_block = block_to_block | torch.eye(blen, dtype=torch.bool, device=device)
    slot_to_block = (b.view(1, 1, -1) <= parent.unsqueeze(-1)) & block_valid.unsqueeze(1)
    slot_to_slot = (group.unsqueeze(-1) == group.unsqueeze(1)) & (index.unsqueeze(1) <= index.unsqueeze(-1))
    top = torch.cat([block_to_block, torch.zeros(batch, blen, alen, dtype=torch.bool, device=device)], dim=2)
    bottom = torch.cat([slot_to_block, slot_to_slot], dim=2)
    fresh = torch.cat([top, bottom], dim=1)
    seen = cache_valid.unsqueeze(1).expand(batch, blen + alen, cache_valid.shape[1])
    return torch.cat([seen, fresh], dim=2).unsqueeze(1)


def _drafts(model, logits: torch.Tensor, u_target: torch.Tensor, targets: torch.Tensor, sampling: SamplingConfig):
    """Draft tokens and confidences of slots ``[B, n]`` predicting new tokens ``targets`` from ``logits``.

    O-PTP (and the baseline): the argmax and its probability; C-PTP: Pick with the slot's own u and the
    probability of that token.
    """
    if model.config.mode == "categorical":
        probs = probabilities(logits, sampling)
        tokens = pick(u_target, logits, sampling)
        return tokens, probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    probs = torch.softmax(logits.float(), dim=-1)
    confidence, tokens = probs.max(dim=-1)
    return tokens, confidence


class _Run:
    """The device state of one generation call (kept explicit, passed to the stages).

    ``model`` is the :class:`ptp.PTPModel` that drafts. ``verifier`` is a separate teacher (any causal LM with the
    same vocabulary) with its own cache, or None when the model's frozen base verifies in the same pass.
    """

    def __init__(self, model, verifier, prompt, mask, u, sampling, eos, pad, max_new_tokens, pending_size, budget,
                 max_positions):  # fmt: skip
        self.model, self.verifier, self.sampling, self.eos = model, verifier, sampling, eos
        self.max_new_tokens, self.pending_size, self.budget = max_new_tokens, pending_size, budget
        device = prompt.device
        batch = prompt.shape[0]
        self.batch = batch
        spare = pending_size + budget + 2
        # u beyond max_new_tokens only feeds slots whose tokens are never committed.
        self.u = torch.cat([u, torch.full((batch, spare), NULL_AUXILIARY, device=device)], dim=1)
        self.new = torch.full((batch, max_new_tokens + pending_size + 1), pad, dtype=torch.int64, device=device)
        self.committed = torch.zeros(batch, dtype=torch.int64, device=device)
        self.running = torch.ones(batch, dtype=torch.bool, device=device)
        self.last_position = mask.long().sum(dim=1) - 1  # position id of the last committed token
        self.max_position = (max_positions or 1 << 30) - 1
        # Both caches hold the KV of the same committed tokens (with the same holes), so one cache_valid serves both.
        self.cache = DynamicCache()
        self.verifier_cache = DynamicCache() if verifier is not None else None
        self.cache_valid = torch.zeros(batch, 0, dtype=torch.bool, device=device)
        self.survival = survival(model.config.acceptance_histogram, pending_size, device)
        self.calls = 0

    def forward(self, block, block_valid, block_positions, parent, group, index, targets):
        """One step's pass over ``[block | slots]``; returns block logits ``[B, P, V]`` and slot logits ``[B, A, V]``.

        With a separate verifier the teacher runs the block alone on its cache and the drafter runs the whole
        ``[block | slots]`` on its own cache, with the same positions, visibility and u's; without one, a single
        pass of the model does both (adapter off on the block, on on the slots).
        """
        model = self.model
        blen, alen = block.shape[1], group.shape[1]
        positions = block_positions
        ids, aux_mask, aux_in = block, None, None
        if alen:
            u_target = self.u.gather(1, targets)
            u_previous = self.u.gather(1, (targets - 1).clamp(min=0))
            slot_inputs = model.slot_auxiliaries(u_target, u_previous, index == 0)
            slot_positions = block_positions.gather(1, parent) + index
            positions = torch.cat([block_positions, slot_positions], dim=1)
            ids = torch.cat([block, model.slot_tokens(block.gather(1, parent), index == 0)], dim=1)
            aux_mask = torch.zeros_like(ids, dtype=torch.bool)
            aux_mask[:, blen:] = True
            aux_in = torch.cat([torch.full_like(block, NULL_AUXILIARY, dtype=torch.float32), slot_inputs], dim=1)
        allowed = visibility(self.cache_valid, block_valid, parent, group, index)
        positions = positions.clamp(max=self.max_position)
        self.calls += 1
        block_logits = None
        if self.verifier is not None:
            # Block queries see no slot: the block's rows and the cache + block columns are the teacher's own mask.
            block_logits = teacher_logits(self.verifier, block, position_ids=positions[:, :blen],
                                          attention_mask=allowed[:, :, :blen, : allowed.shape[-1] - alen],
                                          past_key_values=self.verifier_cache)  # fmt: skip
            if not alen:  # no slots (plain decoding): the drafter has nothing to do
                return block_logits, block_logits[:, :0]
        logits = model(ids, position_ids=positions, attention_mask=allowed, auxiliaries=aux_in, auxiliary_mask=aux_mask,
                       past_key_values=self.cache)  # fmt: skip
        return (logits[:, :blen] if block_logits is None else block_logits), logits[:, blen:]

    def crop(self, slots: int, rejected: int) -> None:
        """Drop the last ``slots`` auxiliary slots and the ``rejected`` block tokens before them from the caches."""
        # crop(0) empties a DynamicCache in transformers versions where crop takes the length to keep
        if slots + rejected and (self.verifier is None or self.budget):
            self.cache.crop(-(slots + rejected))
        if rejected and self.verifier_cache is not None:
            self.verifier_cache.crop(-rejected)


@torch.no_grad()
def generate(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    max_new_tokens: int,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    sampling: SamplingConfig | None = None,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    auxiliaries: torch.Tensor | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    streamer=None,
    use_drafter: bool = True,
    auxiliary_budget: int | None = None,
    max_draft_length: int | None = None,
    drafter: PTPModel | None = None,
) -> GenerationOutput:
    """Generate with a :class:`ptp.PTPModel`; the output equals plain sampling with the same auxiliaries.

    Args:
        model: the teacher. A :class:`ptp.PTPModel` drafts itself (gated adapter) unless ``drafter`` is given; with
            a ``drafter`` it may be any causal LM (a PTPModel verifies through its frozen base).
        input_ids, attention_mask: ``[B, S]`` left-padded prompts (mask 1 on real tokens).
        max_new_tokens: new tokens per row at most.
        do_sample, temperature, top_k, top_p: the sampling configuration, with the defaults of
            :func:`ptp.sample_autoregressive` (top_k / top_p None: off). Or pass ``sampling`` instead, e.g.
            ``model.config.sampling``, the configuration the drafter was trained for.
        eos_token_id, pad_token_id: a row stops after EOS and is padded with ``pad_token_id`` (default: the model's
            generation config; pad falls back to the first EOS id).
        auxiliaries: float ``[B, max_new_tokens]`` in [0, 1): u of each new token. Default: drawn uniformly on the
            CPU from ``seed`` / ``generator``.
        streamer: an object with ``put(tokens)`` and ``end()`` (e.g. ``transformers.TextStreamer``); batch size 1.
        use_drafter: False runs the same engine as plain autoregressive decoding (one token per call).
        auxiliary_budget: auxiliary slots per call (default: twice the window length).
        max_draft_length: the longest group of slots, hence pending drafts + 1 (default: the window length).
        drafter: a separate drafter (METHOD.md section 3): a :class:`ptp.PTPModel` around its own causal LM with the
            teacher's vocabulary, which reads the context itself with its own cache. Each step the teacher verifies
            the pending block and the drafter runs ``[block | slots]`` with the same positions, masks and u's; the
            output is still exactly the teacher's plain sampling. ``num_calls`` counts steps (one teacher and one
            drafter pass each).
    Returns:
        :class:`ptp.decode.inputs.GenerationOutput` with the tokens and the per-call statistics.
    """
    if sampling is None:
        sampling = SamplingConfig(do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p)
    elif (do_sample, temperature, top_k, top_p) != (True, 1.0, None, None):
        raise ValueError("pass either sampling or do_sample/temperature/top_k/top_p, not both")
    verifier = None
    if drafter is not None:
        verifier = model.base_model if isinstance(model, PTPModel) else model
        check_drafter(verifier, drafter)
        model = drafter
    elif not isinstance(model, PTPModel):
        raise TypeError(f"model must be a PTPModel, or pass a drafter; got {type(model).__name__}")
    teacher = model.base_model if verifier is None else verifier
    device = model.device
    input_ids = input_ids.to(device)
    limits = [n for n in (context_length(model), context_length(teacher)) if n is not None]
    max_positions = min(limits) if limits else None
    mask = check_prompt(input_ids, attention_mask, max_new_tokens, max_positions)
    for network in {id(m): m for m in (model.base_model, teacher)}.values():
        check_sliding_window(network.config, input_ids.shape[1] + max_new_tokens)
    batch, width = input_ids.shape
    if streamer is not None and batch != 1:
        raise ValueError("a streamer needs batch size 1")
    u = prepare_auxiliaries(auxiliaries, seed, generator, batch, max_new_tokens, device)
    eos, pad = resolve_stop_tokens(eos_token_id, pad_token_id, teacher)
    eos = eos.to(device)
    for name, value, least in (("max_draft_length", max_draft_length, 1), ("auxiliary_budget", auxiliary_budget, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            raise ValueError(f"{name} must be an integer >= {least} or None, got {value!r}")
    window = model.config.window_length
    pending_size = window if max_draft_length is None else max_draft_length
    budget = 2 * window if auxiliary_budget is None else auxiliary_budget
    if not use_drafter:
        pending_size, budget = 1, 0
    # There are pending_size groups of at most pending_size slots: a larger budget would only add dead slots.
    pending_size = min(pending_size, max(budget, 1))
    budget = min(budget, pending_size * pending_size)

    run = _Run(model, verifier, input_ids, mask, u, sampling, eos, pad if pad is not None else 0, max_new_tokens,
               pending_size, budget, max_positions)  # fmt: skip
    accept_lengths: list[list[int]] = [[] for _ in range(batch)]
    if streamer is not None:
        streamer.put(input_ids.cpu())
    state = _prefill(run, input_ids, mask)
    for b in range(batch):
        accept_lengths[b].append(1)
    if streamer is not None:
        streamer.put(run.new[0, :1].cpu())
    alive = bool(run.running.any())
    while alive:
        state, alive = _step(run, *state, accept_lengths, streamer)
    if streamer is not None:
        streamer.end()
    return GenerationOutput(
        sequences=torch.cat([input_ids, run.new[:, :max_new_tokens]], dim=1),
        lengths=run.committed.clone(),
        prompt_width=width,
        num_calls=run.calls,
        accept_lengths=accept_lengths,
    )


def _prefill(run: _Run, prompt: torch.Tensor, mask: torch.Tensor):
    """The prompt through the teacher, and one group of slots after its last token (whose hypothesis is certain)."""
    batch, width = prompt.shape
    device = prompt.device
    slots = min(run.budget, run.pending_size)
    positions = (mask.long().cumsum(dim=1) - 1).clamp(min=0)
    index = torch.arange(slots, device=device).expand(batch, -1)
    group = torch.zeros_like(index)
    parent = torch.full_like(index, width - 1)
    block_logits, slot_logits = run.forward(prompt, mask, positions, parent, group, index, targets=index)
    run.crop(slots, 0)
    run.cache_valid = mask
    first = pick(run.u[:, 0], block_logits[:, -1], run.sampling)
    run.new[:, 0] = first
    run.committed += 1
    run.last_position += 1
    run.running &= ~torch.isin(first, run.eos) & (run.committed < run.max_new_tokens)
    return _next_pending(run, first, slot_logits, index, torch.zeros(batch, 1, dtype=torch.long, device=device),
                         torch.full((batch, 1), slots, device=device))  # fmt: skip


def _next_pending(run: _Run, decided, slot_logits, targets, start, lengths):
    """The next block: the token the teacher just decided, then the drafts of the live group's slots 1..L-1."""
    size = run.pending_size
    j = torch.arange(size, device=decided.device).unsqueeze(0)
    live = start.squeeze(1).unsqueeze(1) + j  # slot index of the live group's j-th slot
    length = lengths.squeeze(1).unsqueeze(1)
    pending = decided.unsqueeze(1).expand(-1, size).clone()
    confidence = torch.zeros(pending.shape, device=decided.device)
    confidence[:, 0] = 1.0
    if slot_logits.shape[1]:
        slot = live.clamp(max=slot_logits.shape[1] - 1)
        logits = slot_logits.gather(1, slot.unsqueeze(-1).expand(-1, -1, slot_logits.shape[-1]))
        target = targets.gather(1, slot)
        tokens, conf = _drafts(run.model, logits, run.u.gather(1, target), target, run.sampling)
        draft = (j >= 1) & (j < length)
        pending = torch.where(draft, tokens, pending)
        confidence = torch.where(draft, conf, confidence)
    valid = j < length.clamp(min=1)
    return pending, valid, confidence


def _step(run: _Run, pending, pending_valid, confidence, accept_lengths, streamer):
    """Verify the pending drafts, commit, and take the next drafts from the live group."""
    batch, size = pending.shape
    device = pending.device
    j = torch.arange(size, device=device).unsqueeze(0)
    weights = hypothesis_weights(confidence)
    lengths = allocate(weights, run.survival, run.budget)
    group, index, start = layout(lengths, run.budget)
    # x_0 is new token committed-1; slot i of group d predicts new token committed + d + i.
    targets = run.committed.unsqueeze(1) + group + index
    block_positions = run.last_position.unsqueeze(1) + j
    block_logits, slot_logits = run.forward(pending, pending_valid, block_positions, group, group, index, targets)
    # The teacher's token after x_j is new token committed + j, picked with that token's own u.
    teacher = pick(run.u.gather(1, run.committed.unsqueeze(1) + j), block_logits, run.sampling)
    agree = (pending[:, 1:] == teacher[:, :-1]) & pending_valid[:, 1:]
    accepted = agree.long().cumprod(dim=1).sum(dim=1)  # m: drafts accepted
    # Commit teacher[0..m] (the accepted drafts equal them), cut after EOS and at max_new_tokens.
    offered = j <= accepted.unsqueeze(1)
    is_eos = torch.isin(teacher, run.eos) & offered
    through_eos = (is_eos.long().cumsum(dim=1) - is_eos.long()) == 0
    room = (run.max_new_tokens - run.committed).unsqueeze(1)
    take = offered & through_eos & (j < room) & run.running.unsqueeze(1)
    count = take.long().sum(dim=1)
    slots = (run.committed.unsqueeze(1) + j).clamp(max=run.new.shape[1] - 1)
    run.new.scatter_(1, slots, torch.where(take, teacher, run.new.gather(1, slots)))
    was_running = run.running.clone()
    run.committed += count
    run.last_position += count
    run.running &= ~(is_eos & take).any(dim=1) & (run.committed < run.max_new_tokens)

    # The one host sync of the step: how far the cache advances, who is still running, what each row committed.
    longest = torch.where(was_running, accepted, 0).max().view(1)
    stats = torch.cat([longest, run.running.any().view(1), count]).tolist()
    kept, alive, counts = stats[0] + 1, bool(stats[1]), stats[2:]
    run.crop(run.budget, size - kept)
    run.cache_valid = torch.cat([run.cache_valid, (offered & pending_valid)[:, :kept]], dim=1)
    for b, n in enumerate(counts):
        if n:
            accept_lengths[b].append(n)
    if streamer is not None and counts[0]:
        streamer.put(teacher[0, : counts[0]].cpu())

    decided = teacher.gather(1, accepted.unsqueeze(1)).squeeze(1)
    live_start = start.gather(1, accepted.unsqueeze(1))
    live_length = lengths.gather(1, accepted.unsqueeze(1))
    return _next_pending(run, decided, slot_logits, targets, live_start, live_length), alive
