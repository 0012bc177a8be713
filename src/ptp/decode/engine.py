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

The cache (:mod:`ptp.decode.cache`) is allocated once per generation and keeps only teacher KV: each call writes
``[block | slots]`` at the cache's length, then the length advances past the block tokens that the longest row
accepted, so slots and rejected drafts are overwritten by the next call. Rows that accept fewer drafts than the
longest keep masked holes (``cache_valid``); when the holes fill the cache, it is compacted. Every tensor of a step
has a fixed shape and lives on the device; the only host synchronisation per step reads the commit counts (to stop,
and for the statistics). On a CUDA device the step is captured once as a CUDA graph and replayed (``cuda_graph``,
:mod:`ptp.decode.graphs`), which removes the per-kernel launch cost that otherwise dominates small models and short
blocks. With ``compile=True`` the same step is compiled by ``torch.compile`` (inductor), once per call shape: norms,
rotary embeddings, activations and the sampling arithmetic become fused kernels, before the capture on a GPU.

A separate drafter (a smaller model with its own weights, METHOD.md section 3) changes only who computes what in
the step: the teacher runs the block on its own cache and verifies, the drafter runs the same ``[block | slots]``
on its own cache and proposes. Both caches hold the same committed tokens at the same columns.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import replace

import torch

from ptp.decode import graphs
from ptp.decode.budget import allocate, hypothesis_weights, layout, slot_budget, survival
from ptp.decode.cache import OffsetCache
from ptp.decode.cost import call_cost
from ptp.decode.inputs import (
    GenerationOutput,
    check_prompt,
    check_sliding_window,
    context_length,
    prepare_auxiliaries,
    resolve_stop_tokens,
    sampling_from_arguments,
    vocabulary_size,
)
from ptp.model.attention import use_mask_attention
from ptp.model.config import PICK_MODES
from ptp.model.embeddings import NULL_AUXILIARY
from ptp.model.ptp import PTPModel, check_drafter, teacher_logits
from ptp.sampling import SamplingConfig, pick, probabilities

#: Cache capacities are rounded up to a multiple of this, so that prompts of similar length share a captured graph.
CAPACITY_STEP = 256
#: Call shapes the compiled step keeps compiled programs for (torch.compile's own limit is 8; a batch that shrinks
#: as its rows finish passes through up to 11 sizes).
COMPILED_SHAPES = 64


