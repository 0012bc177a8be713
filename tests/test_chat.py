"""ptp.chat: a conversation decoded with the drafter streams exactly plain decoding's text, keeps its history, and the
loop handles /reset, /quit and the end of its input; ``ptp chat`` loads models and refuses bad combinations in one
line."""

from __future__ import annotations

import io

import pytest
import torch

import ptp
from conftest import EOS, randomize_adapter, tiny_base
from ptp.chat import PLAIN_SAMPLING, Chat, load_chat_model, run_chat
from ptp.cli import main
from ptp.data.prompts import Prompt, encode_prompts
from test_serve_scheduler import tiny_model as accepting_model
from test_serve_text import byte_tokenizer, tiny_tokenizer


def tiny_chat_model() -> ptp.PTPModel:
    """A tiny Llama with a drafter of large random weights (its drafts are mostly rejected)."""
    model = ptp.PTPModel(tiny_base("llama", seed=1)).eval()
    randomize_adapter(model)
    return model


def plain_text(model, tokenizer, messages, max_new_tokens: int, seed: int, sampling) -> str:
    """Plain one-token-per-call sampling of the conversation with the seed's u's, as text."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tokenizer(text, add_special_tokens=False).input_ids])
    u = torch.rand((1, max_new_tokens), generator=torch.Generator().manual_seed(seed))
    out = ptp.sample_autoregressive(model, ids, auxiliaries=u, max_new_tokens=max_new_tokens, sampling=sampling,
                                    eos_token_id=EOS)  # fmt: skip
    return tokenizer.decode(out.rows()[0], skip_special_tokens=True, clean_up_tokenization_spaces=False)


def test_streamed_answers_equal_plain_sampling_turn_after_turn():
    model, tokenizer = accepting_model(), tiny_tokenizer()  # calls commit several tokens: the stream gets them at once
    chat = Chat(model, tokenizer, system="w40 w41", max_new_tokens=20, seed=5, threads=None)
    conversation = [{"role": "system", "content": "w40 w41"}]
    for turn, question in enumerate(["w9 w10 w11", "w12 w13"]):
        out = io.StringIO()
        reply = chat.answer(question, out)
        conversation.append({"role": "user", "content": question})
        assert out.getvalue() == reply.text
        assert reply.text == plain_text(model, tokenizer, conversation, 20, 5 + turn, model.config.sampling)
        assert 1 <= reply.calls < reply.tokens == 20
        conversation.append({"role": "assistant", "content": reply.text.strip()})
        assert chat.history == conversation[1:]
    chat.reset()
    assert chat.history == [] and chat.messages("w9") == [conversation[0], {"role": "user", "content": "w9"}]


def test_plain_decoding_gives_the_same_text_and_the_drafter_trained_sampling_is_the_default():
    model, tokenizer = tiny_chat_model(), tiny_tokenizer()
    assert Chat(model, tokenizer).sampling == model.config.sampling
    fast = Chat(model, tokenizer, max_new_tokens=16, seed=2).answer("w20 w21", io.StringIO())
    plain = Chat(model, tokenizer, max_new_tokens=16, seed=2, use_drafter=False).answer("w20 w21", io.StringIO())
    assert plain.text == fast.text and plain.calls == plain.tokens
    base = tiny_base("llama", seed=1)
    assert Chat(base, tokenizer, use_drafter=False).sampling == PLAIN_SAMPLING
    with pytest.raises(ValueError, match="--no-drafter"):
        Chat(base, tokenizer)
    with pytest.raises(ValueError, match="no chat template"):
        Chat(model, byte_tokenizer())


def test_the_loop_answers_resets_and_stops_at_quit_or_the_end_of_input():
    chat = Chat(tiny_chat_model(), tiny_tokenizer(), max_new_tokens=8, threads=None)
    out = io.StringIO()
    assert run_chat(chat, io.StringIO("w9 w10\n\nw11\n/reset\nw12\n/quit\nw13\n"), out) == 3
    text = out.getvalue()
    assert text.count("tokens per call") == 3 and "(new conversation)" in text and "> w12\n" in text
    assert "w13" not in text.split("> /quit")[1]
    assert len(chat.history) == 2  # only the turn after /reset
    assert run_chat(chat, io.StringIO("w14\n"), io.StringIO()) == 1  # the end of input ends the loop too


def test_ctrl_c_interrupts_an_answer_and_leaves_at_the_prompt(monkeypatch):
    chat = Chat(tiny_chat_model(), tiny_tokenizer(), max_new_tokens=8, threads=None)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("ptp.chat.generate", interrupted)
    out = io.StringIO()
    assert run_chat(chat, io.StringIO("w9\n"), out) == 0
    assert "(answer interrupted)" in out.getvalue() and chat.history == []

    class CtrlC(io.StringIO):
        def readline(self, *args):
            raise KeyboardInterrupt

    assert run_chat(chat, CtrlC(), io.StringIO()) == 0  # Ctrl-C at the prompt leaves


def test_a_conversation_too_long_for_the_context_is_refused_and_left_unchanged():
    chat = Chat(tiny_chat_model(), tiny_tokenizer(), max_new_tokens=8, threads=None)
    out = io.StringIO()
    assert run_chat(chat, io.StringIO("w9\n" + "w10 " * 200 + "\n"), out) == 1
    assert "context" in out.getvalue() and "/reset" in out.getvalue() and len(chat.history) == 2
    # Near the end of the context (128 positions) the answer is only shorter: here at most 3 tokens.
    opening = len(encode_prompts([Prompt(messages=tuple(chat.messages("")))], chat.tokenizer)[0])
    question = "w11 " * (125 - opening)
    assert len(encode_prompts([Prompt(messages=tuple(chat.messages(question)))], chat.tokenizer)[0]) == 125
    assert 1 <= chat.answer(question, io.StringIO()).tokens <= 3


@pytest.fixture
def saved(tmp_path):
    """A tiny model directory with a chat tokenizer, and a PTP adapter for it."""
    model = tiny_chat_model()
    model.base_model.save_pretrained(tmp_path / "model")
    tiny_tokenizer().save_pretrained(tmp_path / "model")
    model.save_pretrained(tmp_path / "adapter")
    return str(tmp_path / "model"), str(tmp_path / "adapter")


def test_loading_a_model_with_and_without_an_adapter(saved):
    model_dir, adapter = saved
    model, tokenizer, use_drafter, note = load_chat_model(model_dir, adapter)
    assert isinstance(model, ptp.PTPModel) and use_drafter and note is None and tokenizer.chat_template
    plain, _, use_drafter, note = load_chat_model(model_dir, use_drafter=False)
    assert not isinstance(plain, ptp.PTPModel) and not use_drafter and note is None
    with pytest.raises(ValueError, match="--adapter"):
        load_chat_model(model_dir)


def test_ptp_chat_command_answers_piped_questions(saved, monkeypatch, capsys):
    model_dir, adapter = saved
    monkeypatch.setattr("sys.stdin", io.StringIO("w9 w10\n/quit\n"))
    assert main(["chat", "--model", model_dir, "--adapter", adapter, "--max-new-tokens", "8", "--threads", "1",
                 "--sampling", "greedy"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "decoding: PTP drafter" in printed and printed.count("tokens per call") == 1
    with pytest.raises(SystemExit, match="^ptp chat: --model needs --adapter"):
        main(["chat", "--model", model_dir])
