"""The ceiling of drafters that ignore u: calls counted by hand, and the mode runs of a tiny teacher's own samples."""

from __future__ import annotations

import json

import pytest
import torch

import ptp
import ptp.data
from conftest import tiny_base
from ptp.cli import main
from ptp.science import ceiling
from ptp.science.ceiling import bin_agreement, calls_for, mode_chain_ceiling
from train_support import make_data

T, F = True, False


@pytest.mark.parametrize(
    ("modes", "window", "known_first", "calls"),
    [
        ([T] * 10, 4, False, 4),  # token 0 from the prefill, then 3 drafts + 1 a call: up to 4, 8, then 9
        ([F] * 10, 4, False, 10),  # no draft ever holds: one token a call
        ([F, T, T, T], 16, False, 3),  # the drafts after token 0 bet it is the mode: lost; the next call's hold
        ([F, T, T, T], 16, True, 2),  # the first token known: its drafts hold
        ([T, T, F, T, T], 2, False, 4),  # a group of two slots proposes one draft
    ],
)
def test_calls_are_counted_as_the_decoder_commits_tokens(modes, window, known_first, calls):
    assert calls_for(modes, window, known_first) == calls


def test_greedy_samples_are_all_modes_and_sampled_ones_bound_the_drafters(tmp_path):
    teacher = tiny_base("llama")
    greedy = make_data(tmp_path / "greedy", teacher, sampling=ptp.SamplingConfig(do_sample=False), max_new_tokens=16)
    result = mode_chain_ceiling(teacher, greedy, windows=[4, 8])
    assert result["mode_rate"] == 1.0 and result["tokens"] == 6 * 3 * 16
    assert result["windows"][4] == {"mode_chain": 16 / 5, "known_first": 16 / 5}  # prefill, then 4 + 4 + 4 + 3

    sampled = mode_chain_ceiling(teacher, make_data(tmp_path / "sampled", teacher), windows=[1, 4, 16])
    assert 0 < sampled["mode_rate"] < 1 and sampled["sampling"]["temperature"] == 0.9
    taus = sampled["windows"]
    assert taus[1] == {"mode_chain": 1.0, "known_first": 1.0}
    assert 1 < taus[4]["mode_chain"] <= taus[16]["mode_chain"] < taus[16]["known_first"]


def test_the_command_prints_the_table_and_refuses_another_models_data(tmp_path, capsys):
    teacher = tiny_base("llama")
    teacher.save_pretrained(tmp_path / "teacher")
    data = make_data(tmp_path / "data", teacher)
    assert main(["ceiling", "--model", str(tmp_path / "teacher"), "--data", str(data), "--windows", "2,4",
                 "--no-progress", "--out", str(tmp_path / "c.json")]) == 0  # fmt: skip
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads((tmp_path / "c.json").read_text()) and set(printed["windows"]) == {"2", "4"}
    tiny_base("llama", seed=1).save_pretrained(tmp_path / "other")
    with pytest.raises(SystemExit, match="another model"):
        main(["ceiling", "--model", str(tmp_path / "other"), "--data", str(data), "--no-progress"])
    with pytest.raises(SystemExit, match="--windows"):
        main(["ceiling", "--data", str(data), "--windows", "4,x"])
    with pytest.raises(ValueError, match="max_documents"):
        mode_chain_ceiling(teacher, data, max_documents=0)
    with pytest.raises(ValueError, match="16-bit"):
        mode_chain_ceiling(teacher, data, bins_in="float32")


def test_bins_computed_in_16_bits_mostly_agree_with_float32_and_the_command_reports_it(tmp_path, capsys, monkeypatch):
    teacher = tiny_base("llama")
    teacher.save_pretrained(tmp_path / "teacher")
    data = make_data(tmp_path / "data", teacher)
    measured = bin_agreement(teacher, ptp.data.load_dataset(data), torch.bfloat16)
    assert measured["positions"] + measured["empty"] == 6 * 3 * 12
    assert 0.8 < measured["agreement"] <= 1.0 and measured["dtype"] == "bfloat16"
    assert main(["ceiling", "--model", str(tmp_path / "teacher"), "--data", str(data), "--bins-in", "bfloat16",
                 "--no-progress"]) == 0  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("bins in bfloat16: a u drawn in them picks the float32 token")
    assert json.loads(lines[-1])["bins"] == measured

    # 16-bit bins that are the float32 bins shifted by a tenth of their width agree on nine tenths of them.
    real, full = ceiling.bins, []

    def bins(logits, tokens, sampling):
        if not full:  # the full-precision pass of a document
            full.append(real(logits, tokens, sampling))
            return full[-1]
        left, right = full.pop()
        return left + 0.1 * (right - left), right + 0.1 * (right - left)

    monkeypatch.setattr(ceiling, "bins", bins)
    shifted = bin_agreement(teacher, ptp.data.load_dataset(data), torch.bfloat16)
    assert shifted["agreement"] == pytest.approx(0.9, abs=1e-4) and shifted["empty"] == 0