def visibility(
    cache_valid: torch.Tensor,
    length: torch.Tensor,
    block_valid: torch.Tensor,
    parent: torch.Tensor,
    group: torch.Tensor,
    index: torch.Tensor,
) -> torch.Tensor:
    """Which cache column each query of ``[block | slots]`` may see. Returns bool ``[B, 1, P + A, K]``.

    Args:
        cache_valid: bool ``[B, K]`` the first K cache columns: True where they hold the row's committed text (False
            from ``length`` on).
        length: int scalar tensor, the column where this call's ``[block | slots]`` is written.
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
    fresh = torch.cat([top, bottom], dim=1)  # [B, Q, Q]: query i -> the call's own key j
    queries = blen + alen
    offset = torch.arange(cache_valid.shape[1], device=device) - length  # column -> index in this call, if >= 0
    inside = (offset >= 0) & (offset < queries)
    own = fresh.gather(2, offset.clamp(0, queries - 1).view(1, 1, -1).expand(batch, queries, -1))
    return torch.where(inside, own, cache_valid.unsqueeze(1)).unsqueeze(1)


def _drafts(model, logits: torch.Tensor, u_target: torch.Tensor, targets: torch.Tensor, sampling: SamplingConfig):
    """Draft tokens and confidences of slots ``[B, n]`` predicting new tokens ``targets`` from ``logits``.

    O-PTP (and the baseline): the argmax and its probability; C-PTP and the mode chain: Pick with the slot's own u
    and the probability of that token.
    """
    if model.config.mode in PICK_MODES:
        probs = probabilities(logits, sampling)
        tokens = pick(u_target, logits, sampling)
        return tokens, probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    probs = torch.softmax(logits.float(), dim=-1)
    confidence, tokens = probs.max(dim=-1)
    return tokens, confidence


class _Run:
    """The device state of a generation: fixed-shape buffers that every step reads and updates in place.

    ``model`` is the :class:`ptp.PTPModel` that drafts, or a plain causal LM decoding one token per call (no slots).
    ``verifier`` is a separate teacher (any causal LM with the same vocabulary) with its own cache, or None when the
    model's frozen base verifies in the same pass. A run made
    for one call can serve later calls of the same shape (:meth:`reset`), which is how a captured graph is reused;
    it refers to the models only during a call (a kept run must not keep its model alive).
    """

    def __init__(self, model, verifier, batch, capacity, sampling, eos, pad, max_new_tokens, pending_size, budget,
                 slots, max_positions, device, capture, compiled):  # fmt: skip
        self.model, self.verifier, self.sampling, self.capture = model, verifier, sampling, capture
        # What the slots of a call do: "draft" (PTP); plain decoding laid out as drafting with the slots' positions
        # "empty" (padding the teacher alone computes), or "discard" (computed as when drafting, drafts never
        # proposed: one program for both runs, which a compiler then fuses alike).
        self.slots = slots
        self.compiled = compiled
        self.batch = batch
        self.max_new_tokens, self.pending_size, self.budget = max_new_tokens, pending_size, budget
        self.capacity, self.pad = capacity, pad
        self.max_position = (max_positions or 1 << 30) - 1
        spare = pending_size + budget + 2
        # u beyond max_new_tokens only feeds slots whose tokens are never committed.
        self.u = torch.full((batch, max_new_tokens + spare), NULL_AUXILIARY, device=device)
        self.eos = eos.to(device)
        self.new = torch.full((batch, max_new_tokens + pending_size + 1), pad, dtype=torch.int64, device=device)
        self.committed = torch.zeros(batch, dtype=torch.int64, device=device)
        self.running = torch.ones(batch, dtype=torch.bool, device=device)
        self.last_position = torch.zeros(batch, dtype=torch.int64, device=device)  # of the last committed token
        # Both caches write at the same column and hold the same committed tokens, so one length and one
        # cache_valid serve both.
        self.length = torch.zeros((), dtype=torch.int64, device=device)
        self.cache = OffsetCache(capacity, self.length)
        self.verifier_cache = OffsetCache(capacity, self.length) if verifier is not None else None
        self.cache_valid = torch.zeros(batch, capacity, dtype=torch.bool, device=device)
        self.pending = torch.zeros(batch, pending_size, dtype=torch.int64, device=device)
        self.pending_valid = torch.zeros(batch, pending_size, dtype=torch.bool, device=device)
        self.confidence = torch.zeros(batch, pending_size, device=device)
        # kept, alive, then commits per row and running per row
        self.stats = torch.zeros(2 + 2 * batch, dtype=torch.int64, device=device)
        histogram = model.config.acceptance_histogram if isinstance(model, PTPModel) else None
        self.survival = survival(histogram, pending_size, device)
        self.j = torch.arange(pending_size, device=device).unsqueeze(0)
        self.filled = 0  # host copy of self.length
        self.graph: torch.cuda.CUDAGraph | None = None
        self.eager_steps = 0

    def reset(self, model, verifier, u: torch.Tensor, mask: torch.Tensor) -> None:
        """Start a new generation in the same buffers (a captured graph keeps reading them)."""
        self.model, self.verifier = model, verifier
        self.u[:, : u.shape[1]].copy_(u)
        self.new.fill_(self.pad)
        self.committed.zero_()
        self.running.fill_(True)
        self.last_position.copy_(mask.long().sum(dim=1) - 1)
        self.length.zero_()
        self.cache_valid.zero_()
        self.filled = 0

    def adopt(self, source: _Run, rows: torch.Tensor) -> None:
        """Continue ``source``'s generation for its rows ``rows`` (int ``[self.batch]``) in this run's buffers, in
        place (a captured graph keeps reading them): how finished rows leave the batch."""
        self.model, self.verifier = source.model, source.verifier
        for name in ("u", "new", "committed", "running", "last_position", "cache_valid", "pending", "pending_valid",
                     "confidence"):  # fmt: skip
            getattr(self, name).copy_(getattr(source, name).index_select(0, rows))
        self.length.copy_(source.length)
        self.filled = source.filled
        for mine, theirs in ((self.cache, source.cache), (self.verifier_cache, source.verifier_cache)):
            if mine is not None:
                mine.copy_rows(theirs, rows)

    def forward(self, block, block_valid, block_positions, parent, group, index, targets, logits_to_keep=0):
        """One pass over ``[block | slots]``; returns block logits ``[B, P, V]`` and slot logits ``[B, A, V]``
        (``logits_to_keep`` > 0: of the last that many positions only, as in ``transformers``).

        With a separate verifier the teacher runs the block alone on its cache and the drafter runs the whole
        ``[block | slots]`` on its own cache, with the same positions, visibility and u's; without one, a single
        pass of the model does both (adapter off on the block, on on the slots).
        """
        model = self.model
        blen, alen = block.shape[1], group.shape[1]
        positions = block_positions
        ids, slots_from, aux_in = block, None, None
        if alen:
            slot_positions = block_positions.gather(1, parent) + index
            positions = torch.cat([block_positions, slot_positions], dim=1)
        if alen and self.slots == "empty":  # the slots' positions hold padding, which only the teacher computes
            ids = torch.cat([block, torch.full_like(index, self.pad)], dim=1)
        elif alen:
            u_target = self.u.gather(1, targets)
            u_previous = self.u.gather(1, (targets - 1).clamp(min=0))
            aux_in = model.slot_auxiliaries(u_target, u_previous, index == 0)
            ids = torch.cat([block, model.slot_tokens(block.gather(1, parent), index == 0)], dim=1)
            slots_from = blen
        columns = self.cache.columns  # None (captured: every column) or the columns in use (eager)
        allowed = visibility(self.cache_valid[:, :columns], self.length, block_valid, parent, group, index)
        positions = positions.clamp(max=self.max_position)
        block_logits = None
        if self.verifier is not None:
            # Block queries see no slot: the block's rows of the mask are the teacher's own.
            block_logits = teacher_logits(self.verifier, block, position_ids=positions[:, :blen],
                                          attention_mask=allowed[:, :, :blen], past_key_values=self.verifier_cache,
                                          logits_to_keep=max(logits_to_keep - alen, 0))  # fmt: skip
        if self.slots == "empty":  # plain decoding: the teacher alone (a separate drafter's pass is left out)
            if block_logits is None:
                logits = teacher_logits(model, ids, position_ids=positions, attention_mask=allowed,
                                        past_key_values=self.cache, logits_to_keep=logits_to_keep)  # fmt: skip
                block_logits = logits[:, : logits.shape[1] - alen]
            return block_logits, block_logits[:, :0]
        logits = model(ids, position_ids=positions, attention_mask=allowed, auxiliaries=aux_in, slots_from=slots_from,
                       past_key_values=self.cache, logits_to_keep=logits_to_keep)  # fmt: skip
        blocks = logits.shape[1] - alen
        return (logits[:, :blocks] if block_logits is None else block_logits), logits[:, blocks:]

    @property
    def advance(self):
        """The step: :func:`_advance`, or its compiled program."""
        return compiled_advance() if self.compiled else _advance

    def compact(self) -> None:
        """Move every row's committed columns to the front (holes last), so that the next call fits."""
        order = torch.sort((~self.cache_valid).to(torch.uint8), dim=1, stable=True).indices
        for cache in (self.cache, self.verifier_cache):
            if cache is not None:
                cache.reorder(order)
        self.cache_valid.copy_(self.cache_valid.gather(1, order))
        self.filled = int(self.cache_valid.sum(dim=1).max())
        self.length.fill_(self.filled)

    def use_columns(self, queries: int | None) -> None:
        """Attention reads the columns in use and the next call's ``queries`` (None: every column)."""
        columns = None if queries is None else self.filled + queries
        for cache in (self.cache, self.verifier_cache):
            if cache is not None:
                cache.columns = columns

    def step(self) -> None:
        """One step: with ``capture``, captured after a few eager ones and replayed from then on; else eager."""
        if self.filled + self.pending_size + self.budget > self.capacity:
            self.compact()
        if not self.capture:
            # An eager step reads the columns in use; a compiled one every column, so that its shape stays fixed.
            self.use_columns(None if self.compiled else self.pending_size + self.budget)
            self.advance(self)
            return
        self.use_columns(None)  # a captured step reads every column
        if self.graph is not None:
            self.graph.replay()
            return
        if self.eager_steps < graphs.WARMUP_STEPS:
            graphs.on_side_stream(lambda: self.advance(self), self.length.device)
            self.eager_steps += 1
            return
        try:
            self.graph = graphs.capture(lambda: self.advance(self))
        except RuntimeError as error:  # e.g. a model whose forward synchronises with the host
            warnings.warn(f"the decoding step could not be captured as a CUDA graph, so it runs eagerly: {error}",
                          stacklevel=4)  # fmt: skip
            self.capture = False  # the capture ran nothing: the step runs as if it had never been tried
            self.step()
            return
        self.graph.replay()


