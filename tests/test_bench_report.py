"""Aggregates of the summary: tau, tokens/s, speedups, agreement with ar, histograms, draft accuracy."""

from __future__ import annotations

import pytest

from ptp.bench.prompts import Question
from ptp.bench.report import QuestionRecord, TurnRecord, answer_line, draft_acceptance, markdown, summarize


def _turn(tokens, seconds, accepts, drafts=()):
    return TurnRecord(tokens, "x", seconds, [seconds], len(accepts), accepts, list(drafts))


def _records():
    a = Question(1, "coding", ("q",), chat=False)
    b = Question(2, "math", ("q",), chat=False)
    return {
        "ar": [QuestionRecord(a, [_turn([1, 2, 3, 4], 4.0, [1] * 4)]), QuestionRecord(b, [_turn([5, 6], 2.0, [1, 1])])],
        "ptp": [
            QuestionRecord(a, [_turn([1, 2, 3, 4], 1.0, [1, 3], [2])]),
            QuestionRecord(b, [_turn([5, 6], 1.0, [1, 1], [0])]),
        ],
        "hf": [QuestionRecord(a, [_turn([1, 2, 3, 9], 2.0, [1] * 4)]), QuestionRecord(b, [_turn([5, 6], 2.0, [1, 1])])],
    }


def test_summary_numbers():
    summary = summarize(_records(), greedy=True)
    ptp, hf = summary["methods"]["ptp"], summary["methods"]["hf"]
    assert summary["categories"] == ["coding", "math"]
    assert ptp["all"]["tau"] == pytest.approx(6 / 4)
    assert ptp["all"]["tokens_per_s"] == pytest.approx(3.0)
    assert ptp["all"]["ms_per_call"] == pytest.approx(1e3 * 2.0 / 4)
    assert ptp["all"]["speedup_over_ar"] == pytest.approx(3.0 / 1.0)
    assert ptp["categories"]["coding"]["speedup_over_ar"] == pytest.approx(4.0)
    assert ptp["all"]["speedup_over_hf"] == pytest.approx(3.0 / 1.5)
    assert ptp["all"]["speedup_over_hf-static"] is None  # that baseline did not run
    assert ptp["all"]["matches_ar"] is True
    assert (hf["all"]["matches_ar"], hf["all"]["matching_turns"], hf["all"]["compared_turns"]) == (False, 1, 2)
    assert hf["categories"]["math"]["matches_ar"] is True
    assert hf["ar_mismatches"] == [{"question_id": 1, "turn": 0, "first_difference": 3, "tokens": 4, "ar_tokens": 4}]
    assert ptp["ar_mismatches"] == []
    assert ptp["accept_histogram"] == [0, 3, 0, 1]
    assert ptp["draft_acceptance"] == {"calls": 2, "at_least": [0.5, 0.5], "conditional": [0.5, 1.0]}
    assert summary["methods"]["ar"]["draft_acceptance"] is None


def test_draft_acceptance_counts_short_calls_as_rejections():
    out = draft_acceptance([_turn([], 1.0, [], [3, 1, 0, 1])])
    assert out["at_least"] == [0.75, 0.25, 0.25]
    assert out["conditional"] == [0.75, pytest.approx(1 / 3), 1.0]
    assert draft_acceptance([_turn([], 1.0, [])]) is None


def test_markdown_flags_an_unexpected_mismatch():
    summary = summarize(_records(), greedy=True)
    summary["environment"] = {"device_name": "cpu", "device": "cpu", "torch": "x", "transformers": "y"}
    summary["config"] = {
        "model": "m",
        "dtype": "float32",
        "sampling": "greedy",
        "max_new_tokens": 4,
        "repeats": 1,
        "warmup": 0,
    }
    summary["warmup_s"] = {"ar": 0.5, "hf": 0.3}
    text = markdown(summary)
    assert "| hf | all | 2 | 6 |" in text and "no (1/2) UNEXPECTED" in text
    assert "warm-up seconds (hf-static: mostly compilation): ar 0.5, hf 0.3" in text
    assert "hf differs from ar: q1 turn 0 at token 3." in text
    sampled = summarize(_records(), greedy=False)
    sampled["environment"], sampled["config"], sampled["warmup_s"] = summary["environment"], summary["config"], {}
    assert "UNEXPECTED" not in markdown(sampled)
    # In 16 bits, greedy: transformers' calls have other shapes than ar's, so only the engine's drafters must agree.
    rounded = summarize(_records(), greedy=True, exact=False)
    assert not rounded["methods"]["hf"]["expected_to_match_ar"] and rounded["methods"]["ptp"]["expected_to_match_ar"]


def test_answer_line_has_spec_bench_fields():
    record = _records()["ptp"][0]
    line = answer_line("ptp", "tiny", record)
    assert line["question_id"] == 1 and line["category"] == "coding" and line["model_id"] == "tiny-ptp"
    choice = line["choices"][0]
    assert choice["new_tokens"] == [4] and choice["wall_time"] == [1.0] and choice["accept_lengths"] == [1, 3]
    assert choice["turns"] == ["x"] and choice["decoding_steps"] == [2]


def test_mismatches_list_the_first_differing_turn_of_each_question():
    question = Question(7, "writing", ("a", "b"), chat=True)
    ar = [QuestionRecord(question, [_turn([1, 2], 1.0, [1, 1]), _turn([3], 1.0, [1])])]
    other = [QuestionRecord(question, [_turn([1, 5, 6], 1.0, [1, 1, 1]), _turn([4], 1.0, [1])])]
    summary = summarize({"ar": ar, "ptp": other}, greedy=True)
    entry = summary["methods"]["ptp"]
    assert entry["ar_mismatches"] == [{"question_id": 7, "turn": 0, "first_difference": 1, "tokens": 3, "ar_tokens": 2}]
    assert (entry["all"]["matching_turns"], entry["all"]["compared_turns"]) == (0, 2)
