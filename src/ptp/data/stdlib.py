"""The corpus of the shipped model: the Python standard library of the running interpreter.

Every machine with Python has it, so the shipped model can be rebuilt and evaluated offline. Files are read in a
deterministic order (sorted relative paths); site-packages is excluded. The held-out split is by top-level module:
modules are ordered by a hash of their name and taken into the held-out split while it stays within
``fraction`` +- 1% of the corpus bytes, so no training step sees any file of a held-out module.
"""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path

EXCLUDED_DIRS = {"site-packages", "dist-packages", "__pycache__"}


@dataclass(frozen=True)
class CorpusFile:
    path: Path
    """Absolute path."""
    module: str
    """Top-level module (``json`` for ``json/decoder.py``, ``abc`` for ``abc.py``)."""
    size: int
    """Bytes."""


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: str | Path | None = None) -> list[CorpusFile]:
    """All ``*.py`` files under the standard library, in sorted order of their relative paths."""
    root = Path(root) if root is not None else stdlib_root()
    if not root.is_dir():
        raise FileNotFoundError(f"standard library directory {root} does not exist")
    files = []
    for path in sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix()):
        relative = path.relative_to(root)
        if EXCLUDED_DIRS.intersection(relative.parts[:-1]) or not path.is_file():
            continue
        module = relative.parts[0].removesuffix(".py")
        files.append(CorpusFile(path=path, module=module, size=path.stat().st_size))
    if not files:
        raise FileNotFoundError(f"no Python files under {root}")
    return files


def split_modules(files: list[CorpusFile], fraction: float = 0.05) -> tuple[list[CorpusFile], list[CorpusFile]]:
    """(train, held_out) files, split by top-level module with about ``fraction`` of the bytes held out."""
    if not 0.0 < fraction < 0.5:
        raise ValueError(f"held-out fraction must be in (0, 0.5), got {fraction}")
    sizes: dict[str, int] = {}
    for f in files:
        sizes[f.module] = sizes.get(f.module, 0) + f.size
    total = sum(sizes.values())
    held: set[str] = set()
    held_bytes = 0
    for module in sorted(sizes, key=lambda m: hashlib.sha256(m.encode()).hexdigest()):
        if held_bytes >= fraction * total:
            break
        if held_bytes + sizes[module] <= (fraction + 0.01) * total:
            held.add(module)
            held_bytes += sizes[module]
    return [f for f in files if f.module not in held], [f for f in files if f.module in held]


def read_texts(files: list[CorpusFile]) -> list[str]:
    """The files' contents (UTF-8; files that do not decode are skipped, as the tokenizer could not read them)."""
    texts = []
    for f in files:
        try:
            text = f.path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if text.strip():
            texts.append(text)
    return texts


def stdlib_corpus(fraction: float = 0.05, root: str | Path | None = None) -> tuple[list[str], list[str]]:
    """(train texts, held-out texts) of the standard library."""
    train, held_out = split_modules(stdlib_files(root), fraction)
    return read_texts(train), read_texts(held_out)


def line_prompts(
    texts: list[str], count: int, seed: int = 0, max_lines: int = 40, final_newline: bool = False
) -> list[str]:
    """``count`` prompts cut from ``texts`` at random line boundaries: a random file, a random line k >= 1 of it,
    and the (at most ``max_lines``) lines before k, without the last one's line ending unless ``final_newline``.
    Deterministic for a seed (the same cuts either way).

    A byte-level BPE merges a newline with the next line's indentation into one token, so a prompt that ends in a
    newline makes the model continue after a bare newline token, which in training comes before a blank line, an
    unindented line or the end of the text; ``ptp bench`` prompts cut that way ended at once with end-of-text on
    three of four held-out prompts of a ~88M code model (docs/journal.md, 2026-11-26)."""
    import random

    rng = random.Random(seed)
    candidates = [t.splitlines(keepends=True) for t in texts]
    candidates = [lines for lines in candidates if len(lines) >= 2]
    if not candidates:
        raise ValueError("no text with at least two lines to cut prompts from")
    prompts = []
    while len(prompts) < count:
        lines = rng.choice(candidates)
        cut = rng.randrange(1, len(lines))
        chosen = lines[max(0, cut - max_lines) : cut]
        if not final_newline:
            chosen[-1] = chosen[-1].rstrip("\r\n")
        prompt = "".join(chosen)
        if prompt.strip():
            prompts.append(prompt)
    return prompts