@torch.no_grad()
def generate(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    max_new_tokens: int,
    do_sample: bool | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    sampling: SamplingConfig | None = None,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    auxiliaries: torch.Tensor | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    streamer=None,
    on_commit=None,
    use_drafter: bool = True,
    auxiliary_budget: int | None = None,
    max_draft_length: int | None = None,
    drafter: PTPModel | None = None,
    cuda_graph: bool | None = None,
    compile: bool = False,
    match_drafting: bool | None = None,
) -> GenerationOutput:
    """Generate with a :class:`ptp.PTPModel`; the output equals plain sampling with the same auxiliaries.

    Args:
        model: the teacher. A :class:`ptp.PTPModel` drafts itself (gated adapter) unless ``drafter`` is given; with
            a ``drafter`` it may be any causal LM (a PTPModel verifies through its frozen base). With
            ``use_drafter=False`` it may be any causal LM too: plain sampling, one token per call, with the engine's
            fixed-size cache and captured step (how ``ptp pregenerate`` samples).
        input_ids, attention_mask: ``[B, S]`` left-padded prompts (mask 1 on real tokens); lists are taken too (a
            list of ids: one prompt; a list of equally long lists: a batch). On another device they are moved.
        max_new_tokens: new tokens per row at most.
        do_sample, temperature, top_k, top_p: the sampling configuration as in :func:`ptp.sample_autoregressive`:
            those not given are plain (sampling, temperature 1, top_k 0 or None: off, top_p 1.0 or None: off), its
            bins in the order the drafter was trained for (``model.config.sampling.order``). Or pass ``sampling``
            instead. With none of the five: the configuration the drafter was trained for, ``model.config.sampling``
            (with a separate ``drafter``: its configuration).
        eos_token_id, pad_token_id: a row stops after EOS and is padded with ``pad_token_id`` (default: the model's
            generation config; pad falls back to the first EOS id).
        auxiliaries: float ``[B, max_new_tokens]`` in [0, 1): u of each new token. Default: drawn uniformly on the
            CPU from ``seed`` / ``generator``.
        streamer: an object with ``put(tokens)`` and ``end()`` (e.g. ``transformers.TextStreamer``); batch size 1.
        on_commit: called on the host after the prefill and after every step with the tokens each row committed in
            that call (a list of token ids per row, empty for a row that committed none); it returns the rows to stop
            now (an iterable of row indices; empty or None: none), whose length is then what they have committed.
            Any batch size; what a server streams through, and how it drops a row whose client went away.
        use_drafter: False runs the same engine as plain autoregressive decoding (one token per call).
        auxiliary_budget: auxiliary slots per call (default: twice the window length on a GPU; on a CPU, where
            every position costs compute, the budget of most tokens per second under the call cost measured on
            this machine, once, and the drafter's acceptance histogram; see :func:`ptp.decode.budget.slot_budget`).
        max_draft_length: the longest group of slots, hence pending drafts + 1 (default: the window length, or on a
            CPU with the default budget the length chosen with it).
        drafter: a separate drafter (METHOD.md section 3): a :class:`ptp.PTPModel` around its own causal LM with the
            teacher's vocabulary, which reads the context itself with its own cache. Each step the teacher verifies
            the pending block and the drafter runs ``[block | slots]`` with the same positions, masks and u's; the
            output is still exactly the teacher's plain sampling. ``num_calls`` counts steps (one teacher and one
            drafter pass each).
        cuda_graph: capture the decoding step as a CUDA graph and replay it (default: True on a CUDA device). The
            graph, its cache and buffers are kept for the model for later calls of the same batch size, settings
            and cache size (the last few are kept); the output is the same as without. A model whose step cannot
            be captured (its forward waits on the host) decodes eagerly, with a warning.
        compile: compile the decoding step with ``torch.compile`` (inductor; needs a C++ compiler on a CPU, Triton on
            a GPU): fused kernels instead of one per operation. Each call shape (batch size, cache capacity, slots)
            is compiled once per process, which takes from seconds to a few minutes, and reused by later calls; on a
            GPU the compiled step is then captured as usual. The output is the same as without.
        match_drafting: with ``use_drafter=False`` and a :class:`ptp.PTPModel` (or a ``drafter``), lay every call out
            as the drafting call of the same settings (``auxiliary_budget``, ``max_draft_length``) would be, its slots
            left empty (with ``compile``: computed as when drafting and their drafts discarded, so that the compiler
            fuses one program alike): a token's logits then round exactly as when drafting, so that in 16 bits the
            text equals the drafting run's (a one-position call rounds differently, and near-ties flip). Default:
            True in 16 bits, False in 32 (one position a call, the fastest plain decoding), where rounding rarely
            flips a token.
    Returns:
        :class:`ptp.decode.inputs.GenerationOutput` with the tokens and the per-call statistics.
    """
    verifier, asked = None, model
    if drafter is not None:
        verifier = model.base_model if isinstance(model, PTPModel) else model
        check_drafter(verifier, drafter)
        model = drafter
    elif not isinstance(model, PTPModel):
        if use_drafter:
            raise TypeError(
                f"model must be a PTPModel (wrap it: ptp.PTPModel(model)), or pass a drafter, or use_drafter=False to "
                f"decode a plain causal LM one token per call; got {type(model).__name__}"
            )
        use_mask_attention(model)
    trained = model.config.sampling if isinstance(model, PTPModel) else None
    given = sampling
    sampling = sampling_from_arguments(sampling, do_sample, temperature, top_k, top_p, default=trained)
    if given is None and trained is not None:  # u picks tokens in the order of the bins that the drafter learned
        sampling = replace(sampling, order=trained.order)
    teacher = verifier if verifier is not None else model.base_model if isinstance(model, PTPModel) else model
    device = model.device
    limits = [n for n in (context_length(model), context_length(teacher)) if n is not None]
    max_positions = min(limits) if limits else None
    vocab = min(vocabulary_size(model), vocabulary_size(teacher))
    input_ids, mask = check_prompt(input_ids, attention_mask, max_new_tokens, max_positions, vocab, device)
    for network in {id(m): m for m in (teacher, getattr(model, "base_model", model))}.values():
        check_sliding_window(network.config, input_ids.shape[1] + max_new_tokens)
    batch, width = input_ids.shape
    if streamer is not None and batch != 1:
        raise ValueError("a streamer needs batch size 1")
    u = prepare_auxiliaries(auxiliaries, seed, generator, batch, max_new_tokens, device)
    eos, pad = resolve_stop_tokens(eos_token_id, pad_token_id, teacher)
    pad = pad if pad is not None else 0
    for name, value, least in (("max_draft_length", max_draft_length, 1), ("auxiliary_budget", auxiliary_budget, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            raise ValueError(f"{name} must be an integer >= {least} or None, got {value!r}")
    if cuda_graph and not graphs.can_capture(device):
        raise ValueError(f"cuda_graph needs a CUDA device; the model is on {device}")
    use_graph = graphs.can_capture(device) if cuda_graph is None else cuda_graph
    # 16 bits: a token's logits round by the shape of the call that computes them, so plain decoding of a drafter
    # lays its calls out as drafting would (the same positions, slots left empty): one token a call, the same text.
    # A compiled step is another program for another computation, so there the slots compute as when drafting.
    if match_drafting is None:
        match_drafting = teacher.dtype.itemsize < 4
    matched = not use_drafter and match_drafting and isinstance(model, PTPModel)
    slots = "draft" if use_drafter else "discard" if matched and compile else "empty"
    if use_drafter or matched:
        cost = None
        if device.type == "cpu" and auxiliary_budget is None:  # measured once per machine and model shape
            cost = call_cost(asked, drafter)
        budget, pending_size = slot_budget(model.config.window_length, device, auxiliary_budget, max_draft_length,
                                           histogram=model.config.acceptance_histogram, call_cost=cost)  # fmt: skip
    else:
        pending_size, budget = 1, 0
    # There are pending_size groups of at most pending_size slots: a larger budget would only add dead slots.
    pending_size = min(pending_size, max(budget, 1))
    budget = min(budget, pending_size * pending_size)
    # Room for the prompt, every new token, and one call's block and slots (rows' holes are compacted away); a
    # captured step's capacity is rounded up, so that later prompts of similar length replay it.
    capacity = width + max_new_tokens + pending_size + budget
    if use_graph or compile:  # a captured or compiled step is reused by later calls of the same capacity
        capacity = -(-capacity // CAPACITY_STEP) * CAPACITY_STEP
    weights = hash(tuple(p.data_ptr() for m in (model, verifier) if m is not None for p in m.parameters()))

    def make_run(rows: int) -> _Run:
        """A run for ``rows`` rows: with a captured step, the one kept for these settings, else a new one."""
        settings = (model, verifier, rows, capacity, sampling, eos, pad, max_new_tokens, pending_size, budget,
                    slots, max_positions, device, use_graph, compile)  # fmt: skip
        if not use_graph:
            return _Run(*settings)
        key = (id(verifier), rows, capacity, sampling, tuple(eos.tolist()), pad, max_new_tokens, pending_size,
               budget, slots, max_positions, weights, compile)  # fmt: skip
        return graphs.kept_run(model, key, lambda: _Run(*settings))

    def smaller(rows: int) -> _Run:
        run = make_run(rows)
        run.model, run.verifier = model, verifier
        return run

    run = make_run(batch)
    run.reset(model, verifier, u, mask)
    try:
        new, lengths, accept_lengths, calls = _decode(run, input_ids, mask, streamer, smaller, on_commit)
    finally:
        run.model = run.verifier = None
    return GenerationOutput(
        sequences=torch.cat([input_ids, new], dim=1),
        lengths=lengths,
        prompt_width=width,
        num_calls=calls,
        accept_lengths=accept_lengths,
    )


def _decode(run: _Run, input_ids: torch.Tensor, mask: torch.Tensor, streamer, smaller, on_commit) -> tuple:
    """The loop: a prefill, then steps until every row has stopped. Returns the new tokens ``[B, max_new_tokens]``,
    the new-token counts ``[B]``, the commits of each row's calls and the number of calls.

    When at most half of a run's rows are still running, they move to a run of half the batch or less
    (``smaller(batch)`` makes or finds it), so that finished rows stop costing work; not with ``on_commit``, whose
    caller manages its rows itself.
    """
    batch = input_ids.shape[0]
    accept_lengths: list[list[int]] = [[1] for _ in range(batch)]
    new = torch.full((batch, run.max_new_tokens), run.pad, dtype=torch.int64, device=input_ids.device)
    lengths = torch.zeros(batch, dtype=torch.int64, device=input_ids.device)
    rows = torch.arange(batch, device=input_ids.device)  # the output row of each row of the run
    if streamer is not None:
        streamer.put(input_ids.cpu())
    _prefill(run, input_ids, mask)
    calls, streamed = 1, 1
    if streamer is not None:
        streamer.put(run.new[0, :1].cpu())
    alive = bool(run.running.any())
    done = [0] * batch  # tokens of each row handed to on_commit
    if on_commit is not None:
        alive = _hand_over(run, on_commit, done, [1] * batch) and alive
    while alive:
        run.step()
        calls += 1
        # The one host sync of the step: how far the cache advanced, who is still running, what each row committed.
        stats = run.stats.tolist()
        run.filled += stats[0]
        alive, counts, running = bool(stats[1]), stats[2 : 2 + run.batch], stats[2 + run.batch :]
        for b, n in zip(rows.tolist(), counts, strict=True):
            if n:
                accept_lengths[b].append(n)
        if streamer is not None and counts[0]:
            streamer.put(run.new[0, streamed : streamed + counts[0]].cpu())
            streamed += counts[0]
        if on_commit is not None:
            alive = _hand_over(run, on_commit, done, counts) and alive
        if alive and on_commit is None and sum(running) <= run.batch // 2:
            _collect(run, rows, new, lengths)
            size = 1 << (sum(running) - 1).bit_length()  # a power of two, so that few shapes are ever captured
            stopped = [b for b, r in enumerate(running) if not r]
            keep = torch.tensor(sorted([b for b, r in enumerate(running) if r] + stopped[: size - sum(running)]),
                                device=rows.device)  # fmt: skip
            successor = smaller(size)
            successor.adopt(run, keep)
            run.model = run.verifier = None
            run, rows = successor, rows[keep]
    if streamer is not None:
        streamer.end()
    _collect(run, rows, new, lengths)
    run.model = run.verifier = None
    return new, lengths, accept_lengths, calls


def _collect(run: _Run, rows: torch.Tensor, new: torch.Tensor, lengths: torch.Tensor) -> None:
    """Copy the run's tokens and counts into the output rows ``rows``."""
    new[rows] = run.new[:, : new.shape[1]]
    lengths[rows] = run.committed


def _hand_over(run: _Run, on_commit, done: list[int], counts: list[int]) -> bool:
    """Give each row's newly committed tokens to ``on_commit`` and stop the rows it returns; ``done`` (tokens handed
    over per row) advances. Returns False when the rows it stopped were the last ones running."""
    low, high = min(done), max(d + n for d, n in zip(done, counts, strict=True))
    # A second read from the device in this step, made only for on_commit: the stats hold the counts, not the tokens.
    window = run.new[:, low:high].tolist()
    rows = [window[b][d - low : d - low + n] for b, (d, n) in enumerate(zip(done, counts, strict=True))]
    for b, n in enumerate(counts):
        done[b] += n
    stop = sorted(set(on_commit(rows) or ()))
    if not stop:
        return True
    run.running[torch.tensor(stop, device=run.running.device)] = False  # in place: a captured step reads it
    return bool(run.running.any())


def _prefill(run: _Run, prompt: torch.Tensor, mask: torch.Tensor) -> None:
    """The prompt through the teacher, and one group of slots after its last token (whose hypothesis is certain)."""
    batch, width = prompt.shape
    device = prompt.device
    slots = min(run.budget, run.pending_size)
    run.use_columns(width + slots)
    positions = (mask.long().cumsum(dim=1) - 1).clamp(min=0)
    index = torch.arange(slots, device=device).expand(batch, -1)
    group = torch.zeros_like(index)
    parent = torch.full_like(index, width - 1)
    # Only the last prompt position's logits and the slots' are used: a long prompt's others are never computed.
    block_logits, slot_logits = run.forward(prompt, mask, positions, parent, group, index, targets=index,
                                            logits_to_keep=1 + slots)  # fmt: skip
    run.cache_valid[:, :width] = mask
    run.length.fill_(width)
    run.filled = width
    first = pick(run.u[:, 0], block_logits[:, -1], run.sampling)
    run.new[:, 0] = first
    run.committed += 1
    run.last_position += 1
    run.running &= ~torch.isin(first, run.eos) & (run.committed < run.max_new_tokens)
    _set_pending(run, *_next_pending(run, first, slot_logits, index, torch.zeros(batch, 1, dtype=torch.long,
                 device=device), torch.full((batch, 1), slots, device=device)))  # fmt: skip


def _set_pending(run: _Run, pending, valid, confidence) -> None:
    run.pending.copy_(pending)
    run.pending_valid.copy_(valid)
    run.confidence.copy_(confidence)


def _next_pending(run: _Run, decided, slot_logits, targets, start, lengths):
    """The next block: the token the teacher just decided, then the drafts of the live group's slots 1..L-1."""
    size = run.pending_size
    j = run.j
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
    valid = j < (length.clamp(min=1) if run.slots == "draft" and slot_logits.shape[1] else 1)
    return pending, valid, confidence


@functools.cache
def compiled_advance():
    """:func:`_advance` compiled by ``torch.compile`` (inductor, static shapes): a program per call shape, made on
    the first step of that shape and kept for the process (up to :data:`COMPILED_SHAPES` shapes)."""
    compiled = torch.compile(_advance, dynamic=False)

    def advance(run: _Run) -> None:
        # dynamo checks its recompile limit when a call is traced: the engine's limit holds inside its own calls
        # alone, and the process's setting stays as the user left it
        with torch._dynamo.config.patch(recompile_limit=max(torch._dynamo.config.recompile_limit, COMPILED_SHAPES)):
            compiled(run)

    return advance


def _advance(run: _Run) -> None:
    """Verify the pending drafts, commit, and take the next drafts from the live group: the step, on the device
    alone, reading and writing ``run``'s buffers in place (so that it can be captured and replayed)."""
    pending, pending_valid = run.pending, run.pending_valid
    j = run.j
    weights = hypothesis_weights(run.confidence)
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
    columns = (run.committed.unsqueeze(1) + j).clamp(max=run.new.shape[1] - 1)
    run.new.scatter_(1, columns, torch.where(take, teacher, run.new.gather(1, columns)))
    was_running = run.running.clone()
    run.committed += count
    run.last_position += count
    run.running &= ~(is_eos & take).any(dim=1) & (run.committed < run.max_new_tokens)

    # The cache keeps the block up to the longest accepted run of the rows still running; its other columns (and
    # the slots') are overwritten by the next call. Shorter rows keep holes there. A block token is the row's text
    # if it is x_0 or an accepted draft whose token was committed (a row's valid columns never outnumber its prompt
    # and new tokens, which is what the capacity allows for).
    kept = torch.where(was_running, accepted, 0).max() + 1
    committed_before = torch.cat([was_running.unsqueeze(1), take[:, :-1]], dim=1)
    cache_columns = (run.length + j).clamp(max=run.capacity - 1).expand(pending.shape[0], -1)
    run.cache_valid.scatter_(1, cache_columns, offered & pending_valid & committed_before & (j < kept))
    run.length += kept
    run.stats.copy_(torch.cat([kept.view(1), run.running.any().view(1).long(), count, run.running.long()]))

    decided = teacher.gather(1, accepted.unsqueeze(1)).squeeze(1)
    live_start = start.gather(1, accepted.unsqueeze(1))
    live_length = lengths.gather(1, accepted.unsqueeze(1))
    _set_pending(run, *_next_pending(run, decided, slot_logits, targets, live_start, live_length))
