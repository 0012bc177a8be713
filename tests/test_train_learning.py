"""Proof that distillation learns: on a language where independent prediction provably fails, the distilled O-PTP
drafter predicts far more tokens per window than the independent baseline, and the engine with it commits several
tokens per call while its output stays exactly plain sampling with the same auxiliaries.

The language (:class:`ptp.data.synthetic.WordLanguage`): words of 4 tokens, each one of 4 words chosen uniformly.
After a word boundary the baseline, which cannot see u, guesses the word right one time in four and stops; O-PTP
reads the choice from u. The teacher is a tiny Llama trained here for 200 steps of plain next-token prediction; the
two drafters train for the same 500 steps, the baseline in a second process through ``ptp distill`` (the two runs
take one CPU core each).
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import ptp
from conftest import assert_same_tokens
from ptp.data import Document, PregenerateConfig, pack_documents, pregenerate
from ptp.data.synthetic import WordLanguage
from ptp.train import DistillConfig, distill, train_autoregressive

SAMPLING = ptp.SamplingConfig(temperature=1.0)
# Measured on this tiny model: a thermometer code of u trains several times faster than the binary expansion, and
# a constant learning rate after warm-up reaches a correct prefix of 5.6-6.7 (three seeds) in 500 steps.
DRAFTER = dict(
    window_length=8,
    embedding="thermometer",
    embedding_size=32,
    lora_rank=16,
    windows_per_row=32,
    batch_size=8,
    max_steps=500,
    learning_rate=3e-3,
    min_lr_ratio=1.0,
    warmup_steps=10,
    eval_interval=0,
    checkpoint_interval=0,
    row_length=128,
    eval_fraction=0.1,
    progress=False,
    device="cpu",
)


@pytest.mark.slow
def test_o_ptp_doubles_the_independent_baseline_and_decodes_exactly_with_several_tokens_per_call(tmp_path):
    language = WordLanguage(num_words=4, word_length=4)
    torch.manual_seed(0)
    teacher = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=language.vocab_size,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
        )
    )
    corpus = [Document(torch.tensor(d), 1, i) for i, d in enumerate(language.sample(512, 12, seed=1))]
    losses = train_autoregressive(teacher, pack_documents(corpus, 128)[0], steps=200, batch_size=8, learning_rate=1e-2)
    entropy = math.log(language.num_words) / language.word_length  # nats per token of the language
    assert losses[-1] < entropy + 0.1

    prompts = [d[: 1 + language.word_length] for d in language.sample(128, 1, seed=2)]
    config = PregenerateConfig(n_per_prompt=4, max_new_tokens=100, sampling=SAMPLING, batch_size=128, eos_token_id=[])
    data = pregenerate(teacher, prompts, tmp_path / "data", config, progress=False)
    teacher.save_pretrained(tmp_path / "teacher")

    overrides = [f"{k}={json.dumps(v)}" for k, v in DRAFTER.items()]
    baseline = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ptp.cli",
            "distill",
            "--model",
            str(tmp_path / "teacher"),
            "--data",
            str(data),
            "--out",
            str(tmp_path / "independent"),
            "--mode",
            "independent",
            *(a for o in overrides for a in ("--set", o)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        o_ptp = distill(
            DistillConfig(data=str(data), out=str(tmp_path / "o_ptp"), mode="one_hot", **DRAFTER),
            base_model=copy.deepcopy(teacher),
        )
        stdout, stderr = baseline.communicate(timeout=600)
    finally:
        baseline.kill()
    assert baseline.returncode == 0, stderr[-3000:]
    independent = json.loads(stdout.strip().splitlines()[-1])
    ours, theirs = o_ptp.evaluation["correct_prefix"], independent["correct_prefix"]
    print(f"correct prefix: O-PTP {ours:.2f}, independent {theirs:.2f} (window {DRAFTER['window_length']})")
    assert ours >= 2 * theirs

    model = o_ptp.model.eval()
    prompt = torch.tensor([d[: 1 + language.word_length] for d in language.sample(8, 1, seed=3)])
    u = torch.rand(8, 64, generator=torch.Generator().manual_seed(4))
    # A GPU's default budget (on a CPU the default groups are at most 3 long).
    budget = dict(auxiliary_budget=2 * model.config.window_length, max_draft_length=model.config.window_length)
    out = model.generate(prompt, max_new_tokens=64, auxiliaries=u, sampling=SAMPLING, eos_token_id=[], **budget)
    expected = ptp.sample_autoregressive(teacher, prompt, auxiliaries=u, max_new_tokens=64, eos_token_id=[],
                                         sampling=SAMPLING)  # fmt: skip
    assert_same_tokens(out, expected)
    print(f"tokens per call: {out.tokens_per_call:.2f}")
    assert out.tokens_per_call > 2
