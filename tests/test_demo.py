"""The shipped model loads offline and the demo's two decodings agree."""

import io

import pytest
import torch

import ptp
from ptp.default_model import DEFAULT_DIR, has_default
from ptp.demo import render, run_demo

pytestmark = pytest.mark.skipif(not has_default(), reason="the default model is not installed")


def test_shipped_files_stay_under_40_mb_and_have_a_model_card():
    size = sum(p.stat().st_size for p in DEFAULT_DIR.rglob("*") if p.is_file())
    assert size <= 40_000_000
    assert (DEFAULT_DIR / "MODEL_CARD.md").is_file()


def test_default_model_loads_with_both_adapters():
    model, tokenizer = ptp.load_default()
    baseline, _ = ptp.load_default(adapter="independent")
    assert model.config.mode == "one_hot" and baseline.config.mode == "independent"
    assert model.base_model.config.vocab_size == len(tokenizer)
    with pytest.raises(ValueError, match="adapter"):
        ptp.load_default(adapter="other")


def test_shipped_draft_model_serves_assisted_generation_and_is_the_bench_default(tmp_path):
    from transformers import AutoModelForCausalLM

    from ptp.bench.harness import BenchConfig, with_default_model
    from ptp.default_model import default_paths

    paths = default_paths()
    config = with_default_model(BenchConfig(prompts=str(tmp_path / "p.jsonl"), out=str(tmp_path / "out")))
    assert config.draft_model == str(paths["draft"]) and config.model == str(paths["teacher"])
    model, tokenizer = ptp.load_default()
    teacher = model.base_model
    draft = AutoModelForCausalLM.from_pretrained(paths["draft"], dtype=torch.float32)
    assert draft.config.vocab_size == teacher.config.vocab_size
    ids = tokenizer("def add(a, b):\n", return_tensors="pt").input_ids
    options = dict(do_sample=False, max_new_tokens=24, pad_token_id=tokenizer.eos_token_id)
    assert torch.equal(teacher.generate(ids, assistant_model=draft, **options), teacher.generate(ids, **options))


def test_demo_texts_are_identical_and_chunks_rebuild_the_text():
    model, tokenizer = ptp.load_default()
    out = io.StringIO()
    results = run_demo(model, tokenizer, prompts=("def add(a, b):\n",), max_new_tokens=24, out=out,
                       auxiliary_budget=4, max_draft_length=3)  # fmt: skip
    (result,) = results
    assert result.identical
    assert "".join(result.chunks) == result.text
    assert render(result, colour=False).startswith("def add(a, b):\n[")
    assert "all identical: True" in out.getvalue()
