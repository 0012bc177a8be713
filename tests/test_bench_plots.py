import pytest

from ptp.bench.plots import MIN_CALLS, draft_accuracy, supported_rates
from ptp.bench.report import TurnRecord, draft_acceptance


def _turn(accepts: list[int]) -> TurnRecord:
    return TurnRecord([], "", 0.0, [0.0], len(accepts), [n + 1 for n in accepts], accepts)


def test_draft_positions_that_too_few_calls_tried_are_left_out():
    # 20 calls: every one tries draft 1, 12 accept it and try draft 2, 3 accept that and try draft 3.
    acceptance = draft_acceptance([_turn([0] * 8 + [1] * 9 + [2] * 2 + [3])])
    assert acceptance["conditional"] == pytest.approx([12 / 20, 3 / 12, 1 / 3])
    assert MIN_CALLS == 10
    assert supported_rates(acceptance) == pytest.approx([12 / 20, 3 / 12])


def test_the_plot_is_written_with_or_without_drafting_methods(tmp_path):
    drafting = {"methods": {"ptp": {"draft_acceptance": draft_acceptance([_turn([1] * 12)])}}}
    plain = {"methods": {"ar": {"draft_acceptance": None}}}
    for name, summary in [("drafting", drafting), ("plain", plain)]:
        path = draft_accuracy(summary, tmp_path / f"{name}.png")
        assert path.stat().st_size > 0
