"""ptp.serve.text: streamed deltas concatenate to the decoded text, cut before the first stop string."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from conftest import VOCAB
from ptp.serve.text import REPLACEMENT, TextStream

#: A conversation as the tiny tokenizer's chat template writes it.
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}assistant :{% endif %}"
)
WORDS = ["<pad>", "<s>", "</s>", "<unk>", "user", "assistant", "system", ":"] + [f"w{i}" for i in range(8, VOCAB)]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the tiny models' vocabulary (ids 0-2: pad, BOS, EOS; then ``w8``..``w95``), with a
    chat template; decoding puts a space between words."""
    model = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    model.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=model, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                        unk_token="<unk>")  # fmt: skip
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A small byte-level BPE: characters outside ASCII span several tokens."""
    model = Tokenizer(models.BPE())
    model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    model.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)  # fmt: skip
    model.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=model)


def _stream(tokenizer, tokens: list[int], stop=()) -> tuple[list[str], TextStream]:
    stream = TextStream(tokenizer, stop)
    deltas = [stream.feed(t) for t in tokens]
    deltas.append(stream.finish())
    return deltas, stream


def test_deltas_concatenate_to_the_decoded_text_with_spaces_between_words():
    tokenizer = tiny_tokenizer()
    tokens = tokenizer("w9 w10 w11 w95").input_ids
    deltas, stream = _stream(tokenizer, tokens)
    assert deltas[:4] == ["w9", " w10", " w11", " w95"] and deltas[4] == ""
    assert "".join(deltas) == stream.answer == tokenizer.decode(tokens)


def test_a_character_split_over_tokens_waits_for_its_last_byte():
    tokenizer = byte_tokenizer()
    text = "the fox: héllo wörld 😀 ok ünïcode"
    tokens = tokenizer(text).input_ids
    assert len(tokens) > len(text.encode()) // 2  # the rare characters are spelled in bytes
    deltas, stream = _stream(tokenizer, tokens)
    assert "".join(deltas) == text
    assert not any(REPLACEMENT in d for d in deltas)
    assert "" in deltas  # some token ended inside a character, and its text waited


def test_the_answer_stops_before_the_first_stop_string_and_later_tokens_add_nothing():
    tokenizer = tiny_tokenizer()
    tokens = tokenizer("w9 w10 w11 w12 w13 w14").input_ids
    deltas, stream = _stream(tokenizer, tokens, stop=["w13", "w11 w12"])
    assert stream.stopped and stream.answer == "w9 w10 "
    assert "".join(deltas) == "w9 w10 "
    assert stream.feed(tokenizer.convert_tokens_to_ids("w20")) == ""


def test_text_that_may_start_a_stop_string_is_held_back_and_released_at_the_end():
    tokenizer = tiny_tokenizer()
    w9, w10, w30 = tokenizer("w9 w10 w30").input_ids
    stream = TextStream(tokenizer, ["w10 w20"])
    assert stream.feed(w9) == "w9"
    assert stream.feed(w10) == " "  # "w10" could be the start of "w10 w20"
    assert stream.feed(w30) == "w10 w30"
    assert stream.finish() == "" and not stream.stopped
    stream = TextStream(tokenizer, ["w10 w20"])
    assert [stream.feed(w9), stream.feed(w10), stream.finish()] == ["w9", " ", "w10"]


def test_a_stop_string_at_the_very_start_gives_an_empty_answer():
    tokenizer = tiny_tokenizer()
    deltas, stream = _stream(tokenizer, tokenizer("w9 w10").input_ids, stop=["w9"])
    assert stream.stopped and stream.answer == "" and deltas == ["", "", ""]


@given(
    st.lists(st.integers(8, VOCAB - 1), min_size=1, max_size=30),
    st.lists(st.lists(st.integers(8, 14), min_size=1, max_size=3), max_size=3),
    st.booleans(),
)
def test_streamed_text_is_the_full_text_cut_at_the_earliest_stop(tokens, stop_words, cut_inside_word):
    """Random token streams and stop strings (made of words that occur, sometimes cut mid-word)."""
    tokenizer = tiny_tokenizer()
    stops = [" ".join(WORDS[i] for i in words) for words in stop_words]
    if cut_inside_word:
        stops = [s[:-1] or s for s in stops]
    full = tokenizer.decode(tokens)
    hits = [i for i in (full.find(s) for s in stops) if i >= 0]
    deltas, stream = _stream(tokenizer, tokens, stops)
    assert "".join(deltas) == stream.answer == (full[: min(hits)] if hits else full)
    assert stream.stopped == bool(hits)
