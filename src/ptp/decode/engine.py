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

Rows leave the batch when they stop, and may join it between calls (``join``: how ``ptp serve`` batches requests
that arrive at different times). A joining row's prompt is prefilled in a run of its own, and its cache columns and
state are copied into a place of the running batch whose row has stopped: the rows already running go on, nothing of
theirs computed again. Its tokens are exactly those it gets alone, because everything that decides them is per row:
its u's, its positions, the cache columns it sees (``cache_valid``; the columns before the batch's length that it
does not fill are holes, compacted like any other), and the acceptance of its drafts.
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
    left_pad,
    prepare_auxiliaries,
    resolve_stop_tokens,
    sampling_from_arguments,
    vocabulary_size,
)
from ptp.model.config import PICK_MODES
from ptp.model.embeddings import NULL_AUXILIARY
from ptp.model.ptp import PTPModel, check_drafter, prepare_base, teacher_logits
from ptp.sampling import SamplingConfig, check_auxiliaries, pick, probabilities

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
        # New tokens of each row at most: max_new_tokens, or fewer for a row that joined with fewer u's.
        self.limit = torch.full((batch,), max_new_tokens, dtype=torch.int64, device=device)
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
        # the columns kept, then the commits of each row and whether each row is running
        self.stats = torch.zeros(1 + 2 * batch, dtype=torch.int64, device=device)
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
        self.limit.fill_(self.max_new_tokens)
        self.running.fill_(True)
        self.last_position.copy_(mask.long().sum(dim=1) - 1)
        self.length.zero_()
        self.cache_valid.zero_()
        self.filled = 0

    def adopt(self, source: _Run, rows: torch.Tensor) -> None:
        """Continue ``source``'s generation for its rows ``rows`` (int ``[self.batch]``) in this run's buffers, in
        place (a captured graph keeps reading them): how a batch moves to a run of fewer places when its rows finish,
        or of more places, a longer cache or more new tokens when rows join it."""
        self.model, self.verifier = source.model, source.verifier
        self._copy_rows(source, rows, torch.arange(self.batch, device=rows.device))
        self.length.copy_(source.length)
        self.filled = source.filled

    def place(self, source: _Run, rows: torch.Tensor, places: torch.Tensor) -> None:
        """Continue ``source``'s rows ``rows`` at this run's places ``places`` (int tensors of one length), in place;
        the other places go on as they were: how rows prefilled on their own join a running batch. The rows' columns
        stay where they are, so this run's length moves past the source's if it was shorter (its other rows then
        have holes there, which a compaction removes)."""
        self._copy_rows(source, rows, places)
        if source.filled > self.filled:
            self.filled = source.filled
            self.length.fill_(self.filled)

    def _copy_rows(self, source: _Run, rows: torch.Tensor, places: torch.Tensor) -> None:
        """Make the state and the cache of this run's places ``places`` those of ``source``'s rows ``rows``, in place.
        Only the columns that the source has written are copied; where this run's buffers are wider (a longer cache,
        more new tokens), the further columns of those places are emptied."""
        for name, empty in (("u", NULL_AUXILIARY), ("new", self.pad), ("committed", 0), ("limit", 0),
                            ("running", False), ("last_position", 0), ("cache_valid", False), ("pending", 0),
                            ("pending_valid", False), ("confidence", 0.0)):  # fmt: skip
            mine, theirs = getattr(self, name), getattr(source, name).index_select(0, rows)
            if name == "cache_valid":
                theirs = theirs[:, : source.filled]
            if mine.dim() == 2 and mine.shape[1] > theirs.shape[1]:
                mine.index_fill_(0, places, empty)
                mine = mine[:, : theirs.shape[1]]
            mine.index_copy_(0, places, theirs)
        for mine, theirs in ((self.cache, source.cache), (self.verifier_cache, source.verifier_cache)):
            if mine is not None:
                mine.copy_rows(theirs, rows, places, source.filled)

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
    join=None,
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
        join: called on the host after the prefill and after every step, after ``on_commit``: the rows that join the
            batch now, as ``{row: (prompt, auxiliaries)}`` (empty or None: none). ``prompt``: its token ids (a list,
            or an int tensor ``[S]``); ``auxiliaries``: float ``[n]`` in [0, 1), the u of each of its new tokens, n
            at most. ``row`` numbers it in ``on_commit``'s lists: the number of a row that has stopped (which then
            leaves for good) or one past the rows so far. The joining rows' prompts are prefilled together, on their
            own (one call), and their caches put into the running batch, whose rows go on without being computed
            again; each joined row gets exactly the tokens of its prompt decoded alone with its u's. Sampling and
            stop tokens are the batch's. Needs ``on_commit``: the output holds the rows of ``input_ids``, a joined
            row's tokens reach the caller through ``on_commit`` only. How a server lets requests join a batch.
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
            graph, its cache and buffers are kept for the model for later calls of the same batch size, settings,
            cache size and room for new tokens (both rounded up to multiples of :data:`CAPACITY_STEP`; the last few
            are kept); the output is the same as without. A model whose step cannot be captured (its forward waits
            on the host) decodes eagerly, with a warning.
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
        prepare_base(model)
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
    networks = {id(m): m for m in (teacher, getattr(model, "base_model", model))}.values()
    for network in networks:
        check_sliding_window(network.config, input_ids.shape[1] + max_new_tokens)
    batch, width = input_ids.shape
    if streamer is not None and (batch != 1 or join is not None):
        raise ValueError("a streamer needs batch size 1 (and no rows joining)")
    if join is not None and on_commit is None:
        raise ValueError("join needs on_commit: a joining row's tokens reach the caller through it only")
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
    tokens = max_new_tokens  # the run's room for new tokens a row; each row stops at max_new_tokens all the same
    if use_graph or compile:  # a captured or compiled step is reused by later calls of the same shape
        capacity, tokens = _rounded(capacity), _rounded(max_new_tokens)
    weights = hash(tuple(p.data_ptr() for m in (model, verifier) if m is not None for p in m.parameters()))

    def make_run(rows: int, capacity: int, tokens: int, kept: bool = True) -> _Run:
        """A run of ``rows`` places, ``capacity`` cache columns and ``tokens`` new tokens a row at most: with a
        captured step, the one kept for these settings, else a new one (always for a run that only prefills rows
        that join, ``kept=False``)."""
        settings = (model, verifier, rows, capacity, sampling, eos, pad, tokens, pending_size, budget, slots,
                    max_positions, device, use_graph, compile)  # fmt: skip
        if use_graph and kept:
            key = (id(verifier), rows, capacity, sampling, tuple(eos.tolist()), pad, tokens, pending_size, budget,
                   slots, max_positions, weights, compile)  # fmt: skip
            run = graphs.kept_run(model, key, lambda: _Run(*settings))
        else:
            run = _Run(*settings)
        run.model, run.verifier = model, verifier
        return run

    def joining() -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """The rows that ``join`` adds, checked as the batch's prompts and auxiliaries are, on the host (the batch pads
        them there and moves them to the device together)."""
        rows = {}
        for row, (prompt, aux) in (join() or {}).items():
            if isinstance(row, bool) or not isinstance(row, int) or row < 0:
                raise ValueError(f"join must number its rows by integers >= 0, got {row!r}")
            if not isinstance(aux, torch.Tensor) or aux.dim() != 1 or not len(aux):
                raise ValueError(f"join's row {row} needs its auxiliaries as a tensor [n], one per new token")
            ids = prompt.view(1, -1) if isinstance(prompt, torch.Tensor) else [list(prompt)]
            ids, _ = check_prompt(ids, None, len(aux), max_positions, vocab, "cpu")
            for network in networks:
                check_sliding_window(network.config, ids.shape[1] + len(aux))
            rows[row] = (ids[0], check_auxiliaries(aux, tuple(aux.shape)).cpu())
        return rows

    run = make_run(batch, capacity, tokens)
    run.reset(model, verifier, u, mask)
    run.limit.fill_(max_new_tokens)
    try:
        new, lengths, accept_lengths, calls = _decode(run, input_ids, mask, make_run, streamer, on_commit,
                                                      None if join is None else joining)  # fmt: skip
    finally:
        run.model = run.verifier = None
    return GenerationOutput(
        sequences=torch.cat([input_ids, new[:, :max_new_tokens]], dim=1),
        lengths=lengths,
        prompt_width=width,
        num_calls=calls,
        accept_lengths=accept_lengths,
    )


