"""ptp.decode.engine: the parallel decoder returns exactly what plain sampling with the same u's returns.

The exactness sweep runs the engine and :func:`ptp.sample_autoregressive` on a copy of the base model taken before
wrapping, over architectures, batch sizes, sampling configurations, EOS in the middle of a row, left-padded prompts
of unequal length, budgets, draft and window lengths, drafter modes and adapter weights. A random drafter rarely
gets a draft accepted, so a second sweep replaces the drafter by an oracle that proposes the reference's own tokens
(some of them corrupted): that is what exercises multi-token acceptance, EOS inside an accepted run, the cut at
``max_new_tokens`` and rows that accept different numbers of drafts in the same call.
"""

from __future__ import annotations

import copy
import itertools
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ptp
from conftest import (
    ARCHITECTURES,
    EOS,
    PAD,
    VOCAB,
    assert_same_tokens,
    left_padded,
    randomize_adapter,
    tiny_base,
    uniform,
    wrap,
    zero_adapter,
)
from ptp.decode import engine, graphs
from ptp.decode.budget import fastest_budget
from ptp.decode.cost import CallCost
from ptp.model import linear
from ptp.model.embeddings import FEATURE_KINDS
from ptp.model.linear import PackedLinear

NEW = 24
SAMPLINGS = {
    "greedy": dict(do_sample=False),
    "T0.7": dict(temperature=0.7),
    "T1": dict(temperature=1.0),
    "T1.5": dict(temperature=1.5),
    "T0.7-k8-p0.9": dict(temperature=0.7, top_k=8, top_p=0.9),
    "T1.5-k20": dict(temperature=1.5, top_k=20),
    "T1-p0.8": dict(temperature=1.0, top_p=0.8),
}
#: Drafter and engine settings; the sweep cycles through them so that every one meets several architectures.
SETTINGS = [
    dict(mode="one_hot", embedding="binary", window_length=4, adapter="random", first_slot_token=True),
    dict(
        mode="categorical",
        embedding="cosine",
        window_length=6,
        auxiliary_budget=5,
        max_draft_length=3,
        u_every_layer=True,
    ),
    dict(mode="independent", embedding="thermometer", window_length=3, auxiliary_budget=16, adapter="zero"),
    dict(mode="one_hot", embedding="interpolation", window_length=8, auxiliary_budget=1, adapter="random"),
    dict(mode="categorical", embedding="mlp", window_length=5, max_draft_length=1, adapter="zero"),
    dict(
        mode="one_hot",
        embedding="float_bits",
        window_length=16,
        auxiliary_budget=12,
        max_draft_length=6,
        first_slot_token=True,
        u_every_layer=True,
    ),
    dict(mode="independent", embedding="binary", window_length=2, adapter="random", first_slot_token=True),
    dict(mode="mode_chain", embedding="binary", window_length=7, auxiliary_budget=10, adapter="random"),
]
PROMPT_LENGTHS = [7, 2, 5]


def _wrapped(arch: str, setting: dict, seed: int = 0):
    """``(model, reference, engine options)`` for one entry of SETTINGS."""
    setting = dict(setting)
    adapter = setting.pop("adapter", "random")
    options = {k: setting.pop(k) for k in ("auxiliary_budget", "max_draft_length") if k in setting}
    model, reference = wrap(tiny_base(arch, seed=seed), lora_rank=4, embedding_size=8, **setting)
    if adapter == "random":
        randomize_adapter(model, seed=seed + 1)
    else:
        zero_adapter(model)
    return model, reference, options


