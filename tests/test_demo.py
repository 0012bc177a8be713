"""ptp.demo on a tiny chat model: both decodings agree, the chunks are the forward calls and rebuild the text, the
legend and the totals are printed, and ``ptp demo`` fails when they disagree. The shipped model loads offline (once
its drafters ship)."""

import dataclasses
import io
import re

import pytest
import torch

import ptp
from ptp.cli import main
from ptp.default_model import DEFAULT_DIR, has_default
from ptp.demo import DEFAULT_ABOUT, QUESTIONS, question_ids, render, run_demo
from test_serve_scheduler import tiny_model as accepting_model
from test_serve_text import tiny_tokenizer

shipped = pytest.mark.skipif(not has_default(), reason="the default model's drafters are not shipped yet")


def test_answers_are_identical_and_each_chunk_is_one_forward_call():
    model, tokenizer = accepting_model(), tiny_tokenizer()
    out = io.StringIO()
    results = run_demo(model, tokenizer, questions=("w9 w10", "w11"), max_new_tokens=16, seed=3, out=out,
                       about="a tiny test model")  # fmt: skip
    for i, result in enumerate(results):
        assert result.identical and result.ar_calls == result.new_tokens
        assert len(result.chunks) == result.ptp_calls
        u = torch.rand((1, 16), generator=torch.Generator().manual_seed(3 + i))
        plain = ptp.sample_autoregressive(model, torch.tensor([question_ids(tokenizer, result.question)]),
                                          auxiliaries=u, max_new_tokens=16, sampling=model.config.sampling)  # fmt: skip
        assert "".join(result.chunks) == result.text == tokenizer.decode(plain.rows()[0], skip_special_tokens=True)
    tokens = sum(r.new_tokens for r in results)
    assert sum(r.ptp_calls for r in results) < tokens  # some calls committed several tokens
    printed = out.getvalue()
    assert printed.startswith("Model: a tiny test model.") and "[bracketed] chunks" in printed
    assert f"user: w9 w10\nassistant: [{results[0].chunks[0]}][" in printed
    assert f"all identical: True | {tokens} tokens | one token per call: {tokens} calls" in printed


def test_the_legend_names_the_model_and_a_terminal_gets_colours():
    assert "135M" in DEFAULT_ABOUT and len(QUESTIONS) == 3
    result = run_demo(accepting_model(), tiny_tokenizer(), questions=("w9",), max_new_tokens=8, out=io.StringIO())[0]
    coloured = render(result, colour=True)
    assert coloured.count("\033[38;5;33m") == (len(result.chunks) + 1) // 2  # blue, orange, blue, ...
    assert re.sub("\033\\[[0-9;]*m", "", coloured) == f"user: w9\nassistant: {result.text}"


@pytest.mark.skipif(has_default(), reason="the default model's drafters are shipped")
def test_ptp_demo_says_in_one_line_that_no_drafter_ships():
    with pytest.raises(SystemExit, match="^ptp demo: no adapter drafter for the default model"):
        main(["demo"])


def test_ptp_demo_exits_nonzero_when_the_answers_differ(monkeypatch, capsys):
    tiny = (accepting_model(), tiny_tokenizer())
    monkeypatch.setattr("ptp.default_model.load_default", lambda: tiny)
    assert main(["demo", "--max-new-tokens", "8"]) == 0
    from ptp import demo

    honest = demo.run_question
    monkeypatch.setattr(demo, "run_question", lambda *a, **k: dataclasses.replace(honest(*a, **k), identical=False))
    assert main(["demo", "--max-new-tokens", "8"]) == 1
    assert "all identical: False" in capsys.readouterr().out


@shipped
def test_shipped_files_stay_under_40_mb_and_have_a_model_card():
    size = sum(p.stat().st_size for p in DEFAULT_DIR.rglob("*") if p.is_file())
    assert size <= 40_000_000
    assert (DEFAULT_DIR / "MODEL_CARD.md").is_file()


@shipped
def test_default_model_loads_with_both_adapters():
    model, tokenizer = ptp.load_default()
    baseline, _ = ptp.load_default(adapter="independent")
    assert model.config.mode == "one_hot" and baseline.config.mode == "independent"
    assert model.base_model.config.vocab_size == len(tokenizer)
    with pytest.raises(ValueError, match="adapter"):
        ptp.load_default(adapter="other")


@shipped
def test_the_bench_defaults_to_the_teacher_and_both_shipped_adapters(tmp_path):
    from ptp.bench.harness import BenchConfig, with_default_model
    from ptp.default_model import adapter_paths, teacher_dir

    config = with_default_model(BenchConfig(prompts=str(tmp_path / "p.jsonl"), out=str(tmp_path / "out")))
    paths = adapter_paths()
    assert config.model == str(teacher_dir())
    assert (config.adapter, config.independent_adapter) == (str(paths["adapter"]), str(paths["independent"]))


@shipped
def test_demo_texts_are_identical_and_chunks_rebuild_the_text():
    model, tokenizer = ptp.load_default()
    out = io.StringIO()
    results = run_demo(model, tokenizer, questions=QUESTIONS[:1], max_new_tokens=24, out=out,
                       auxiliary_budget=4, max_draft_length=3)  # fmt: skip
    (result,) = results
    assert result.identical
    assert "".join(result.chunks) == result.text
    assert render(result, colour=False).startswith(f"user: {QUESTIONS[0]}\nassistant: [")
    assert "all identical: True" in out.getvalue()
