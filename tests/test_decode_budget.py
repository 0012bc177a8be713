"""ptp.decode.budget: how a fixed number of auxiliary slots per call is split across acceptance hypotheses."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ptp.decode.budget import (
    allocate,
    expected_commits,
    fastest_budget,
    hypothesis_weights,
    layout,
    slot_budget,
    survival,
)
from ptp.decode.cost import CallCost


def _confidences(draw, batch: int, size: int) -> torch.Tensor:
    """Rows like the engine's: 1 for the verified token, drafter confidences in [0, 1], then 0 for padding."""
    rows = []
    for _ in range(batch):
        valid = draw(st.integers(1, size))
        values = draw(st.lists(st.floats(0.0, 1.0), min_size=valid - 1, max_size=valid - 1))
        rows.append([1.0] + values + [0.0] * (size - valid))
    return torch.tensor(rows)


@given(data=st.data(), batch=st.integers(1, 4), size=st.integers(1, 8))
def test_hypothesis_weights_sum_to_one_and_follow_the_formula(data, batch, size):
    confidence = _confidences(data.draw, batch, size)
    weights = hypothesis_weights(confidence)
    assert (weights >= 0).all()
    assert torch.allclose(weights.sum(dim=1), torch.ones(batch), atol=1e-5)
    row, d = data.draw(st.integers(0, batch - 1)), data.draw(st.integers(0, size - 1))
    c = confidence[row].tolist() + [0.0]
    expected = torch.tensor(c[1 : d + 1]).prod().item() * (1.0 - c[d + 1])
    assert weights[row, d].item() == pytest.approx(expected, abs=1e-6)


def test_a_padded_hypothesis_has_no_weight():
    weights = hypothesis_weights(torch.tensor([[1.0, 0.8, 0.5, 0.0, 0.0]]))
    assert weights[0].tolist() == pytest.approx([0.2, 0.4, 0.4, 0.0, 0.0])


@given(data=st.data(), batch=st.integers(1, 4), groups=st.integers(1, 6), longest=st.integers(1, 6))
def test_allocate_spends_exactly_the_budget_and_layout_gives_each_group_a_prefix(data, batch, groups, longest):
    weights = hypothesis_weights(_confidences(data.draw, batch, groups))
    curve = survival(data.draw(st.one_of(st.none(), _histograms(longest))), longest)
    budget = data.draw(st.integers(0, groups * longest))
    lengths = allocate(weights, curve, budget)
    assert lengths.shape == (batch, groups)
    assert (lengths >= 0).all() and (lengths <= longest).all()
    assert (lengths.sum(dim=1) == budget).all()

    group, index, start = layout(lengths, budget)
    assert torch.equal(start, lengths.cumsum(dim=1) - lengths)
    for b in range(batch):
        expected_group = torch.repeat_interleave(torch.arange(groups), lengths[b])
        expected_index = torch.cat([torch.arange(int(n)) for n in lengths[b]])
        assert torch.equal(group[b], expected_group), "slots must be laid out group after group, in order of d"
        assert torch.equal(index[b], expected_index), "each group must be a prefix 0..L-1 of its slots"


def _histograms(longest: int):
    return st.lists(st.floats(0.0, 1.0), min_size=longest + 1, max_size=longest + 1).filter(lambda h: sum(h) > 0)


def test_allocate_gives_the_slots_to_the_likely_hypotheses():
    weights = torch.tensor([[0.7, 0.3, 0.0, 0.0]])
    curve = survival(None, 4)  # 1, 0.6, 0.36, 0.216
    # worth: d=0: .7 .42 .252 .151; d=1: .3 .18 .108 .065 -> the best five: .7 .42 .3 .252 .18
    assert allocate(weights, curve, 5).tolist() == [[3, 2, 0, 0]]
    assert allocate(weights, curve, 8).tolist() == [[4, 4, 0, 0]]
    assert allocate(weights, curve, 1).tolist() == [[1, 0, 0, 0]]
    assert allocate(weights, curve, 0).tolist() == [[0, 0, 0, 0]]


def test_allocate_is_per_row():
    weights = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert allocate(weights, survival(None, 3), 3).tolist() == [[3, 0, 0], [0, 0, 3]]


def test_survival_from_an_acceptance_histogram():
    # Fractions of windows whose correct prefix was 0, 1, 2, 3: P(prefix >= n) = 1, .9, .7, .4
    curve = survival([0.1, 0.2, 0.3, 0.4], 5)
    assert curve[:3].tolist() == pytest.approx([1.0, 0.7 / 0.9, 0.4 / 0.9])
    assert (curve[3:] > 0).all() and (curve[3:] < 1e-8).all(), "beyond the histogram: a tiny positive floor"
    assert (curve[1:] < curve[:-1]).all(), "strictly decreasing, so that every group's slots form a prefix"


def test_survival_without_a_histogram_is_geometric_and_never_zero():
    assert survival(None, 4).tolist() == pytest.approx([1.0, 0.6, 0.36, 0.216])
    never_correct = survival([1.0, 0.0, 0.0], 3)
    assert never_correct[0].item() == 1.0 and (never_correct > 0).all()
    assert (never_correct[1:] < never_correct[:-1]).all()


