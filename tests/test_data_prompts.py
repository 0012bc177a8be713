"""Prompt readers: every input format, and clear errors for bad files."""

from __future__ import annotations

import json

import pytest

from bench_support import char_tokenizer
from ptp.data import Prompt, encode_prompts, read_prompts


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_records_of_every_kind(tmp_path):
    rows = [
        {"prompt": "hello"},
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]},
        {"turns": ["first question", "second question"], "question_id": 7},
        {"input_ids": [5, 6, 7]},
    ]
    prompts = read_prompts(_jsonl(tmp_path / "p.jsonl", rows))
    assert prompts[0] == Prompt(text="hello")
    assert prompts[1].messages[1] == {"role": "user", "content": "hi"}
    # Spec-Bench: only the first turn; the later ones need the model's answers.
    assert prompts[2].messages == ({"role": "user", "content": "first question"},)
    assert prompts[3].input_ids == (5, 6, 7)


@pytest.mark.parametrize(
    "split, expected", [("line", ["a b", "c", "d"]), ("paragraph", ["a b\nc", "d"]), ("file", ["a b\nc\n\nd\n"])]
)
def test_plain_text_splits(tmp_path, split, expected):
    (tmp_path / "t.txt").write_text("a b\nc\n\nd\n")
    assert [p.text for p in read_prompts(tmp_path / "t.txt", split=split)] == expected


def test_a_directory_is_read_in_name_order_without_hidden_files(tmp_path):
    (tmp_path / "b.txt").write_text("second\n")
    (tmp_path / "a.jsonl").write_text(json.dumps({"prompt": "first"}) + "\n")
    (tmp_path / ".hidden.txt").write_text("never\n")
    assert [p.text for p in read_prompts(tmp_path)] == ["first", "second"]


@pytest.mark.parametrize(
    "line, message",
    [
        ("not json", "not a JSON object"),
        ("[1, 2]", "expected a JSON object"),
        ('{"prompt": "a", "turns": ["b"]}', "exactly one of"),
        ('{"other": 1}', "exactly one of"),
        ('{"prompt": ""}', "non-empty string"),
        ('{"messages": [{"content": "no role"}]}', "'messages' must be"),
        ('{"input_ids": [1, -2]}', "non-negative"),
        ('{"turns": []}', "'turns' must be"),
    ],
)
def test_a_malformed_record_names_its_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "fine"}) + "\n" + line + "\n")
    with pytest.raises(ValueError, match=message) as error:
        read_prompts(path)
    assert "bad.jsonl:2" in str(error.value)


@pytest.mark.parametrize("name", ["bad.jsonl", "bad.txt"])
def test_a_file_that_is_not_utf8_is_named(tmp_path, name):
    (tmp_path / name).write_bytes(b'\xff\xfe{"prompt": "x"}\n')
    with pytest.raises(ValueError, match=f"{name} is not UTF-8 text"):
        read_prompts(tmp_path / name)


def test_a_line_separator_inside_a_json_string_stays_in_its_record(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a\u2028b"}\n{"prompt": "c"}\n', encoding="utf-8")
    assert [p.text for p in read_prompts(path)] == ["a\u2028b", "c"]


def test_missing_and_empty_inputs_are_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_prompts(tmp_path / "nope.jsonl")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="no prompts"):
        read_prompts(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="split must be"):
        read_prompts(tmp_path / "empty.txt", split="word")


def test_encoding_text_chats_and_ids():
    tokenizer = char_tokenizer()
    prompts = [Prompt(text="ab"), Prompt(messages=({"role": "user", "content": "hi"},)), Prompt(input_ids=(9, 8))]
    text, chat, ids = encode_prompts(prompts, tokenizer)
    assert tokenizer.decode(text) == "ab"
    assert tokenizer.decode(chat) == "<s>user: hi\nassistant:"  # the template, with the generation prompt
    assert ids == [9, 8]


def test_encoding_errors():
    with pytest.raises(ValueError, match="pass a tokenizer"):
        encode_prompts([Prompt(text="ab")])
    with pytest.raises(ValueError, match="no chat template"):
        encode_prompts([Prompt(messages=({"role": "user", "content": "x"},))], char_tokenizer(chat_template=None))
    with pytest.raises(ValueError, match="vocabulary size"):
        encode_prompts([Prompt(input_ids=(3, 99))], vocab_size=50)
    with pytest.raises(ValueError, match="exactly one"):
        Prompt(text="a", input_ids=(1,))