def _eos_in_the_middle(tokens: torch.Tensor) -> int:
    """A token id whose first occurrence in some row is in the middle of it (so that the row stops there)."""
    middle = range(tokens.shape[1] // 3, 2 * tokens.shape[1] // 3)
    for column, row in itertools.product(middle, range(tokens.shape[0])):
        token = int(tokens[row, column])
        if token not in tokens[row, :column].tolist():
            return token
    return int(tokens[0, tokens.shape[1] // 2])


def _reference_with_eos(reference, ids, mask, u, sampling: dict):
    """The reference run with an EOS id that occurs mid-row; returns ``(output, eos)``."""
    free = ptp.sample_autoregressive(
        reference, ids, mask, auxiliaries=u, max_new_tokens=NEW, eos_token_id=[], **sampling
    )
    eos = _eos_in_the_middle(free.new_tokens)
    out = ptp.sample_autoregressive(
        reference, ids, mask, auxiliaries=u, max_new_tokens=NEW, eos_token_id=eos, **sampling
    )
    assert (out.lengths < NEW).any(), "the chosen EOS must stop a row early"
    return out, eos


def assert_well_formed(out: ptp.GenerationOutput, eos: list[int], pad: int, max_new_tokens: int = NEW) -> None:
    """Invariants of every generation: lengths, statistics, EOS only at the end, padding after it."""
    new = out.new_tokens
    assert new.shape[1] == max_new_tokens
    assert ((out.lengths >= 1) & (out.lengths <= max_new_tokens)).all()
    assert ((new >= 0) & (new < VOCAB)).all()
    for b, n in enumerate(out.lengths.tolist()):
        row = new[b].tolist()
        assert sum(out.accept_lengths[b]) == n, "the tokens committed per call must add up to the row's length"
        assert all(k >= 1 for k in out.accept_lengths[b])
        stops = [i for i, t in enumerate(row[:n]) if t in eos]
        assert stops in ([], [n - 1]), f"row {b}: EOS must be the last token, if any ({stops}, length {n})"
        assert stops or n == max_new_tokens, f"row {b} stopped early without an EOS"
        assert row[n:] == [pad] * (max_new_tokens - n), f"row {b}: after its end only padding"
    histogram = out.accept_histogram()
    assert sum(n * c for n, c in enumerate(histogram)) == int(out.lengths.sum())
    assert out.num_calls >= max(len(row) for row in out.accept_lengths)


# ------------------------------------------------------------------------------- the exactness sweep
@pytest.mark.parametrize("sampling_name", SAMPLINGS)
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_engine_equals_plain_sampling(arch, sampling_name):
    sampling = SAMPLINGS[sampling_name]
    case = ARCHITECTURES.index(arch) + list(SAMPLINGS).index(sampling_name)
    seed = 100 + case
    ids, mask = left_padded(PROMPT_LENGTHS, seed=seed)
    u = uniform(len(PROMPT_LENGTHS), NEW, seed=seed)
    for batch, setting in ((3, SETTINGS[case % len(SETTINGS)]), (1, SETTINGS[(case + 3) % len(SETTINGS)])):
        model, reference, options = _wrapped(arch, setting, seed=seed)
        rows = slice(0, batch) if batch == 3 else slice(1, 2)  # batch 1: the short, left-padded row
        prompt, prompt_mask, aux = ids[rows], mask[rows], u[rows]
        if batch == 1:
            prompt, prompt_mask = prompt[:, -PROMPT_LENGTHS[1] :], prompt_mask[:, -PROMPT_LENGTHS[1] :]
        expected, eos = _reference_with_eos(reference, prompt, prompt_mask, aux, sampling)
        got = model.generate(prompt, prompt_mask, auxiliaries=aux, max_new_tokens=NEW, eos_token_id=eos,
                             **sampling, **options)  # fmt: skip
        assert_same_tokens(got, expected)
        assert_well_formed(got, [eos], PAD)


@pytest.mark.parametrize("sampling_name", ["greedy", "T1", "T0.7-k8-p0.9"])
def test_engine_equals_plain_sampling_with_eager_attention(sampling_name):
    sampling = SAMPLINGS[sampling_name]
    base = tiny_base("llama", seed=7, attn_implementation="eager")
    model, reference = wrap(base, window_length=4, lora_rank=4)
    randomize_adapter(model, seed=7)
    ids, mask = left_padded(PROMPT_LENGTHS, seed=7)
    u = uniform(3, NEW, seed=7)
    expected, eos = _reference_with_eos(reference, ids, mask, u, sampling)
    got = model.generate(ids, mask, auxiliaries=u, max_new_tokens=NEW, eos_token_id=eos, **sampling)
    assert_same_tokens(got, expected)


# ------------------------------------------------------------------------------------- oracle drafter
def _install_oracle(monkeypatch, truth: torch.Tensor, corruption: float, seed: int) -> None:
    """Replace the drafter's read-out by one that knows the reference's tokens ``truth`` ``[B, max_new_tokens]``.

    Each draft is the true token of the new-token index it predicts, replaced by a wrong one with probability
    ``corruption``; confidences are random, so the budget's split across hypotheses varies from call to call. The
    oracle follows the rows when finished rows leave the batch (``_Run.adopt``).
    """
    generator = torch.Generator().manual_seed(seed)
    current = {}  # "rows": the row of ``truth`` of each row of the run that decodes now

    def reset(run, model, verifier, u, mask):
        current["rows"] = torch.arange(u.shape[0])
        original_reset(run, model, verifier, u, mask)

    def adopt(run, source, rows):
        current["rows"] = current["rows"][rows.cpu()]
        original_adopt(run, source, rows)

    def oracle(model, logits, u_target, targets, sampling):
        batch, n = targets.shape
        tokens = truth[current["rows"]].gather(1, targets.cpu().clamp(max=truth.shape[1] - 1))
        wrong = torch.rand(batch, n, generator=generator) < corruption
        shifted = (tokens + torch.randint(1, VOCAB, (batch, n), generator=generator)) % VOCAB
        confidence = 0.05 + 0.9 * torch.rand(batch, n, generator=generator)
        return torch.where(wrong, shifted, tokens).to(logits.device), confidence.to(logits.device)

    original_reset, original_adopt = engine._Run.reset, engine._Run.adopt
    monkeypatch.setattr(engine._Run, "reset", reset)
    monkeypatch.setattr(engine._Run, "adopt", adopt)
    monkeypatch.setattr(engine, "_drafts", oracle)


ORACLE_RUNS = [  # (corruption, engine options)
    (0.0, dict(auxiliary_budget=12, max_draft_length=6)),
    (0.15, dict(auxiliary_budget=10, max_draft_length=5)),  # a GPU's default for the tests' window of 5
    (0.4, dict(auxiliary_budget=20, max_draft_length=10)),
    (0.1, dict(auxiliary_budget=3, max_draft_length=3)),
]


@pytest.mark.parametrize("sampling_name", ["greedy", "T1", "T1.5", "T0.7-k8-p0.9"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_engine_equals_plain_sampling_when_drafts_are_accepted(monkeypatch, arch, sampling_name):
    sampling = SAMPLINGS[sampling_name]
    case = ARCHITECTURES.index(arch) * 4 + ["greedy", "T1", "T1.5", "T0.7-k8-p0.9"].index(sampling_name)
    seed = 200 + case
    ids, mask = left_padded(PROMPT_LENGTHS, seed=seed)
    u = uniform(3, NEW, seed=seed)
    setting = SETTINGS[case % len(SETTINGS)] | dict(window_length=5)
    setting = {k: v for k, v in setting.items() if k not in ("auxiliary_budget", "max_draft_length")}
    model, reference, _ = _wrapped(arch, setting, seed=seed)
    expected, eos = _reference_with_eos(reference, ids, mask, u, sampling)
    for corruption, options in ORACLE_RUNS:
        _install_oracle(monkeypatch, expected.new_tokens, corruption, seed)
        got = model.generate(ids, mask, auxiliaries=u, max_new_tokens=NEW, eos_token_id=eos, **sampling, **options)
        assert_same_tokens(got, expected)
        assert_well_formed(got, [eos], PAD)
        if options.get("max_draft_length", 5) > 3 and corruption < 0.3:
            assert got.tokens_per_call > 1.5, f"an oracle drafter must get drafts accepted ({got.accept_lengths})"
        if corruption == 0.15:
            assert len({tuple(row) for row in got.accept_lengths}) > 1, "rows must accept different numbers"


def count_compactions(monkeypatch) -> list[int]:
    """A list that grows by one per cache compaction (an eager run's cache holds exactly the prompt, the new tokens
    and one call, so the rows' holes fill it)."""
    seen, original = [], engine._Run.compact

    def compact(run):
        seen.append(run.filled)
        original(run)

    monkeypatch.setattr(engine._Run, "compact", compact)
    return seen


def count_prefills(monkeypatch) -> list[int]:
    """A list that grows by the rows of each prefill."""
    rows, original = [], engine._prefill

    def prefill(run, prompt, mask):
        rows.append(prompt.shape[0])
        original(run, prompt, mask)

    monkeypatch.setattr(engine, "_prefill", prefill)
    return rows


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_when_the_rows_holes_fill_the_cache_it_is_compacted_and_the_output_stays_exact(monkeypatch, arch):
    """Rows that accept fewer drafts than the longest leave holes; a cache sized for the prompt, the new tokens and one
    call must be compacted and decode exactly as before."""
    seed = 240 + ARCHITECTURES.index(arch)
    ids, mask = left_padded(PROMPT_LENGTHS, seed=seed)
    u = uniform(3, NEW, seed=seed)
    model, reference, _ = _wrapped(arch, dict(mode="one_hot", embedding="binary", window_length=6), seed=seed)
    plain = dict(auxiliaries=u, max_new_tokens=NEW, eos_token_id=[], temperature=1.0)
    expected = ptp.sample_autoregressive(reference, ids, mask, **plain)
    compactions = count_compactions(monkeypatch)
    for corruption in (0.2, 0.4):
        _install_oracle(monkeypatch, expected.new_tokens, corruption, seed)
        got = model.generate(ids, mask, **plain, auxiliary_budget=10)
        assert_same_tokens(got, expected)
        assert_well_formed(got, [], 0)
    assert compactions, "the holes should fill the cache"


def draw_sampling(draw) -> dict:
    """A random sampling configuration as ``generate`` keyword arguments: greedy, a temperature alone, with top-k,
    with top-p, or with both; a filter that is off is spelled None, 0 (top-k) or 1.0 (top-p)."""
    kind = draw(st.sampled_from(["greedy", "T", "T-k", "T-p", "T-k-p"]))
    if kind == "greedy":
        return dict(do_sample=False)
    top_k = draw(st.integers(1, VOCAB + 10)) if "k" in kind else draw(st.sampled_from([None, 0]))
    top_p = draw(st.floats(0.05, 1.0)) if "p" in kind else draw(st.sampled_from([None, 1.0]))
    return dict(temperature=draw(st.sampled_from([0.3, 0.7, 1.0, 1.5, 2.5])), top_k=top_k, top_p=top_p)


@pytest.mark.slow
@settings(max_examples=600)
@given(data=st.data())
def test_engine_equals_plain_sampling_on_random_cases(data):
    """Randomised sweep, float32: every architecture, batches of 1-4 left-padded prompts, every kind of sampling,
    EOS ids, budgets and draft lengths, drafter settings, drafts from a random (or zero) adapter or from a corrupted
    oracle, all at once."""
    draw = data.draw
    arch = draw(st.sampled_from(ARCHITECTURES))
    sampling = draw_sampling(draw)
    lengths = draw(st.lists(st.integers(1, 9), min_size=1, max_size=4))
    new = draw(st.integers(1, 30))
    embedding = draw(st.sampled_from(["binary", "float_bits", "thermometer", "cosine", "interpolation", "mlp"]))
    setting = dict(
        mode=draw(st.sampled_from(["one_hot", "categorical", "independent", "mode_chain"])),
        embedding=embedding,
        window_length=draw(st.integers(1, 12)),
        adapter=draw(st.sampled_from(["random", "random", "random", "zero"])),
        first_slot_token=draw(st.booleans()),
        u_every_layer=embedding in FEATURE_KINDS and draw(st.booleans()),
    )
    options = dict(
        auxiliary_budget=draw(st.one_of(st.none(), st.integers(0, 30))),
        max_draft_length=draw(st.one_of(st.none(), st.integers(1, 12))),
    )
    seed = draw(st.integers(0, 2**16))
    model, reference, _ = _wrapped(arch, setting, seed=seed)
    ids, mask = left_padded(lengths, seed=seed)
    u = uniform(len(lengths), new, seed=seed)
    free = ptp.sample_autoregressive(reference, ids, mask, auxiliaries=u, max_new_tokens=new, eos_token_id=[],
                                     **sampling)  # fmt: skip
    stops = draw(st.lists(st.tuples(st.integers(0, len(lengths) - 1), st.integers(0, new - 1)), max_size=2))
    eos = sorted({int(free.new_tokens[row, column]) for row, column in stops})
    if draw(st.booleans()):  # the same configuration as one SamplingConfig
        sampling = dict(sampling=ptp.SamplingConfig(**sampling))
    common = dict(auxiliaries=u, max_new_tokens=new, eos_token_id=eos, **sampling)
    expected = ptp.sample_autoregressive(reference, ids, mask, **common)
    corruption = draw(st.one_of(st.none(), st.sampled_from([0.0, 0.1, 0.5])))
    with pytest.MonkeyPatch.context() as monkeypatch:
        if corruption is not None:
            _install_oracle(monkeypatch, expected.new_tokens, corruption, seed)
        got = model.generate(ids, mask, **common, **options)
    assert_same_tokens(got, expected)
    assert_well_formed(got, eos, PAD if eos else 0, max_new_tokens=new)


def test_oracle_drafts_commit_an_eos_inside_a_run_and_stop_at_max_new_tokens(monkeypatch):
    model, reference = wrap(tiny_base("llama", seed=3), window_length=8, lora_rank=4)
    ids, mask = left_padded(PROMPT_LENGTHS, seed=3)
    u = uniform(3, NEW, seed=3)
    expected, eos = _reference_with_eos(reference, ids, mask, u, dict(temperature=0.9))
    _install_oracle(monkeypatch, expected.new_tokens, 0.0, seed=3)
    got = model.generate(ids, mask, auxiliaries=u, max_new_tokens=NEW, eos_token_id=eos, temperature=0.9,
                         auxiliary_budget=24, max_draft_length=8)  # fmt: skip
    assert_same_tokens(got, expected)
    stopped = [b for b, n in enumerate(got.lengths.tolist()) if n < NEW]
    ran_out = [b for b, n in enumerate(got.lengths.tolist()) if n == NEW]
    assert stopped and ran_out
    assert any(got.accept_lengths[b][-1] > 1 for b in stopped), "an EOS should arrive inside a multi-token commit"
    # A perfect drafter offers whole groups; at the end of a row the offer exceeds the room left and is cut.
    assert any(sum(got.accept_lengths[b][:-1]) + max(got.accept_lengths[b]) > NEW for b in ran_out)
    assert got.num_calls < NEW // 2


@pytest.mark.slow
def test_a_compiled_step_decodes_exactly_as_plain_sampling(monkeypatch):
    """compile=True runs the same step through torch.compile, one program per call shape: plain decoding and PTP
    with drafts accepted (an oracle's drafts, read out between the compiled regions) give the reference's tokens;
    the compiler's recompile limit is raised inside the engine's calls alone."""
    limit = torch._dynamo.config.recompile_limit
    model, reference, _ = _wrapped("llama", dict(mode="one_hot", embedding="binary", window_length=4), seed=21)
    ids, mask = left_padded([6, 4], seed=21)
    plain = dict(auxiliaries=uniform(2, NEW, seed=21), max_new_tokens=NEW, eos_token_id=[], temperature=1.0)
    expected = ptp.sample_autoregressive(reference, ids, mask, **plain)
    assert_same_tokens(model.generate(ids, mask, **plain, use_drafter=False, compile=True), expected)
    _install_oracle(monkeypatch, expected.new_tokens, 0.2, seed=21)
    drafted = model.generate(ids, mask, **plain, auxiliary_budget=6, max_draft_length=3, compile=True)
    assert_same_tokens(drafted, expected)
    assert drafted.tokens_per_call > 1.5
    assert torch._dynamo.config.recompile_limit == limit


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_in_16_bits_plain_decoding_runs_at_the_drafting_width_and_gives_the_drafting_text(dtype):
    """In 16 bits a token's logits round by the number of positions of the call that computes them, so plain
    decoding of a PTPModel runs every call, and the prefill, at the width of the drafting run with the same settings:
    a prompt decoded alone gets the same text with the drafter and without (calls of one position give another text
    for some of these seeds)."""
    for seed in range(5):
        model, _, _ = _wrapped("llama", dict(mode="one_hot", embedding="binary", window_length=4), seed=40 + seed)
        model = model.to(dtype)
        ids, mask = left_padded([7], seed=seed)
        plain = dict(auxiliaries=uniform(1, NEW, seed=seed), max_new_tokens=NEW, eos_token_id=[], temperature=1.0)
        for options in (dict(auxiliary_budget=6, max_draft_length=3), dict(auxiliary_budget=16)):
            drafted = model.generate(ids, mask, **plain, **options)
            alone = model.generate(ids, mask, **plain, **options, use_drafter=False)
            assert_same_tokens(alone, drafted)
            assert alone.num_calls == NEW


@pytest.mark.slow
def test_in_16_bits_a_compiled_plain_decoding_gives_the_compiled_drafting_text():
    """Compiled, plain decoding computes its slots as drafting does and discards their drafts: one program, which
    the compiler fuses alike (a program with empty slots fuses otherwise, and its text drifts)."""
    for seed in range(2):
        model, _, _ = _wrapped("llama", dict(mode="one_hot", embedding="binary", window_length=4), seed=40 + seed)
        model = model.to(torch.bfloat16)
        ids, mask = left_padded([7], seed=seed)
        plain = dict(auxiliaries=uniform(1, NEW, seed=seed), max_new_tokens=NEW, eos_token_id=[], temperature=1.0,
                     auxiliary_budget=6, max_draft_length=3, compile=True)  # fmt: skip
        drafted = model.generate(ids, mask, **plain)
        alone = model.generate(ids, mask, **plain, use_drafter=False)
        assert_same_tokens(alone, drafted)
        assert alone.num_calls == NEW


def test_on_a_cpu_the_default_budget_is_the_fastest_under_the_call_cost_and_stays_exact(monkeypatch):
    """Where positions cost (a CPU), the default is fastest_budget's under the measured cost: groups of at most its
    length, so a perfect drafter commits that many tokens a call at most; a budget given overrides it."""
    model, reference, _ = _wrapped("llama", dict(mode="one_hot", embedding="binary", window_length=8), seed=16)
    steep = CallCost.linear(fixed=1.0, per_position=0.02)
    monkeypatch.setattr("ptp.decode.engine.call_cost", lambda *models: steep)
    slots, draft = fastest_budget(model.config.acceptance_histogram, steep, 8)
    assert 1 < draft < 8
    ids, mask = left_padded(PROMPT_LENGTHS, seed=16)
    plain = dict(auxiliaries=uniform(3, NEW, seed=16), max_new_tokens=NEW, eos_token_id=[], temperature=1.0)
    expected = ptp.sample_autoregressive(reference, ids, mask, **plain)
    _install_oracle(monkeypatch, expected.new_tokens, 0.0, seed=16)
    default = model.generate(ids, mask, **plain)
    assert_same_tokens(default, expected)
    assert max(max(row) for row in default.accept_lengths) == draft and default.tokens_per_call > 1.5
    larger = model.generate(ids, mask, **plain, auxiliary_budget=16)
    assert_same_tokens(larger, expected)
    assert max(max(row) for row in larger.accept_lengths) > draft


# ----------------------------------------------------------------- what the drafter sees in the engine
def _fresh_slot_logits(model, prompt: list[int], committed: list[int], u_targets: torch.Tensor, slot_inputs):
    """Slot logits of one row computed from scratch: the text so far, then a chain of slots after it."""
    context = torch.tensor([prompt + committed])
    width, slots = context.shape[1], u_targets.shape[0]
    length = width + slots
    allowed = torch.ones(length, length, dtype=torch.bool).tril()
    return model(
        torch.cat([context, torch.zeros(1, slots, dtype=torch.long)], dim=1),
        position_ids=torch.cat([torch.arange(width), width - 1 + torch.arange(slots)]).unsqueeze(0),
        attention_mask=allowed.view(1, 1, length, length),
        auxiliaries=slot_inputs.unsqueeze(0),
        slots_from=width,
    )[0, width:]


def record_live_groups(monkeypatch) -> list:
    """Record what each step hands to ``_next_pending``: running rows, slot logits, targets, group starts, lengths,
    and the prompt row of each row of the run (rows move when finished rows leave the batch)."""
    records, original, original_adopt = [], engine._next_pending, engine._Run.adopt
    rows = {}

    def recording(run, decided, slot_logits, targets, start, lengths):
        home = rows.get(id(run), torch.arange(len(decided)))
        records.append((run.running.clone(), slot_logits.clone(), targets.clone(), start.clone(), lengths.clone(),
                        home))  # fmt: skip
        return original(run, decided, slot_logits, targets, start, lengths)

    def adopt(run, source, keep):
        rows[id(run)] = rows.get(id(source), torch.arange(source.batch))[keep.cpu()]
        original_adopt(run, source, keep)

    monkeypatch.setattr(engine, "_next_pending", recording)
    monkeypatch.setattr(engine._Run, "adopt", adopt)
    return records


def assert_live_slots_match_fresh(drafter, records, ids, mask, u, out) -> None:
    """Each recorded live group's logits equal the drafter run from scratch on the text committed before it."""
    u_all = torch.cat([u, torch.full((u.shape[0], 64), 0.5)], dim=1)
    checked = 0
    for running, slot_logits, targets, start, lengths, home in records:
        for b in torch.nonzero(running).flatten().tolist():
            first, count, r = int(start[b]), int(lengths[b]), int(home[b])
            if count == 0:
                continue
            live = targets[b, first : first + count]  # new-token index each live slot predicts
            assert torch.equal(live, live[0] + torch.arange(count))
            slot_inputs = drafter.slot_auxiliaries(u_all[r, live], u_all[r, (live - 1).clamp(min=0)],
                                                   torch.arange(count) == 0)  # fmt: skip
            prompt = ids[r, mask[r].bool()].tolist()
            fresh = _fresh_slot_logits(drafter, prompt, out.new_tokens[r, : int(live[0])].tolist(), live, slot_inputs)
            torch.testing.assert_close(slot_logits[b, first : first + count], fresh, rtol=1e-4, atol=1e-4)
            checked += 1
    first_targets = [int(t[b, min(int(s[b]), t.shape[1] - 1)]) for *_, t, s, _, _ in records for b in range(len(s))]
    assert checked >= 10 and max(first_targets) > 1


@pytest.mark.parametrize("mode", ["one_hot", "categorical"])
@torch.no_grad()
def test_the_live_groups_slots_see_exactly_the_committed_text_and_their_own_u(monkeypatch, mode):
    """Whatever the packing of groups into one call, the drafts must be what the drafter computes on the committed
    text alone (the positions, u inputs and visibility that training uses); exactness would not notice otherwise."""
    model, reference, _ = _wrapped("llama", dict(mode=mode, embedding="binary", window_length=5), seed=15)
    ids, mask = left_padded(PROMPT_LENGTHS, seed=15)
    u = uniform(3, NEW, seed=15)
    expected, eos = _reference_with_eos(reference, ids, mask, u, dict(temperature=1.0))
    _install_oracle(monkeypatch, expected.new_tokens, 0.2, seed=15)
    records = record_live_groups(monkeypatch)
    out = model.generate(ids, mask, auxiliaries=u, max_new_tokens=NEW, eos_token_id=eos, auxiliary_budget=9,
                         temperature=1.0)  # fmt: skip
    assert_same_tokens(out, expected)
    assert_live_slots_match_fresh(model, records, ids, mask, u, out)


# ---------------------------------------------------------------------------- linear layers on a CPU
@pytest.mark.skipif(not linear.available(), reason="packed linear layers run on x86 CPUs with oneDNN")
def test_packed_linear_layers_decode_the_tokens_of_plain_ones(monkeypatch):
    """On a CPU the engine's models run their linear layers packed (ptp.model.linear): with and without them, the
    engine decodes the reference's tokens, drafting or not, a PTPModel or a plain causal LM."""
    model, reference, options = _wrapped("llama", SETTINGS[5], seed=21)
    teacher = copy.deepcopy(reference)
    ids, mask = left_padded(PROMPT_LENGTHS, seed=21)
    plain = dict(auxiliaries=uniform(3, NEW, seed=21), max_new_tokens=NEW, eos_token_id=[], temperature=1.0)
    expected = ptp.sample_autoregressive(reference, ids, mask, **plain)
    for packed in (True, False):
        monkeypatch.setattr(torch.backends.mkldnn, "enabled", packed)
        assert_same_tokens(model.generate(ids, mask, **plain, **options), expected)
        assert_same_tokens(model.generate(ids, mask, **plain, use_drafter=False), expected)
        assert_same_tokens(engine.generate(teacher, ids, mask, **plain, use_drafter=False), expected)
    for network in (model.base_model, teacher):
        head = network.get_output_embeddings()
        assert isinstance(head, PackedLinear) and head._packed is not None


# ---------------------------------------------------------------------------------- plain AR mode
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_without_the_drafter_the_engine_is_plain_sampling_one_token_per_call(arch):
    model, reference = wrap(tiny_base(arch, seed=4), window_length=4)
    randomize_adapter(model)
    ids, mask = left_padded(PROMPT_LENGTHS, seed=4)
    u = uniform(3, NEW, seed=4)
    expected, eos = _reference_with_eos(reference, ids, mask, u, dict(temperature=1.2, top_k=30))
    got = model.generate(ids, mask, auxiliaries=u, max_new_tokens=NEW, eos_token_id=eos, temperature=1.2, top_k=30,
                         use_drafter=False)  # fmt: skip
    assert_same_tokens(got, expected)
    assert all(n == 1 for row in got.accept_lengths for n in row)
    assert got.num_calls == int(got.lengths.max()) == expected.num_calls
    assert got.tokens_per_call == 1.0


# ------------------------------------------------------------------------------- small and edge cases
def test_one_new_token_and_an_eos_as_the_first_token():
    model, reference = wrap(tiny_base("qwen2", seed=5), window_length=4)
    ids, mask = left_padded(PROMPT_LENGTHS, seed=5)
    u = uniform(3, 8, seed=5)
    plain = dict(temperature=1.0)
    one = model.generate(ids, mask, auxiliaries=u[:, :1], max_new_tokens=1, **plain)
    assert_same_tokens(one, ptp.sample_autoregressive(reference, ids, mask, auxiliaries=u[:, :1], max_new_tokens=1,
                                                      **plain))  # fmt: skip
    assert one.num_calls == 1 and one.lengths.tolist() == [1, 1, 1]
    first = int(one.new_tokens[0, 0])
    got = model.generate(ids, mask, auxiliaries=u, max_new_tokens=8, eos_token_id=first, **plain)
    expected = ptp.sample_autoregressive(reference, ids, mask, auxiliaries=u, max_new_tokens=8, eos_token_id=first,
                                         **plain)  # fmt: skip
    assert_same_tokens(got, expected)
    assert got.lengths[0] == 1


def test_several_eos_ids_and_an_explicit_pad_id():
    model, reference = wrap(tiny_base("gpt_neox", seed=6), window_length=4)
    ids, mask = left_padded(PROMPT_LENGTHS, seed=6)
    u = uniform(3, NEW, seed=6)
    free = ptp.sample_autoregressive(reference, ids, mask, auxiliaries=u, max_new_tokens=NEW, eos_token_id=[])
    stops = [int(free.new_tokens[0, NEW // 2]), int(free.new_tokens[2, NEW // 3])]
    options = dict(auxiliaries=u, max_new_tokens=NEW, eos_token_id=stops, pad_token_id=VOCAB - 1, temperature=1.0)
    got = model.generate(ids, mask, **options)
    assert_same_tokens(got, ptp.sample_autoregressive(reference, ids, mask, **options))
    assert_well_formed(got, stops, VOCAB - 1)


def test_the_eos_and_pad_ids_default_to_the_models_generation_config():
    model, reference = wrap(tiny_base("mistral", seed=8), window_length=4)
    ids, mask = left_padded(PROMPT_LENGTHS, seed=8)
    u = uniform(3, NEW, seed=8) * 0.06  # small u's pick low ids, EOS (2) among them
    got = model.generate(ids, mask, auxiliaries=u, max_new_tokens=NEW, temperature=1.5)
    assert_same_tokens(got, ptp.sample_autoregressive(reference, ids, mask, auxiliaries=u, max_new_tokens=NEW,
                                                      temperature=1.5))  # fmt: skip
    assert (got.lengths < NEW).any(), "the model's EOS id should have stopped a row"
    assert_well_formed(got, [EOS], PAD)


def test_the_seed_path_is_deterministic_and_draws_u_on_the_cpu():
    model, _ = wrap(tiny_base("llama", seed=9), window_length=4)
    ids, mask = left_padded(PROMPT_LENGTHS, seed=9)
    a = model.generate(ids, mask, max_new_tokens=NEW, seed=1234)
    b = model.generate(ids, mask, max_new_tokens=NEW, seed=1234)
    assert torch.equal(a.sequences, b.sequences) and a.accept_lengths == b.accept_lengths
    u = torch.rand(3, NEW, generator=torch.Generator().manual_seed(1234))
    assert torch.equal(model.generate(ids, mask, max_new_tokens=NEW, auxiliaries=u).sequences, a.sequences)
    c = model.generate(ids, mask, max_new_tokens=NEW, generator=torch.Generator().manual_seed(1234))
    assert torch.equal(c.sequences, a.sequences)
    assert not torch.equal(model.generate(ids, mask, max_new_tokens=NEW, seed=4321).sequences, a.sequences)


def test_without_sampling_arguments_generate_decodes_as_the_drafter_was_trained_and_any_argument_wins():
    model, reference = wrap(tiny_base("llama", seed=10), window_length=4,
                            sampling=ptp.SamplingConfig(temperature=0.6, top_k=5))  # fmt: skip
    ids, mask = left_padded(PROMPT_LENGTHS, seed=10)
    u = uniform(3, NEW, seed=10)
    common = dict(auxiliaries=u, max_new_tokens=NEW)
    expected = ptp.sample_autoregressive(reference, ids, mask, **common, temperature=0.6, top_k=5)
    assert_same_tokens(model.generate(ids, mask, **common), expected)
    assert_same_tokens(model.generate(ids, mask, **common, sampling=model.config.sampling), expected)
    # An argument describes the whole configuration, as sample_autoregressive's do: the others are plain.
    for arguments in (dict(temperature=1.0), dict(do_sample=False), dict(top_k=5), dict(top_p=0.8), dict(top_k=0)):
        got = model.generate(ids, mask, **common, **arguments)
        assert_same_tokens(got, ptp.sample_autoregressive(reference, ids, mask, **common, **arguments))
    assert not torch.equal(model.generate(ids, mask, **common, temperature=1.0).sequences, expected.sequences)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_drafter_with_bins_in_probability_order_decodes_plain_sampling_in_that_order(monkeypatch, arch):
    """generate's transformers-style arguments take the order of the bins from the drafter; with random and with
    oracle drafts the output is plain sampling with the same u's in that order (which picks other tokens)."""
    trained = ptp.SamplingConfig(temperature=0.7, top_k=8, top_p=0.9, order="probability")
    model, reference = wrap(tiny_base(arch, seed=30), window_length=5, lora_rank=4, embedding_size=8, sampling=trained)
    randomize_adapter(model, seed=31)
    ids, mask = left_padded(PROMPT_LENGTHS, seed=30)
    u = uniform(3, NEW, seed=30)
    plain = dict(auxiliaries=u, max_new_tokens=NEW, eos_token_id=[], temperature=0.7, top_k=8, top_p=0.9)
    expected = ptp.sample_autoregressive(reference, ids, mask, auxiliaries=u, max_new_tokens=NEW, eos_token_id=[],
                                         sampling=trained)  # fmt: skip
    in_vocabulary_order = ptp.sample_autoregressive(reference, ids, mask, **plain)
    assert not torch.equal(expected.new_tokens, in_vocabulary_order.new_tokens)
    assert_same_tokens(model.generate(ids, mask, **plain), expected)
    for corruption, options in ORACLE_RUNS[:2]:
        _install_oracle(monkeypatch, expected.new_tokens, corruption, seed=32)
        assert_same_tokens(model.generate(ids, mask, **plain, **options), expected)


# --------------------------------------------------------------------------------------- streamer
class RecordingStreamer:
    """The protocol of transformers' TextStreamer: put(prompt), put(tokens) per call, end()."""

    def __init__(self):
        self.puts: list[list[int]] = []
        self.ended = 0

    def put(self, value: torch.Tensor) -> None:
        assert self.ended == 0, "put after end"
        self.puts.append(value.reshape(-1).tolist())

    def end(self) -> None:
        self.ended += 1


@pytest.mark.parametrize("use_drafter", [True, False])
def test_a_streamer_receives_the_prompt_then_exactly_the_output_tokens(monkeypatch, use_drafter):
    model, reference = wrap(tiny_base("gpt2", seed=11), window_length=5)
    ids, mask = left_padded([6], seed=11)
    u = uniform(1, NEW, seed=11)
    expected, eos = _reference_with_eos(reference, ids, mask, u, dict(temperature=0.8))
    _install_oracle(monkeypatch, expected.new_tokens, 0.2, seed=11)
    streamer = RecordingStreamer()
    got = model.generate(ids, mask, auxiliaries=u, max_new_tokens=NEW, eos_token_id=eos, temperature=0.8,
                         streamer=streamer, use_drafter=use_drafter)  # fmt: skip
    assert_same_tokens(got, expected)
    assert streamer.puts[0] == ids[0].tolist() and streamer.ended == 1
    assert list(itertools.chain(*streamer.puts[1:])) == got.rows()[0]
    assert [len(p) for p in streamer.puts[1:]] == got.accept_lengths[0]


def test_transformers_text_streamer_prints_the_generated_text(capsys):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, TextStreamer

    words = Tokenizer(models.WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token="w0"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words)
    model, _ = wrap(tiny_base("llama", seed=12), window_length=4)
    ids, _ = left_padded([5], seed=12)
    out = model.generate(ids, max_new_tokens=NEW, seed=12, streamer=TextStreamer(tokenizer, skip_prompt=True))
    assert capsys.readouterr().out == tokenizer.decode(out.rows()[0]) + "\n"


# ------------------------------------------------------------------------------------ 16-bit on CPU
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_half_precision_runs_on_the_cpu_and_returns_valid_tokens(monkeypatch, arch, dtype):
    """Exactness is not required in 16 bits (a u near a bin edge may flip); well-formed output is."""
    model, reference = wrap(tiny_base(arch, seed=13, dtype=dtype), window_length=4, lora_rank=4)
    randomize_adapter(model, seed=13)
    assert model.dtype == dtype
    ids, mask = left_padded(PROMPT_LENGTHS, seed=13)
    u = uniform(3, NEW, seed=13)
    expected, eos = _reference_with_eos(reference, ids, mask, u, dict(temperature=0.9, top_p=0.95))
    for oracle in (False, True):
        if oracle:
            _install_oracle(monkeypatch, expected.new_tokens, 0.1, seed=13)
        got = model.generate(ids, mask, auxiliaries=u, max_new_tokens=NEW, eos_token_id=eos, temperature=0.9,
                             top_p=0.95)  # fmt: skip
        assert_well_formed(got, [eos], PAD)
        agree = (got.new_tokens == expected.new_tokens).float().mean().item()
        assert agree > 0.5, f"16-bit output should mostly agree with the 16-bit reference ({agree:.2f})"


# ---------------------------------------------------------------------- the captured step, simulated on the CPU
class FakeGraph:
    """Stands in for a CUDA graph on the CPU: a replay runs the captured step again (what replaying its kernels on the
    same buffers does)."""

    def __init__(self, step):
        self.step, self.replays = step, 0

    def replay(self):
        self.replays += 1
        self.step()


def fake_capture(monkeypatch, fail: bool = False) -> list[FakeGraph]:
    """Let the engine capture on the CPU; returns the graphs it captures (or makes every capture fail)."""
    made = []

    def capture(step):
        if fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        made.append(FakeGraph(step))
        return made[-1]

    monkeypatch.setattr(graphs, "can_capture", lambda device: True)
    monkeypatch.setattr(graphs, "on_side_stream", lambda step, device: step())
    monkeypatch.setattr(graphs, "capture", capture)
    return made


def test_a_captured_step_is_replayed_by_later_steps_and_calls_with_the_output_unchanged(monkeypatch):
    model, reference, options = _wrapped("llama", SETTINGS[1], seed=30)
    ids, mask = left_padded(PROMPT_LENGTHS, seed=30)
    captured, steps, eager, kept = fake_capture(monkeypatch), [], [], []
    monkeypatch.setattr(graphs, "on_side_stream", lambda step, device: (eager.append(1), step()))
    for seed in (30, 31):
        plain = dict(auxiliaries=uniform(3, NEW, seed=seed), max_new_tokens=NEW, eos_token_id=[], temperature=1.0)
        expected = ptp.sample_autoregressive(reference, ids, mask, **plain)
        _install_oracle(monkeypatch, expected.new_tokens, 0.2, seed)
        got = model.generate(ids, mask, **plain, **options)
        assert_same_tokens(got, expected)
        assert got.tokens_per_call > 1.3
        steps.append(got.num_calls - 1)  # the prefill is not a step
        kept.append({id(run): run.graph for run in graphs.captured_runs(model) if run.graph is not None})
    # Rows that finish early move to a run of a smaller batch, which is captured in its turn: one capture per run,
    # each kept with the model, and the second call replays the first call's graphs instead of capturing again.
    assert captured and len(captured) == len(kept[1]) and set(map(id, captured)) == set(map(id, kept[1].values()))
    assert all(kept[1][run] is graph for run, graph in kept[0].items()), "the 2nd call reuses the 1st call's graphs"
    # Every step was either an eager warm-up (at most WARMUP_STEPS per run, ever) or the replay of a captured graph.
    assert sum(graph.replays for graph in captured) + len(eager) == steps[0] + steps[1]
    assert len(eager) <= graphs.WARMUP_STEPS * len(graphs.captured_runs(model))


def test_calls_that_ask_for_different_numbers_of_new_tokens_replay_one_captured_step(monkeypatch):
    """A captured run's room for new tokens is rounded up as its cache is (a server's requests ask for any number):
    calls asking for 5, 11 and 20 tokens replay the step captured by the first, and each row stops where it asked."""
    model, reference, options = _wrapped("llama", SETTINGS[1], seed=33)
    ids, mask = left_padded(PROMPT_LENGTHS, seed=33)
    captured = fake_capture(monkeypatch)
    for new in (5, 11, 20):
        plain = dict(auxiliaries=uniform(3, new, seed=new), max_new_tokens=new, eos_token_id=[], temperature=1.0)
        got = model.generate(ids, mask, **plain, **options)
        assert_same_tokens(got, ptp.sample_autoregressive(reference, ids, mask, **plain))
        assert got.sequences.shape[1] == ids.shape[1] + new
    assert len(graphs.captured_runs(model)) == len(captured) == 1
    assert captured[0].replays > 20


def test_a_step_that_cannot_be_captured_runs_eagerly_with_one_warning(monkeypatch):
    model, reference, options = _wrapped("gpt2", SETTINGS[0], seed=32)
    ids, mask = left_padded(PROMPT_LENGTHS, seed=32)
    fake_capture(monkeypatch, fail=True)
    plain = dict(auxiliaries=uniform(3, NEW, seed=32), max_new_tokens=NEW, eos_token_id=[], temperature=1.0)
    expected = ptp.sample_autoregressive(reference, ids, mask, **plain)
    with pytest.warns(UserWarning, match="could not be captured as a CUDA graph, so it runs eagerly"):
        got = model.generate(ids, mask, **plain, **options)
    assert_same_tokens(got, expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the kept run does not try again
        assert_same_tokens(model.generate(ids, mask, **plain, **options), expected)


# -------------------------------------------------------------------------------------------- GPU
def install_device_oracle(monkeypatch, truth: torch.Tensor, every: int, *models) -> None:
    """An oracle drafter (as :func:`_install_oracle`) made of device operations only, so that it can be captured in a
    CUDA graph: the draft predicting new token t is wrong when ``(7 t + 3) % every == 0``; confidences vary with t.
    Steps captured before (with the real drafter) are dropped."""

    def oracle(model, logits, u_target, targets, sampling):
        tokens = truth.gather(1, targets.clamp(max=truth.shape[1] - 1))
        wrong = (targets * 7 + 3) % every == 0
        confidence = 0.05 + 0.9 * torch.frac(torch.sin(targets.float() * 12.9898) * 43758.5453).abs()
        return torch.where(wrong, (tokens + 1) % VOCAB, tokens), confidence

    monkeypatch.setattr(engine, "_drafts", oracle)
    for model in models:
        graphs.release_graphs(model)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_engine_on_cuda(monkeypatch, arch, dtype):
    """On a GPU, eager and captured: exact in float32 with the drafter and with an oracle, well-formed in 16 bits."""
    model, reference = wrap(tiny_base(arch, seed=14, dtype=dtype).cuda(), window_length=4)
    randomize_adapter(model, seed=14)
    ids, mask = (t.cuda() for t in left_padded(PROMPT_LENGTHS, seed=14))
    u = uniform(3, NEW, seed=14)
    expected, eos = _reference_with_eos(reference, ids, mask, u, dict(temperature=0.9, top_k=40))
    for oracle, cuda_graph in itertools.product((False, True), (False, True)):
        if oracle:
            install_device_oracle(monkeypatch, expected.new_tokens.cuda(), 5, model)
        got = model.generate(ids, mask, auxiliaries=u.cuda(), max_new_tokens=NEW, eos_token_id=eos, temperature=0.9,
                             top_k=40, cuda_graph=cuda_graph)  # fmt: skip
        assert got.sequences.is_cuda
        assert_well_formed(got, [eos], PAD)
        if dtype == torch.float32:
            assert_same_tokens(got, expected)
            if oracle:
                assert max(max(row) for row in got.accept_lengths) > 1, "the oracle's drafts must be accepted"


@pytest.mark.gpu
def test_a_captured_step_is_kept_with_the_model_and_replayed_by_later_calls(monkeypatch):
    model, reference = wrap(tiny_base("llama", seed=18).cuda(), window_length=4)
    randomize_adapter(model, seed=18)
    ids, mask = (t.cuda() for t in left_padded(PROMPT_LENGTHS, seed=18))
    truth = torch.zeros(3, NEW, dtype=torch.int64, device="cuda")  # the oracle's, refilled for each call
    install_device_oracle(monkeypatch, truth, 4, model)
    seen = []
    for seed in (18, 19):
        u = uniform(3, NEW, seed=seed).cuda()
        # generate's default sampling is the one the drafter was trained for; the reference is given it explicitly.
        expected = ptp.sample_autoregressive(reference, ids, mask, auxiliaries=u, max_new_tokens=NEW, eos_token_id=[],
                                             sampling=model.config.sampling)  # fmt: skip
        truth.copy_(expected.new_tokens)
        for use_drafter in (True, False):
            got = model.generate(ids, mask, auxiliaries=u, max_new_tokens=NEW, eos_token_id=[], use_drafter=use_drafter)
            assert_same_tokens(got, expected)
            assert (got.tokens_per_call > 1.5) == use_drafter
        seen.append([run.graph for run in graphs.captured_runs(model)])
    assert len(seen[0]) == 2 and None not in seen[0], "one captured step per setting"
    assert seen[1] == seen[0], "the second call replays the first call's graphs"
    assert not graphs.captured_runs(copy.deepcopy(model)), "the graphs are kept for the model, not in it"
    graphs.release_graphs(model)
    assert not graphs.captured_runs(model)
    with pytest.raises(ValueError, match="CUDA device"):
        model.cpu().generate(ids.cpu(), max_new_tokens=4, cuda_graph=True)