def _power_of_two(rows: int) -> int:
    """The places of a run for ``rows`` rows: a power of two, so that few shapes are ever made (and captured)."""
    return 1 << (rows - 1).bit_length()


def _rounded(columns: int) -> int:
    """``columns`` rounded up to a multiple of :data:`CAPACITY_STEP`."""
    return -(-columns // CAPACITY_STEP) * CAPACITY_STEP


class _Batch:
    """The rows of a generation at the places of its run, between calls: which row sits where, what the host knows of
    each (tokens committed, running), and how rows join and leave.

    Rows are numbered by the caller (the rows of ``input_ids`` by their index). The first rows are prefilled in the
    run itself. Rows that join later are prefilled in a run of their own, whose cache holds no more than their
    prompts, and their cache and state are copied into places whose rows have stopped (:meth:`_Run.place`): the rows
    already running go on where they are, and nothing of theirs is computed again. The batch moves to another run
    (:meth:`_Run.adopt`) when joining rows need more places, cache columns or new tokens than its run has, and when at
    most half of its places hold running rows; places come in powers of two and capacities in steps of
    :data:`CAPACITY_STEP`, so that few shapes are made.

    ``make_run(rows, capacity, tokens, kept=True)`` makes (or finds) a run; ``leave(run, places, rows)`` is called
    before rows leave their places for good, so that the caller can copy what it keeps of them.
    """

    def __init__(self, run: _Run, make_run, leave):
        self.run, self.make_run, self.leave = run, make_run, leave
        self.row_at: list[int | None] = list(range(run.batch))  # the row at each place; None: a free place
        self.committed = [1] * run.batch  # new tokens of the row at each place: its prefill committed one
        self.running = [bool(r) for r in run.running.tolist()]
        self.size = run.batch  # one more than the largest row number so far: the length of on_commit's lists

    @property
    def alive(self) -> bool:
        return any(self.running)

    def step(self) -> list[int]:
        """One step of the run; returns the tokens that the row at each place committed in it."""
        run = self.run
        run.step()
        # The one host sync of the step: how far the cache advanced, who is still running, what each row committed.
        stats = run.stats.tolist()
        run.filled += stats[0]
        counts = stats[1 : 1 + run.batch]
        self.running = [bool(r) for r in stats[1 + run.batch :]]
        self.committed = [c + n for c, n in zip(self.committed, counts, strict=True)]
        return counts

    def stop(self, rows) -> None:
        """Stop the rows numbered ``rows`` (rows that have stopped or left already are passed over)."""
        named = set(rows)
        places = [p for p, row in enumerate(self.row_at) if row in named and self.running[p]]
        if places:
            self.run.running[torch.tensor(places, device=self.run.running.device)] = False  # a captured step reads it
            for p in places:
                self.running[p] = False

    def join(self, rows: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> list[int]:
        """Add ``rows`` (``{row: (prompt ids [S], u [n])}`` on the host, n the row's new tokens at most) to the batch:
        prefill them together in a run of their own and place them where rows have stopped. Returns their places."""
        taken = {row for row, running in zip(self.row_at, self.running, strict=True) if running} & rows.keys()
        if taken:
            raise ValueError(f"row {min(taken)} cannot join: it is still running")
        self._leave([p for p, row in enumerate(self.row_at) if row in rows])  # a number given again: its row has left
        run = self.run
        need = max(len(ids) + len(u) for ids, u in rows.values()) + run.pending_size + run.budget
        tokens = max(len(u) for _, u in rows.values())
        live = sum(self.running)
        if live + len(rows) > run.batch or need > run.capacity or tokens > run.max_new_tokens:
            self._move(max(run.batch, _power_of_two(live + len(rows))), max(run.capacity, _rounded(need)),
                       max(run.max_new_tokens, _rounded(tokens)))  # fmt: skip
            run = self.run
        places = [p for p, running in enumerate(self.running) if not running][: len(rows)]
        self._leave(places)
        device = run.running.device
        # Padded on the host, then three copies to the device, however many rows join.
        ids, mask = left_pad([prompt for prompt, _ in rows.values()], run.pad)
        u = torch.full((len(rows), run.max_new_tokens), NULL_AUXILIARY)
        for i, (_, aux) in enumerate(rows.values()):
            u[i, : len(aux)] = aux
        ids, mask, u = ids.to(device), mask.to(device), u.to(device)
        # The prefill writes the prompts and one group of slots: its run needs no more cache than that.
        entry = self.make_run(
            len(rows), ids.shape[1] + min(run.budget, run.pending_size), run.max_new_tokens, kept=False
        )
        entry.reset(run.model, run.verifier, u, mask)
        entry.limit.copy_(torch.tensor([len(aux) for _, aux in rows.values()], device=device))
        _prefill(entry, ids, mask)
        run.place(entry, torch.arange(len(rows), device=device), torch.tensor(places, device=device))
        entry.model = entry.verifier = None
        for p, row, running in zip(places, rows, entry.running.tolist(), strict=True):
            self.row_at[p], self.committed[p], self.running[p] = row, 1, running
        self.size = max(self.size, max(rows) + 1)
        return places

    def shrink(self) -> None:
        """When at most half of the places hold running rows, move these to a run of half the places or fewer, so
        that stopped rows stop costing work."""
        live = sum(self.running)
        if live and live <= self.run.batch // 2:
            self._move(_power_of_two(live), self.run.capacity, self.run.max_new_tokens)

    def finish(self) -> None:
        """Every row leaves; the run lets go of the models (a kept run must not keep its model alive)."""
        self._leave(list(range(self.run.batch)))
        self.run.model = self.run.verifier = None

    def _move(self, places: int, capacity: int, tokens: int) -> None:
        """Move the running rows to the first places of a run of ``places`` places, ``capacity`` cache columns and
        ``tokens`` new tokens a row; the stopped rows leave."""
        run = self.run
        live = [p for p, running in enumerate(self.running) if running]
        stopped = [p for p, running in enumerate(self.running) if not running]
        self._leave(stopped)
        # The further places copy any rows (a grown run more rows than there are) and are stopped.
        order = live + stopped
        keep = torch.tensor([order[i % len(order)] for i in range(places)], device=run.running.device)
        successor = self.make_run(places, capacity, tokens)
        successor.adopt(run, keep)
        successor.running[len(live) :] = False
        run.model = run.verifier = None
        free = places - len(live)
        self.run = successor
        self.row_at = [self.row_at[p] for p in live] + [None] * free
        self.committed = [self.committed[p] for p in live] + [0] * free
        self.running = [True] * len(live) + [False] * free

    def _leave(self, places: list[int]) -> None:
        """The rows at ``places`` leave them for good (``leave`` sees them first)."""
        places = [p for p in places if self.row_at[p] is not None]
        if places:
            self.leave(self.run, places, [self.row_at[p] for p in places])
            for p in places:
                self.row_at[p] = None


def _decode(run: _Run, input_ids: torch.Tensor, mask: torch.Tensor, make_run, streamer, on_commit, join) -> tuple:
    """The loop: a prefill, then steps until every row has stopped, rows that ``join`` adds between calls included
    (:class:`_Batch`). Returns the new tokens ``[B, max_new_tokens]`` of the rows of ``input_ids``, their new-token
    counts ``[B]``, the commits of each of their calls, and the number of calls (joining rows' prefills included).

    When at most half of a run's rows are still running, they move to a run of half the batch or less, so that
    finished rows stop costing work.
    """
    batch = input_ids.shape[0]
    accept_lengths: list[list[int]] = [[1] for _ in range(batch)]
    new = torch.full((batch, run.max_new_tokens), run.pad, dtype=torch.int64, device=input_ids.device)
    lengths = torch.zeros(batch, dtype=torch.int64, device=input_ids.device)
    own = set(range(batch))  # rows still those of input_ids (a joining row may take a stopped row's number)

    def collect(source: _Run, places: list[int], rows: list[int]) -> None:
        """Copy the tokens and counts of the rows of ``input_ids`` among ``rows`` (at ``places`` of ``source``)."""
        pairs = [(p, row) for p, row in zip(places, rows, strict=True) if row in own]
        if pairs:
            at = torch.tensor([p for p, _ in pairs], device=new.device)
            to = torch.tensor([row for _, row in pairs], device=new.device)
            new[to] = source.new[at, : new.shape[1]]
            lengths[to] = source.committed[at]
            own.difference_update(row for _, row in pairs)

    if streamer is not None:
        streamer.put(input_ids.cpu())
    _prefill(run, input_ids, mask)
    held = _Batch(run, make_run, collect)
    try:
        calls, streamed = 1, 1
        if streamer is not None:
            streamer.put(run.new[0, :1].cpu())
        if on_commit is not None:
            _hand_over(held, on_commit, [1] * batch)
        calls += _admit(held, join, on_commit)
        while held.alive:
            counts = held.step()
            calls += 1
            for row, n in zip(held.row_at, counts, strict=True):
                if n and row in own:
                    accept_lengths[row].append(n)
            if streamer is not None and counts[0]:
                streamer.put(held.run.new[0, streamed : streamed + counts[0]].cpu())
                streamed += counts[0]
            if on_commit is not None:
                _hand_over(held, on_commit, counts)
            calls += _admit(held, join, on_commit)
            held.shrink()
        if streamer is not None:
            streamer.end()
    finally:
        held.finish()
    return new, lengths, accept_lengths, calls


def _hand_over(held: _Batch, on_commit, counts: list[int]) -> None:
    """Give the tokens that each row committed in the last call (``counts`` per place) to ``on_commit``, and stop the
    rows it returns."""
    handed: list[list[int]] = [[] for _ in range(held.size)]
    places = [p for p, n in enumerate(counts) if n]
    if places:
        low = min(held.committed[p] - counts[p] for p in places)
        high = max(held.committed[p] for p in places)
        # A second read from the device in this step, for on_commit only: the stats hold the counts, not the tokens.
        window = held.run.new[:, low:high].tolist()
        for p in places:
            handed[held.row_at[p]] = window[p][held.committed[p] - counts[p] - low : held.committed[p] - low]
    held.stop(on_commit(handed) or ())


def _admit(held: _Batch, join, on_commit) -> int:
    """Add the rows that ``join`` returns (one prefill) and hand their first tokens to ``on_commit``. Returns the
    calls made."""
    joining = join() if join is not None else None
    if not joining:
        return 0
    places = set(held.join(joining))
    _hand_over(held, on_commit, [int(p in places) for p in range(held.run.batch)])
    return 1


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
    run.running &= ~torch.isin(first, run.eos) & (run.committed < run.limit)
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
    room = (run.limit - run.committed).unsqueeze(1)
    take = offered & through_eos & (j < room) & run.running.unsqueeze(1)
    count = take.long().sum(dim=1)
    columns = (run.committed.unsqueeze(1) + j).clamp(max=run.new.shape[1] - 1)
    run.new.scatter_(1, columns, torch.where(take, teacher, run.new.gather(1, columns)))
    was_running = run.running.clone()
    run.committed += count
    run.last_position += count
    run.running &= ~(is_eos & take).any(dim=1) & (run.committed < run.limit)

    # The cache keeps the block up to the longest accepted run of the rows still running; its other columns (and
    # the slots') are overwritten by the next call. Shorter rows keep holes there. A block token is the row's text
    # if it is x_0 or an accepted draft whose token was committed (a row's valid columns never outnumber its prompt
    # and new tokens, which is what the capacity allows for).
    kept = torch.where(was_running, accepted, 0).max() + 1
    committed_before = torch.cat([was_running.unsqueeze(1), take[:, :-1]], dim=1)
    cache_columns = (run.length + j).clamp(max=run.capacity - 1).expand(pending.shape[0], -1)
    run.cache_valid.scatter_(1, cache_columns, offered & pending_valid & committed_before & (j < kept))
    run.length += kept
    run.stats.copy_(torch.cat([kept.view(1), count, run.running.long()]))

    decided = teacher.gather(1, accepted.unsqueeze(1)).squeeze(1)
    live_start = start.gather(1, accepted.unsqueeze(1))
    live_length = lengths.gather(1, accepted.unsqueeze(1))
    _set_pending(run, *_next_pending(run, decided, slot_logits, targets, live_start, live_length))
