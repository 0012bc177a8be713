"""The standard-library corpus: deterministic files, a held-out split by module, prompts at line boundaries; BPE."""

import pytest
from transformers import AutoTokenizer

from ptp.data.stdlib import line_prompts, split_modules, stdlib_files
from ptp.data.tokenizer import END_OF_TEXT, train_bpe


def test_files_are_sorted_and_exclude_site_packages():
    files = stdlib_files()
    assert files and all("site-packages" not in f.path.parts for f in files)
    assert [f.path for f in files] == [f.path for f in stdlib_files()]


def test_held_out_split_is_by_module_and_about_five_percent():
    files = stdlib_files()
    train, held = split_modules(files, 0.05)
    assert {f.module for f in train}.isdisjoint({f.module for f in held})
    fraction = sum(f.size for f in held) / sum(f.size for f in files)
    assert 0.04 <= fraction <= 0.06
    with pytest.raises(ValueError, match="fraction"):
        split_modules(files, 0.7)


def test_line_prompts_end_at_line_boundaries_and_are_deterministic():
    texts = ["a = 1\nb = 2\r\nc = 3\n\nd = 4\n", "def f():\n    return 1\n"]
    kept = line_prompts(texts, 40, seed=3, max_lines=2, final_newline=True)
    assert kept == line_prompts(texts, 40, seed=3, max_lines=2, final_newline=True)
    assert all(p.endswith("\n") and p.count("\n") <= 2 for p in kept)
    assert all(any(p in t for t in texts) for p in kept)
    # By default the same cuts without the last line's ending (a blank last line leaves the one before it).
    prompts = line_prompts(texts, 40, seed=3, max_lines=2)
    assert prompts == [p[:-2] if p.endswith("\r\n") else p[:-1] for p in kept]
    assert "a = 1\nb = 2" in prompts and "c = 3\n" in prompts and "def f():" in prompts
    with pytest.raises(ValueError):
        line_prompts(["one line"], 1)


def test_bpe_round_trips_code_and_loads_with_auto_tokenizer(tmp_path):
    texts = ["def f(x):\n    return x + 1\n"] * 50 + ["class A:\n    pass\n"] * 50
    tokenizer = train_bpe(texts, vocab_size=300)
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    source = "def g(y):\n    return y * 2\n"
    assert loaded.decode(loaded(source).input_ids) == source
    assert loaded.eos_token == END_OF_TEXT and loaded.pad_token_id == loaded.eos_token_id == 0
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe(texts, vocab_size=10)
