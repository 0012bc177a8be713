"""Overlap with an evaluation set: normalisation, exact matches, shared runs of words, short turns, file formats."""

from __future__ import annotations

import json

import pytest

from ptp.data.overlap import EvaluationIndex, normalise, overlap_report, read_evaluation_turns


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_normalise_keeps_words_only():
    assert normalise("  Hello, WORLD!\n`json.dumps()` -- ÉTÉ_2") == "hello world json dumps été 2"


def test_exact_near_and_unrelated_texts(tmp_path):
    question = "Describe the migration route of arctic terns across both hemispheres in detail."
    index = EvaluationIndex([_jsonl(tmp_path / "q.jsonl", [{"turns": [question, "Now shorten it."]}])], ngram=8)
    assert (
        index.collision(["describe the MIGRATION route of arctic terns, across both hemispheres in detail"]) == "exact"
    )
    # Eight consecutive words of the question inside another text.
    assert (
        index.collision(["Hi!", "Tell me: migration route of arctic terns across both hemispheres, please."]) == "near"
    )
    # Seven are not enough.
    assert index.collision(["migration route of arctic terns across both"]) is None
    # A short turn (at least MIN_RUN words) counts as a run of its own length; shorter ones only match exactly.
    assert index.collision(["Okay. Now shorten it, please."]) is None  # three words
    index = EvaluationIndex([_jsonl(tmp_path / "r.jsonl", [{"prompt": "Name five red fruits."}])])
    assert index.collision(["Could you name five red fruits for me?"]) == "near"


def test_report_counts_and_positions(tmp_path):
    path = _jsonl(tmp_path / "q.jsonl", [{"messages": [{"role": "user", "content": "What is the capital of Peru?"}]}])
    prompts = ["Unrelated text.", {"messages": [{"role": "user", "content": "what is the capital of peru"}]},
               {"prompt": "Tell me: what is the capital of Peru, and why?"}]  # fmt: skip
    report = overlap_report(prompts, path)
    assert (report["exact"], report["near"]) == (1, 1)
    assert (report["exact_indices"], report["near_indices"]) == ([1], [2])


def test_bad_evaluation_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_evaluation_turns(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="needs 'turns'"):
        read_evaluation_turns(_jsonl(tmp_path / "a.jsonl", [{"question": "x"}]))
    (tmp_path / "b.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no evaluation turns"):
        read_evaluation_turns(tmp_path / "b.jsonl")
