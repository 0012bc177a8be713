"""Prompt files in both formats, their errors, and how a turn becomes token ids."""

from __future__ import annotations

import json

import pytest

from bench_support import PLAIN, SPEC_BENCH, char_tokenizer, write_jsonl
from ptp.bench.prompts import PLAIN_SEPARATOR, load_questions, render_turn


def test_spec_bench_and_plain_files(tmp_path):
    spec = load_questions(write_jsonl(tmp_path / "q.jsonl", SPEC_BENCH))
    assert [(q.question_id, q.category, q.turns, q.chat) for q in spec] == [
        (81, "writing", ("Write a poem.", "Now shorter."), True),
        (82, "coding", ("def add(a, b):",), True),
    ]
    plain = load_questions(write_jsonl(tmp_path / "p.jsonl", PLAIN))
    assert [(q.question_id, q.category, q.turns, q.chat) for q in plain] == [
        (1, "default", ("import os\n",), False),
        (2, "greeting", ("Hello, world",), False),
    ]


def test_category_filter_and_limit(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", SPEC_BENCH)
    assert [q.question_id for q in load_questions(path, categories=["coding"])] == [82]
    assert [q.question_id for q in load_questions(path, limit=1)] == [81]
    many = write_jsonl(tmp_path / "many.jsonl", [dict(question_id=i, category=f"c{i // 10}", turns=["q"])
                                                 for i in range(40)])  # fmt: skip
    spread = load_questions(many, limit=8)
    assert [q.question_id for q in spread] == [0, 5, 10, 15, 20, 25, 30, 35], "evenly over the file"
    assert {q.category for q in spread} == {"c0", "c1", "c2", "c3"}
    assert len(load_questions(many, limit=100)) == 40
    with pytest.raises(ValueError, match="categories \\['math'\\] are not in"):
        load_questions(path, categories=["math"])


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"text": "hi"}'], "neither 'turns' nor 'prompt'"),
        (["not json"], "is not JSON"),
        (["[1, 2]"], "not a JSON object"),
        ([json.dumps(SPEC_BENCH[0]), json.dumps(PLAIN[0])], "mixes Spec-Bench lines"),
        (['{"question_id": 1, "turns": []}'], "non-empty list of strings"),
        (['{"turns": ["a"]}'], "needs a 'question_id'"),
        (["", "  "], "holds no prompts"),
    ],
)
def test_bad_prompt_files(tmp_path, lines, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message):
        load_questions(path)


def test_missing_prompt_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_questions(tmp_path / "nope.jsonl")


def test_turns_with_chat_template_carry_the_earlier_answers(tmp_path):
    tokenizer = char_tokenizer()
    question = load_questions(write_jsonl(tmp_path / "q.jsonl", SPEC_BENCH))[0]
    first = tokenizer.decode(render_turn(tokenizer, question, []))
    assert first == "<s>user: Write a poem.\nassistant:"
    second = tokenizer.decode(render_turn(tokenizer, question, ["Roses."]))
    assert second == "<s>user: Write a poem.\n<s>assistant: Roses.\n<s>user: Now shorter.\nassistant:"


def test_turns_without_chat_template_are_joined_plainly(tmp_path):
    tokenizer = char_tokenizer(chat_template=None)
    question = load_questions(write_jsonl(tmp_path / "q.jsonl", SPEC_BENCH))[0]
    ids = render_turn(tokenizer, question, ["Roses."])
    assert tokenizer.decode(ids) == PLAIN_SEPARATOR.join(["Write a poem.", "Roses.", "Now shorter."])
    # The template can also be switched off for a tokenizer that has one.
    assert render_turn(char_tokenizer(), question, ["Roses."], use_chat_template=False) == ids


def test_plain_prompts_are_continued_as_is(tmp_path):
    tokenizer = char_tokenizer()
    question = load_questions(write_jsonl(tmp_path / "p.jsonl", PLAIN))[0]
    assert tokenizer.decode(render_turn(tokenizer, question, [])) == "import os\n"


def test_a_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"prompt": "café"}\n'.encode("latin-1"))
    with pytest.raises(ValueError, match=f"prompt file {path} is not UTF-8"):
        load_questions(path)
