"""ptp.sampling: the sampling configuration S, the vocabulary-order CDF, bins and Pick (docs/method.md, Sampling)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from ptp.sampling import (
    MAX_AUXILIARY,
    ORDERS,
    SamplingConfig,
    bins,
    cumulative,
    pick,
    probabilities,
    sample_in_bins,
)

INF = float("inf")


# ------------------------------------------------------------------------------------------- strategies
def _logits():
    """Rows with ties (values from a small set), -inf entries, and at least one finite value."""
    value = st.one_of(st.sampled_from([-INF, -2.0, 0.0, 0.0, 1.5, 3.0]), st.floats(-30, 30, width=32))
    return st.lists(value, min_size=1, max_size=24).filter(lambda row: any(math.isfinite(v) for v in row))


def _configs(orders=ORDERS):
    sampled = st.builds(
        SamplingConfig,
        do_sample=st.just(True),
        temperature=st.floats(0.05, 5.0),
        top_k=st.one_of(st.none(), st.integers(1, 30)),
        top_p=st.one_of(st.none(), st.floats(0.001, 1.0)),
        order=st.sampled_from(orders),
    )
    return st.one_of(sampled, st.just(SamplingConfig.greedy()))


def _auxiliaries():
    edge = st.sampled_from([0.0, MAX_AUXILIARY, 0.5, 2.0**-24])
    return st.lists(st.one_of(edge, st.floats(0.0, 1.0, exclude_max=True, width=32)), min_size=1, max_size=8)


# --------------------------------------------------------------------------------------------- Pick == P
CHI_SQUARE_CONFIGS = [
    SamplingConfig(temperature=1.0),
    SamplingConfig(temperature=0.7, top_k=5),
    SamplingConfig(temperature=1.5, top_p=0.8),
    SamplingConfig(temperature=1.0, top_k=8, top_p=0.6),
    SamplingConfig(temperature=0.4, top_k=50, top_p=0.95),
    SamplingConfig(temperature=1.0, order="probability"),
    SamplingConfig(temperature=0.7, top_k=8, top_p=0.9, order="probability"),
]


@pytest.mark.parametrize("config", CHI_SQUARE_CONFIGS, ids=lambda c: c.describe())
def test_pick_with_uniform_u_reproduces_the_distribution(config):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(16, generator=generator) * 1.5
    logits[3] = logits[9]  # a tie
    logits[12] = -INF
    draws = 40_000
    u = torch.rand(draws, generator=generator)
    tokens = pick(u, logits.expand(draws, -1), config)
    counts = torch.bincount(tokens, minlength=16).double()
    p = probabilities(logits, config).double()
    assert torch.all(counts[p == 0] == 0), "a token outside the kept set was picked"
    kept = p > 0
    expected = p[kept] / p[kept].sum() * draws
    result = stats.chisquare(counts[kept].numpy(), expected.numpy())
    assert result.pvalue > 1e-3, f"chi-square p = {result.pvalue:.2e}: Pick does not sample P"


# ------------------------------------------------------------------------------------------ properties
@settings(max_examples=300, deadline=None)
@given(row=_logits(), config=_configs(), us=_auxiliaries())
def test_pick_never_lands_in_an_empty_bin_and_its_bin_holds_u(row, config, us):
    logits = torch.tensor(row, dtype=torch.float32)
    u = torch.tensor(us, dtype=torch.float32)
    expanded = logits.expand(len(us), -1)
    p = probabilities(logits, config)
    assert torch.isfinite(p).all() and (p >= 0).all()
    assert p.sum().item() == pytest.approx(1.0, abs=1e-5)
    tokens = pick(u, expanded, config)
    assert ((tokens >= 0) & (tokens < len(row))).all()
    assert (p[tokens] > 0).all(), "Pick chose a token outside the kept set"
    left, right = bins(expanded, tokens, config)
    assert (left < right).all(), "Pick chose an empty bin"
    assert ((left <= u) & (u < right)).all(), "the picked token's bin does not hold u"


@settings(max_examples=300, deadline=None)
@given(row=_logits(), k=st.integers(1, 30))
def test_top_k_keeps_the_k_largest_and_of_equal_values_the_lower_ids(row, k):
    """The slow oracle: sort by (value descending, id ascending) in Python and keep the first k."""
    kept = sorted(range(len(row)), key=lambda j: (-row[j], j))[:k]
    expected = {j for j in kept if row[j] > -INF}
    p = probabilities(torch.tensor(row, dtype=torch.float32), SamplingConfig(top_k=k))
    assert set(torch.nonzero(p > 0).flatten().tolist()) == expected


@settings(max_examples=300, deadline=None)
@given(row=_logits(), config=_configs())
def test_bins_are_the_edges_of_the_whole_vocabularys_cdf(row, config):
    """The slow oracle: F over every token, in bin order, from the full distribution; ``bins`` and ``pick`` work
    on the top-k candidates alone."""
    logits = torch.tensor(row, dtype=torch.float32)
    p = probabilities(logits, config)
    order = torch.arange(len(row))
    if config.order == "probability":
        order = torch.sort(p, descending=True, stable=True).indices
    cdf = cumulative(p[order])
    place = torch.empty_like(order).scatter_(0, order, torch.arange(len(row)))
    tokens = torch.arange(len(row))
    left, right = bins(logits.expand(len(row), -1), tokens, config)
    torch.testing.assert_close(right, cdf[place], rtol=0, atol=1e-6)
    torch.testing.assert_close(left, torch.where(place > 0, cdf[(place - 1).clamp(min=0)], 0.0), rtol=0, atol=1e-6)
    if not config.do_sample:
        assert torch.equal(left < right, p > 0), "greedy: the argmax alone has a bin"


@settings(max_examples=200, deadline=None)
@given(row=_logits(), config=_configs(orders=("vocabulary",)))
def test_cdf_is_monotone_ends_at_exactly_one_and_u_extremes_pick_the_end_tokens(row, config):
    logits = torch.tensor(row, dtype=torch.float32)
    p = probabilities(logits, config)
    cdf = cumulative(p)
    assert cdf[-1].item() == 1.0
    assert (cdf[1:] >= cdf[:-1]).all()
    first_kept = int(torch.nonzero(p > 0)[0])
    assert pick(torch.tensor(0.0), logits, config).item() == first_kept
    last = pick(torch.tensor(MAX_AUXILIARY), logits, config).item()
    non_empty = torch.nonzero(cdf - torch.cat([torch.zeros(1), cdf[:-1]]) > 0).flatten()
    assert last == int(non_empty[-1]), "u = 1 - 2^-24 must pick the last token with a non-empty bin"


@settings(max_examples=200, deadline=None)
@given(
    row=st.lists(st.floats(-6, 6, width=32), min_size=3, max_size=30),
    temperature=st.floats(0.3, 3.0),
    data=st.data(),
)
def test_top_p_at_an_exact_prefix_mass_keeps_exactly_that_prefix(row, temperature, data):
    """top_p equal to the mass of the k most probable tokens: token k+1 has mass-before == top_p, not < top_p."""
    logits = torch.tensor(row, dtype=torch.float32)
    p = torch.softmax(logits / temperature, dim=-1)
    ordered = torch.sort(p, descending=True, stable=True).values
    k = data.draw(st.integers(1, len(row) - 1))
    total = torch.cumsum(ordered, dim=-1)
    mass = float(total[k - 1])
    if not 0.0 < mass < 1.0 or ordered[k - 1] == ordered[k] or (k > 1 and total[k - 2] == total[k - 1]):
        # top_p = 1 keeps every token; a tie at the cut leaves the first k undefined by value alone; a k-th token
        # too small to change the float32 sum has mass-before == top_p itself.
        return
    kept = probabilities(logits, SamplingConfig(temperature=temperature, top_p=mass)) > 0
    assert int(kept.sum()) == k


# ------------------------------------------------------------------------------- bins in probability order
def test_probability_order_lays_the_bins_out_from_the_most_likely_token():
    logits = torch.tensor([0.0, 2.0, -INF, 1.0, 2.0])  # ids 1 and 4 tie for the mode: 1 comes first
    config = SamplingConfig(order="probability")
    p = probabilities(logits, config)
    places = [1, 4, 3, 0]  # descending probability, ties to the lower id; id 2 is outside the kept set
    edges = torch.cumsum(p[places], dim=0)
    for place, token in enumerate(places):
        left = 0.0 if place == 0 else float(edges[place - 1])
        for u in (left, (left + float(edges[place])) / 2):
            assert pick(torch.tensor(u), logits, config).item() == token
        got_left, got_right = bins(logits, torch.tensor(token), config)
        assert got_left.item() == pytest.approx(left, abs=1e-7)
        assert got_right.item() == pytest.approx(float(edges[place]))
    assert pick(torch.tensor(MAX_AUXILIARY), logits, config).item() == 0


# --------------------------------------------------------------------------------- u at the extremes
def test_u_zero_and_largest_u_pick_the_first_and_last_kept_tokens():
    logits = torch.tensor([-INF, 1.0, 2.0, -INF, 0.5, -INF])
    config = SamplingConfig()
    assert pick(torch.tensor(0.0), logits, config).item() == 1
    assert pick(torch.tensor(MAX_AUXILIARY), logits, config).item() == 4
    top2 = SamplingConfig(top_k=2)
    assert pick(torch.tensor(MAX_AUXILIARY), logits, top2).item() == 2


def test_cdf_ends_at_one_even_when_the_float_sum_falls_short():
    p = torch.tensor([0.611823320388794, 0.09771143645048141, 0.01483008824288845, 0.2313377559185028, 0.0442973636])
    assert torch.cumsum(p, 0)[-1].item() < 1.0  # the float32 sum falls one ulp short of 1
    assert cumulative(p)[-1].item() == 1.0
    assert pick(torch.tensor(MAX_AUXILIARY), torch.log(p), SamplingConfig()).item() == 4


def test_a_token_too_improbable_for_float32_never_gets_u_near_one():
    logits = torch.tensor([0.0, 0.0, -40.0])  # P(2) ~ 2e-18: its bin vanishes in float32
    assert pick(torch.tensor(MAX_AUXILIARY), logits, SamplingConfig()).item() == 1


# -------------------------------------------------------------------------------------- conventions
def test_greedy_is_argmax_and_ties_go_to_the_lower_id():
    logits = torch.tensor([1.0, 5.0, 5.0, 2.0, 5.0])
    greedy = SamplingConfig.greedy()
    for u in (0.0, 0.5, MAX_AUXILIARY):
        assert pick(torch.tensor(u), logits, greedy).item() == 1
    assert probabilities(logits, greedy).tolist() == [0.0, 1.0, 0.0, 0.0, 0.0]
    batch = torch.randn(4, 7, 50, generator=torch.Generator().manual_seed(1))
    assert torch.equal(pick(torch.rand(4, 7), batch, greedy), batch.argmax(-1))


def test_greedy_bins_give_the_argmax_the_whole_interval():
    logits = torch.tensor([[0.0, 2.0, 2.0, 1.0]])
    left, right = bins(logits, torch.tensor([1]), SamplingConfig.greedy())
    assert (left.item(), right.item()) == (0.0, 1.0)
    left, right = bins(logits, torch.tensor([2]), SamplingConfig.greedy())
    assert left.item() == right.item()


def test_top_k_ties_go_to_the_lower_id():
    logits = torch.tensor([0.0, 3.0, 3.0, 3.0, 1.0])
    p = probabilities(logits, SamplingConfig(top_k=2))
    assert (p > 0).tolist() == [False, True, True, False, False]
    p = probabilities(logits, SamplingConfig(top_k=1))
    assert (p > 0).tolist() == [False, True, False, False, False]


def test_top_p_keeps_the_token_that_crosses_p_in_probability_order():
    # Probability order is 1 (0.5), 2 (0.3), 0 (0.2); mass before them 0, 0.5, 0.8.
    logits = torch.log(torch.tensor([0.2, 0.5, 0.3]))
    assert (probabilities(logits, SamplingConfig(top_p=0.45)) > 0).tolist() == [False, True, False]
    p = probabilities(logits, SamplingConfig(top_p=0.6))
    assert (p > 0).tolist() == [False, True, True]
    assert p.tolist() == pytest.approx([0.0, 0.625, 0.375], abs=1e-6)
    assert (probabilities(logits, SamplingConfig(top_p=0.85)) > 0).all()


def test_top_p_ties_go_to_the_lower_id():
    p = probabilities(torch.zeros(4), SamplingConfig(top_p=0.3))
    assert p.tolist() == pytest.approx([0.5, 0.5, 0.0, 0.0])


def test_temperature_scales_logits_before_top_k_and_top_p():
    logits = torch.tensor([0.0, 1.0, 2.0])
    expected = torch.softmax(logits / 0.5, dim=-1)
    assert torch.allclose(probabilities(logits, SamplingConfig(temperature=0.5)), expected)


def test_any_leading_shape_and_low_precision_logits_compute_in_float32():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 40, generator=generator).to(torch.bfloat16)
    config = SamplingConfig(temperature=0.8, top_k=10, top_p=0.9)
    p = probabilities(logits, config)
    assert p.dtype == torch.float32 and p.shape == (2, 3, 40)
    u = torch.rand(2, 3, generator=generator)
    assert torch.equal(pick(u, logits, config), pick(u, logits.float(), config))


# ---------------------------------------------------------------------------------- sample_in_bins
def _random_bins(count: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(count, 30, generator=generator) * 3
    logits[: count // 4, 5:] = -INF  # some rows with a short kept set, so that the last bin ends at 1
    config = SamplingConfig(temperature=0.9, top_k=20)
    tokens = pick(torch.rand(count, generator=generator), logits, config)
    return logits, tokens, config


@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_sample_in_bins_stays_inside_the_bins(beta):
    logits, tokens, config = _random_bins(4000, seed=3)
    left, right = bins(logits, tokens, config)
    u = sample_in_bins(left, right, beta=beta, generator=torch.Generator().manual_seed(4))
    assert ((left <= u) & (u < right)).all()
    assert torch.equal(pick(u, logits, config), tokens)
    again = sample_in_bins(left, right, beta=beta, generator=torch.Generator().manual_seed(4))
    assert torch.equal(u, again), "the generator must make the draw reproducible"


def test_sample_in_bins_handles_bins_touching_zero_one_and_one_float_wide():
    left = torch.tensor([0.0, 0.5, 0.25])
    right = torch.tensor([1.0, 1.0, float(torch.nextafter(torch.tensor(0.25), torch.tensor(1.0)))])
    for beta in (1.0, 0.3):
        u = sample_in_bins(left.expand(2000, -1), right.expand(2000, -1), beta, torch.Generator().manual_seed(5))
        assert ((u >= left) & (u < right)).all() and (u <= MAX_AUXILIARY).all()


@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_sample_in_bins_draws_beta_distributed_offsets(beta):
    left, right = torch.zeros(6000), torch.ones(6000)
    u = sample_in_bins(left, right, beta=beta, generator=torch.Generator().manual_seed(6))
    result = stats.kstest(u.double().numpy(), stats.beta(beta, beta).cdf)
    assert result.pvalue > 1e-3, f"offsets are not Beta({beta}, {beta}): KS p = {result.pvalue:.2e}"


# ------------------------------------------------------------------------------ SamplingConfig checks
@pytest.mark.parametrize(
    "options, message",
    [
        (dict(temperature=0.0), "temperature"),
        (dict(temperature=-1.0), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(temperature=INF), "temperature"),
        (dict(temperature=True), "temperature"),
        (dict(top_k=-1), "top_k"),
        (dict(top_k=-3), "top_k"),
        (dict(top_k=2.5), "top_k"),
        (dict(top_k=True), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=-0.1), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_p=float("nan")), "top_p"),
        (dict(top_p=True), "top_p"),
    ],
)
def test_sampling_config_rejects_bad_values(options, message):
    with pytest.raises(ValueError, match=message):
        SamplingConfig(**options)


def test_top_k_0_and_top_p_1_are_the_one_spelling_of_off():
    """As in transformers: top_k=0 and top_p=1.0 switch the filter off; None does too, and is what is stored."""
    off = SamplingConfig(temperature=0.8)
    for options in (dict(top_k=0), dict(top_p=1.0), dict(top_p=1), dict(top_k=0, top_p=1.0)):
        config = SamplingConfig(temperature=0.8, **options)
        assert config == off and hash(config) == hash(off) and config.top_k is None and config.top_p is None
        assert SamplingConfig.from_dict(config.to_dict()) == off
    logits = torch.randn(3, 40, generator=torch.Generator().manual_seed(8)) * 3
    both_off = SamplingConfig(top_k=0, top_p=1.0)
    assert torch.equal(probabilities(logits, both_off), probabilities(logits, SamplingConfig()))
    assert SamplingConfig(do_sample=False, top_k=0) == SamplingConfig.greedy()


def test_the_messages_of_bad_values_say_how_to_mean_off_or_greedy():
    with pytest.raises(ValueError, match="do_sample=False"):
        SamplingConfig(temperature=0.0)
    with pytest.raises(ValueError, match="0 or None for no top-k"):
        SamplingConfig(top_k=-1)
    with pytest.raises(ValueError, match="1.0 or None for no top-p"):
        SamplingConfig(top_p=1.5)


def test_greedy_ignores_the_sampling_parameters_and_configs_round_trip():
    assert SamplingConfig(do_sample=False, temperature=0.0).describe() == "greedy"
    config = SamplingConfig(temperature=0.7, top_k=50, top_p=0.95)
    assert SamplingConfig.from_dict(config.to_dict()) == config
    ordered = SamplingConfig(temperature=0.7, top_k=50, top_p=0.95, order="probability")
    assert SamplingConfig.from_dict(ordered.to_dict()) == ordered
    assert ordered.describe().endswith("order=probability") and ordered.same_distribution(config)
    assert not ordered.same_distribution(SamplingConfig(temperature=0.8, top_k=50, top_p=0.95))
    with pytest.raises(ValueError, match="order"):
        SamplingConfig(order="alphabetical")
    with pytest.raises(ValueError, match="unknown"):
        SamplingConfig.from_dict({"temperature": 1.0, "typical_p": 0.5})


def _probabilities_by_full_sorts(logits, config):
    """The definition read literally: a stable sort of the whole vocabulary for top-k, another for top-p."""
    z = logits.float() / config.temperature
    if config.top_k is not None and config.top_k < z.shape[-1]:
        order = torch.sort(z, dim=-1, descending=True, stable=True).indices
        z = z.scatter(-1, order[..., config.top_k :], float("-inf"))
    p = torch.softmax(z, dim=-1)
    if config.top_p is not None and config.top_p < 1:
        sorted_p, order = torch.sort(p, dim=-1, descending=True, stable=True)
        total = torch.cumsum(sorted_p, dim=-1)
        before = torch.cat([torch.zeros_like(total[..., :1]), total[..., :-1]], dim=-1)
        keep = torch.zeros_like(before, dtype=torch.bool).scatter(-1, order, before < config.top_p)
        p = torch.where(keep, p, 0.0)
        p = p / p.sum(dim=-1, keepdim=True)
    return p


@pytest.mark.parametrize("top_k", [None, 1, 2, 5, 50])
@pytest.mark.parametrize("top_p", [None, 0.3, 0.9, 0.99])
def test_fast_top_k_top_p_equal_the_full_sort_definition(top_k, top_p):
    generator = torch.Generator().manual_seed(7)
    for trial in range(40):
        vocab = int(torch.randint(2, 300, (), generator=generator))
        logits = torch.randn(4, vocab, generator=generator) * 4
        if trial % 2 == 0:
            logits = torch.round(logits)  # many ties at the top-k and top-p cuts
        config = SamplingConfig(temperature=0.5 + trial / 40, top_k=top_k, top_p=top_p)
        fast, slow = probabilities(logits, config), _probabilities_by_full_sorts(logits, config)
        assert torch.equal(fast > 0, slow > 0)
        torch.testing.assert_close(fast, slow, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("greedy", SamplingConfig.greedy()),
        ("0.7,50,0.95", SamplingConfig(temperature=0.7, top_k=50, top_p=0.95)),
        ("1,0,1", SamplingConfig()),
        (" 0.5, -, - ", SamplingConfig(temperature=0.5)),
    ],
)
def test_parse_reads_the_compact_spelling_with_0_and_1_as_off(text, expected):
    assert SamplingConfig.parse(text) == expected
    assert SamplingConfig.parse(text, order="probability").order == "probability"


@pytest.mark.parametrize(
    "text, message",
    [
        ("0.7,5.5,0.9", "top_k must be a whole number, got '5.5'"),
        ("x,5,0.9", "temperature must be a number"),
        ("0.7,5,1.5", "top_p must be in"),
        ("0.7,-3,0.5", "top_k must be an integer >= 1, or 0"),
        ("0.7,50", "'greedy' or 'T,k,p'"),
    ],
)
def test_parse_names_the_bad_value(text, message):
    with pytest.raises(ValueError, match=message):
        SamplingConfig.parse(text)


def test_from_values_overrides_the_default_as_a_generation_config_would():
    trained = SamplingConfig(temperature=0.7, top_k=50, top_p=0.95, order="probability")
    assert SamplingConfig.from_values(default=trained) is trained and SamplingConfig.from_values() is None
    assert SamplingConfig.from_values(temperature=1.0, default=trained) == replace(trained, temperature=1.0)
    assert SamplingConfig.from_values(top_k=0, top_p=1, default=trained) == replace(trained, top_k=None, top_p=None)
    assert SamplingConfig.from_values(do_sample=False, default=trained) == replace(SamplingConfig.greedy(),
                                                                                   order="probability")  # fmt: skip
    assert not SamplingConfig.from_values(temperature=0, default=trained).do_sample  # 0: greedy, as in the OpenAI API
    greedy = SamplingConfig.greedy()
    assert SamplingConfig.from_values(top_p=0.5, default=greedy) == greedy  # top_p alone keeps a greedy default
    assert SamplingConfig.from_values(temperature=0.5, default=greedy) == SamplingConfig(temperature=0.5)
    assert SamplingConfig.from_values(top_k=5) == SamplingConfig(top_k=5)  # no default: plain sampling
    with pytest.raises(ValueError, match="top_p must be in"):
        SamplingConfig.from_values(top_p=1.5, default=trained)
