"""ptp.data.self_prompts: the prompts are the model's own user turns (the reference sampler's, cut at their end token),
those dropped are counted, evaluation turns stay out, and ``ptp self-prompts`` writes them."""

from __future__ import annotations

import json

import pytest
import torch

import ptp
from ptp.cli import main
from ptp.data.overlap import normalise
from ptp.data.self_prompts import CATEGORY, PATIENCE, SelfPromptConfig, sample_self_prompts, user_turn_opening
from test_serve_scheduler import near_uniform_base
from test_serve_text import tiny_tokenizer

EOS = 2


@pytest.fixture(scope="module")
def base():
    return near_uniform_base().eval()


def test_the_opening_is_the_chat_template_up_to_the_users_text():
    tokenizer = tiny_tokenizer()
    assert user_turn_opening(tokenizer) == tokenizer("user :", add_special_tokens=False).input_ids
    with_system = user_turn_opening(tokenizer, system="w9 w10")
    assert with_system == tokenizer("system : w9 w10 user :", add_special_tokens=False).input_ids
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        user_turn_opening(tokenizer)


def _oracle(base, tokenizer, config: SelfPromptConfig) -> list[str]:
    """The prompts as the reference sampler gives them: round by round, each row sampled alone with its u's, kept if
    it ended with EOS, has a word count within the limits and is new."""
    opening = torch.tensor([user_turn_opening(tokenizer)])
    kept: list[str] = []
    for round_ in range(PATIENCE):
        u = torch.rand((config.batch_size, config.max_new_tokens),
                       generator=torch.Generator().manual_seed(config.seed * 1_000_003 + round_))  # fmt: skip
        for row in range(config.batch_size):
            out = ptp.sample_autoregressive(base, opening, auxiliaries=u[row : row + 1], eos_token_id=EOS,
                                            max_new_tokens=config.max_new_tokens, sampling=config.sampling)  # fmt: skip
            turn = out.rows()[0]
            if not turn or turn[-1] != EOS:
                continue
            text = tokenizer.decode(turn[:-1], skip_special_tokens=True).strip()
            if config.min_words <= len(text.split()) <= config.max_words and text not in kept:
                kept.append(text)
            if len(kept) == config.count:
                return kept
    raise AssertionError("the oracle found too few turns")


def test_the_prompts_are_the_reference_samplers_turns_that_ended(base):
    tokenizer = tiny_tokenizer()
    config = SelfPromptConfig(count=6, seed=3, batch_size=8, max_new_tokens=48, min_words=2, max_words=30)
    built = sample_self_prompts(base, tokenizer, config, progress=False)
    texts = [r["messages"][0]["content"] for r in built.records]
    assert texts == _oracle(base, tokenizer, config)
    assert all(r["category"] == CATEGORY and [m["role"] for m in r["messages"]] == ["user"] for r in built.records)
    assert built.dropped["unfinished"] > 0 and built.dropped["length"] > 0  # both limits were met on the way
    again = sample_self_prompts(base, tokenizer, config, progress=False)
    assert again.records == built.records  # the seed fixes the set


def test_evaluation_turns_are_left_out_and_counted(base, tmp_path):
    tokenizer = tiny_tokenizer()
    config = SelfPromptConfig(count=4, seed=1, batch_size=8, max_new_tokens=48, min_words=2, max_words=30)
    first = [r["messages"][0]["content"] for r in sample_self_prompts(base, tokenizer, config, progress=False).records]
    evaluation = tmp_path / "question.jsonl"
    evaluation.write_text(json.dumps({"question_id": 1, "category": "x", "turns": [first[1].upper()]}) + "\n")
    built = sample_self_prompts(base, tokenizer, config, exclude=[evaluation], progress=False)
    texts = [r["messages"][0]["content"] for r in built.records]
    assert normalise(first[1]) not in {normalise(t) for t in texts} and built.dropped["exact"] == 1
    assert texts[:1] == first[:1] and texts[1:3] == first[2:]  # the rest as before, one more drawn at the end
    assert built.report()["dedup"]["exact_left"] == 0


def test_a_model_whose_turns_never_fit_stops_with_a_clear_error(base):
    config = SelfPromptConfig(count=2, batch_size=4, max_new_tokens=8, min_words=100, max_words=200)
    with pytest.raises(ValueError, match=f"{PATIENCE} rounds of 4 sampled user turns in a row kept none"):
        sample_self_prompts(base, tiny_tokenizer(), config, progress=False)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="count must be an integer >= 1"):
        SelfPromptConfig(count=0)
    with pytest.raises(ValueError, match="min_words"):
        SelfPromptConfig(min_words=10, max_words=5)


def test_ptp_self_prompts_writes_the_prompts_and_a_report(base, tmp_path, capsys):
    model_dir = tmp_path / "model"
    base.save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    out = tmp_path / "prompts.jsonl"
    argv = ["self-prompts", "--model", str(model_dir), "--out", str(out), "--count", "3", "--seed", "3",
            "--batch-size", "8", "--max-new-tokens", "48", "--min-words", "2", "--max-words", "30", "--device", "cpu",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    config = SelfPromptConfig(count=3, seed=3, batch_size=8, max_new_tokens=48, min_words=2, max_words=30)
    assert [r["messages"][0]["content"] for r in records] == _oracle(base, tiny_tokenizer(), config)
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert report["size"] == 3 and report["categories"] == {CATEGORY: 3} and report["dropped"]["unfinished"] > 0