@pytest.mark.parametrize(
    "window, device, budget, draft, expected",
    [
        (16, "cpu", 12, None, (12, 16)),  # a budget given: groups up to the window
        (16, "cpu", 0, 5, (0, 5)),
        (16, "cuda", None, None, (32, 16)),  # a GPU: twice the window
        (16, torch.device("cuda", 1), 6, None, (6, 16)),
        (5, "mps", None, 2, (10, 2)),
    ],
)
def test_the_default_slot_budget_follows_the_device(window, device, budget, draft, expected):
    assert slot_budget(window, device, budget, draft) == expected


def test_a_cpus_default_budget_is_the_fastest_under_the_measured_cost():
    histogram = [0.1, 0.2, 0.3, 0.2, 0.1, 0.1]
    cost = CallCost.linear(fixed=0.05, per_position=0.01)
    assert slot_budget(5, "cpu", histogram=histogram, call_cost=cost) == fastest_budget(histogram, cost, 5)
    assert slot_budget(5, "cpu", None, 3, histogram=histogram, call_cost=cost)[1] == 3
    with pytest.raises(ValueError, match="needs the call's cost"):
        slot_budget(5, "cpu")


def test_a_measured_cost_keeps_the_search_to_the_sizes_it_measured():
    """Measured as on 2 cores of an Intel Xeon (seconds of SmolLM2-135M's calls by positions, BENCHMARKS.md): 16
    positions cost less than 8 or 12, and what lies between the sizes is unknown, so only measured sizes are chosen."""
    measured = CallCost(((2, 0.091), (3, 0.091), (4, 0.132), (6, 0.148), (8, 0.170), (12, 0.203), (16, 0.152),
                         (24, 0.188), (32, 0.202)))  # fmt: skip
    good = [0.05, 0.05, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.0, 0.0, 0.0, 0.0]
    slots, draft = fastest_budget(good, measured, 16)
    assert slots + draft in measured.sizes
    assert measured(16) < measured(12) and measured(14) == pytest.approx((0.203 + 0.152) / 2)
    assert measured(1) == pytest.approx(0.091) and measured(48) > measured(32)
    only_large = CallCost(((40, 1.0), (48, 1.1)))  # nothing measured fits a window of 4: every size is searched
    assert fastest_budget(good[:5], only_large, 4) == fastest_budget(good[:5], only_large.__call__, 4)
    with pytest.raises(ValueError, match="distinct sizes"):
        CallCost(((4, 0.1), (4, 0.2)))


def test_past_the_measured_sizes_a_call_never_costs_less_than_the_nearest_measured_one():
    """Timing noise can make the two largest sizes fall (2 positions 14 ms, 3 positions 11 ms): a larger call is then
    priced as the largest measured one, never at zero, and the search still finds a budget."""
    falling = CallCost(((2, 0.0142), (3, 0.0113)))
    assert falling(6) == pytest.approx(0.0113) and falling(1) == pytest.approx(0.0142)
    rising = CallCost(((2, 0.01), (4, 0.02)))
    assert rising(8) == pytest.approx(0.04)
    assert fastest_budget(None, falling, 1, 5) == (1, 5)


def test_expected_commits_follow_the_allocation_by_hand():
    # S = 1, 0.8, 0.3: P(d) = 0.2, 0.5, 0.3; three slots go to group 1 (worth 0.5, 0.4) and group 2 (0.3).
    curve = torch.tensor([1.0, 0.8, 0.3])
    assert allocate(torch.tensor([[0.2, 0.5, 0.3]]), curve, 3).tolist() == [[0, 2, 1]]
    assert expected_commits(curve, 3) == pytest.approx(0.2 * 1 + 0.5 * (1 + 0.8) + 0.3 * 1)
    assert expected_commits(curve, 1) == pytest.approx(1.0)  # group 1 alone: one slot leaves no draft


@given(histogram=st.lists(st.floats(0.0, 1.0), min_size=5, max_size=5).filter(lambda h: sum(h) > 0))
def test_expected_commits_never_fall_as_slots_are_added_and_stay_within_the_group_length(histogram):
    histogram = [h / sum(histogram) for h in histogram]
    curve = survival(histogram, 4)
    commits = [expected_commits(curve, budget) for budget in range(1, 17)]
    assert all(b >= a - 1e-6 for a, b in zip(commits, commits[1:], strict=False))
    assert min(commits) >= 1.0 - 1e-6 and max(commits) <= 4.0 + 1e-6


def test_the_fastest_budget_is_generous_where_positions_are_free_and_lean_where_they_cost():
    perfect = [0.0] * 8 + [1.0]  # every window of 8 right
    assert fastest_budget(perfect, lambda positions: 1.0, 8) == (8, 8)  # the one live group, whole
    assert fastest_budget(perfect, lambda positions: float(positions), 8)[0] <= 2
    useless = [1.0] + [0.0] * 8  # nothing right: one slot is all a call needs
    assert fastest_budget(useless, lambda positions: 1.0 + 0.1 * positions, 8) == (1, 1)
