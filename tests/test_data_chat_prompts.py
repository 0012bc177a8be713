"""Chat prompts from the standard library: deterministic, distinct, every category, well-formed chats, evaluation
duplicates dropped, and a CLI file that the prompt reader accepts."""

from __future__ import annotations

import json

import pytest

from bench_support import char_tokenizer
from ptp.cli import main
from ptp.data import encode_prompts, read_prompts
from ptp.data.chat_prompts import build_chat_prompts, harvest_documentation
from ptp.data.chat_tasks import FAMILIES
from ptp.data.overlap import normalise, overlap_report

COUNT = 300


@pytest.fixture(scope="module")
def built():
    return build_chat_prompts(COUNT, seed=3)


def _key(record) -> str:
    return normalise(" ".join(f"{m['role']} {m['content']}" for m in record["messages"]))


def _user_turns(record) -> list[str]:
    return [m["content"] for m in record["messages"] if m["role"] == "user"]


def test_the_same_seed_gives_the_same_prompts_and_another_seed_others(built):
    assert build_chat_prompts(COUNT, seed=3).records == built.records
    other = build_chat_prompts(COUNT, seed=4).records
    assert len({_key(r) for r in other} & {_key(r) for r in built.records}) < COUNT // 10


def test_count_is_met_without_duplicates(built):
    assert len(built.records) == COUNT
    assert len({_key(r) for r in built.records}) == COUNT
    with pytest.raises(ValueError, match="positive"):
        build_chat_prompts(0)


def test_every_category_is_present_in_equal_shares(built):
    counts = built.report()["categories"]
    assert set(counts) == set(FAMILIES) and len(FAMILIES) >= 10
    assert max(counts.values()) - min(counts.values()) <= 1


def test_chats_alternate_roles_and_end_with_a_user_turn(built):
    for record in built.records:
        messages = record["messages"]
        roles = [m["role"] for m in messages]
        if roles[0] == "system":
            roles = roles[1:]
        assert roles and roles == ["user", "assistant"] * (len(roles) // 2) + ["user"], roles
        assert all(isinstance(m["content"], str) and m["content"].strip() for m in messages)
        assert len(" ".join(m["content"] for m in messages).split()) <= 400
        if record["category"] == "multi_turn":
            assert 2 <= roles.count("user") <= 3
    assert any(r["messages"][0]["role"] == "system" for r in built.records)


def test_documentation_comes_from_the_standard_library():
    docs = harvest_documentation()
    names = {item.name for item in docs.callables}
    assert {"json.dumps", "textwrap.dedent", "len"} <= names
    assert all(item.summary.endswith((".", "!", "?")) for item in docs.callables)
    assert docs.topics and docs.modules and len(docs.sentences) > 1000
    # Snippets are source without the docstring.
    quote = next(item for item in docs.snippets if item.name == "shlex.quote")
    assert quote.source.startswith("def quote(s):") and '"""' not in quote.source


def _plant(tmp_path, built) -> tuple:
    """Evaluation files holding an exact copy (case and punctuation changed) of a math prompt, a run of ten words of
    a translation prompt inside a new question, and an unrelated question: (exact file, near file, both), and the
    positions of the two prompts in ``built``."""
    first = next(i for i, r in enumerate(built.records) if r["category"] == "math")
    second = next(i for i, r in enumerate(built.records) if r["category"] == "translation")
    exact = _user_turns(built.records[first])[0].upper().replace(".", " !")
    words = normalise(_user_turns(built.records[second])[0]).split()
    near = "Please consider this: " + " ".join(words[len(words) // 2 - 5 :][:10]) + " and say something else."
    unrelated = "What is the airspeed of a swallow carrying coconuts?"
    paths = []
    for name, turns in (("exact", [exact, unrelated]), ("near", [near, unrelated]), ("both", [exact, near, unrelated])):
        paths.append(tmp_path / f"{name}.jsonl")
        paths[-1].write_text("".join(json.dumps({"question_id": i, "turns": [t]}) + "\n" for i, t in enumerate(turns)))
    return tuple(paths), (first, second)


def test_duplicates_of_an_evaluation_file_are_found_and_dropped(tmp_path, built):
    (exact, near, both), (first, second) = _plant(tmp_path, built)
    found = overlap_report(built.records, both)
    assert found["evaluation_turns"] == 3
    assert first in found["exact_indices"] and second in found["near_indices"]

    # The builder draws the same prompts until the first collision, which it drops and replaces.
    for path, kind, planted in ((exact, "exact", first), (near, "near", second)):
        kept = build_chat_prompts(COUNT, seed=3, exclude=[path])
        assert len(kept.records) == COUNT and kept.dropped[kind] >= 1
        assert _key(built.records[planted]) not in {_key(r) for r in kept.records}
        left = overlap_report(kept.records, path)
        assert left["exact"] == left["near"] == 0
        dedup = kept.report()["dedup"]
        assert (dedup["exact_removed"], dedup["near_removed"]) == (kept.dropped["exact"], kept.dropped["near"])


def test_cli_writes_prompts_the_reader_accepts(tmp_path, capsys, built):
    (_, _, evaluation), _ = _plant(tmp_path, built)
    out = tmp_path / "prompts" / "chat.jsonl"
    assert main(["chat-prompts", "--out", str(out), "--count", "42", "--seed", "3", "--exclude", str(evaluation)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["size"] == 42 and report["dedup"]["exact_left"] == report["dedup"]["near_left"] == 0
    assert [p.name for p in out.parent.iterdir()] == ["chat.jsonl"]  # no temporary file left behind
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert all(set(r) == {"messages", "category"} for r in records)
    prompts = read_prompts(out)
    assert len(prompts) == 42 and all(p.messages is not None for p in prompts)
    assert all(ids for ids in encode_prompts(prompts, char_tokenizer()))
    with pytest.raises(SystemExit, match="ptp chat-prompts: .*does not exist"):
        main(["chat-prompts", "--out", str(out), "--count", "5", "--exclude", str(tmp_path / "missing.jsonl")])
