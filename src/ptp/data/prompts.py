"""Prompt readers: the inputs of pregeneration, from files to token ids.

Supported inputs (a file, or a directory whose files are read in sorted order):

* JSONL (``.jsonl`` / ``.json``), one record per line, each with exactly one of
  ``{"prompt": str}`` (plain text), ``{"messages": [{"role", "content"}, ...]}`` (a chat, rendered by the
  tokenizer's chat template with the generation prompt appended), ``{"turns": [str, ...]}`` (Spec-Bench: the first
  turn becomes a user message; later turns need the model's earlier answers and are not used), or
  ``{"input_ids": [int, ...]}`` (already tokenized);
* plain text (any other suffix), split into prompts by line (default), by blank-line paragraph, or one per file.

Text is the tokenizer's business: :func:`encode_prompts` is the only place where text becomes token ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

JSON_SUFFIXES = (".jsonl", ".json")
TEXT_SPLITS = ("line", "paragraph", "file")


@dataclass(frozen=True)
class Prompt:
    """One prompt; exactly one field is set."""

    text: str | None = None
    """Plain text, tokenized as is (with the tokenizer's special tokens, e.g. BOS)."""
    messages: tuple | None = None
    """A chat: a tuple of ``{"role": str, "content": str}`` dicts, rendered by the chat template."""
    input_ids: tuple[int, ...] | None = None
    """Token ids, used as they are."""

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.text, self.messages, self.input_ids)) != 1:
            raise ValueError("a Prompt needs exactly one of text, messages, input_ids")


def read_prompts(path: str | Path, split: str = "line") -> list[Prompt]:
    """All prompts of a file or a directory of files (sorted by name; hidden files skipped).

    Args:
        path: a JSONL file, a text file, or a directory of them.
        split: how plain text files become prompts: ``line`` (each non-empty line), ``paragraph`` (blocks separated
            by blank lines) or ``file`` (the whole file).
    Raises:
        FileNotFoundError: the path does not exist. ValueError: a malformed record, or no prompt at all.
    """
    if split not in TEXT_SPLITS:
        raise ValueError(f"split must be one of {TEXT_SPLITS}, got {split!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"prompt file or directory {path} does not exist")
    files = [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    prompts: list[Prompt] = []
    for file in files:
        if file.suffix in JSON_SUFFIXES:
            prompts.extend(_read_json_lines(file))
        else:
            prompts.extend(_read_text(file, split))
    if not prompts:
        raise ValueError(f"{path} holds no prompts (empty file or directory)")
    return prompts


def _read_text(file: Path, split: str) -> list[Prompt]:
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{file} is not UTF-8 text: {error}") from error
    if split == "file":
        parts = [text]
    elif split == "paragraph":
        parts = [block.strip("\n") for block in text.replace("\r\n", "\n").split("\n\n")]
    else:
        parts = text.splitlines()
    return [Prompt(text=part) for part in parts if part.strip()]


def _read_json_lines(file: Path) -> list[Prompt]:
    prompts = []
    try:
        lines = file.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as error:
        raise ValueError(f"{file} is not UTF-8 text: {error}") from error
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{file}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: not a JSON object ({error})") from error
        prompts.append(_prompt_from_record(record, where))
    return prompts


def _prompt_from_record(record, where: str) -> Prompt:
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    keys = [k for k in ("prompt", "messages", "turns", "input_ids") if k in record]
    if len(keys) != 1:
        raise ValueError(f"{where}: a record needs exactly one of 'prompt', 'messages', 'turns', 'input_ids'")
    value = record[keys[0]]
    if keys[0] == "prompt":
        if not isinstance(value, str) or not value:
            raise ValueError(f"{where}: 'prompt' must be a non-empty string")
        return Prompt(text=value)
    if keys[0] == "turns":
        if not isinstance(value, list) or not value or not isinstance(value[0], str):
            raise ValueError(f"{where}: 'turns' must be a non-empty list of strings")
        return Prompt(messages=({"role": "user", "content": value[0]},))
    if keys[0] == "messages":
        ok = isinstance(value, list) and value
        ok = ok and all(isinstance(m, dict) and isinstance(m.get("role"), str) and "content" in m for m in value)
        if not ok:
            raise ValueError(f"{where}: 'messages' must be a non-empty list of {{'role', 'content'}} objects")
        return Prompt(messages=tuple(value))
    if not isinstance(value, list) or not value or not all(isinstance(t, int) and t >= 0 for t in value):
        raise ValueError(f"{where}: 'input_ids' must be a non-empty list of non-negative integers")
    return Prompt(input_ids=tuple(value))


def load_tokenizer(path: str | Path | None, required: bool = False):
    """``AutoTokenizer.from_pretrained(path)``, or None where ``path`` holds no tokenizer (unless ``required``)."""
    from transformers import AutoTokenizer

    if path is None:
        if required:
            raise ValueError("a tokenizer is needed (text prompts) but none was given")
        return None
    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as error:
        if required:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(f"cannot load a tokenizer from {path}: {reason}") from error
        return None


def encode_prompts(prompts: list[Prompt], tokenizer=None, vocab_size: int | None = None) -> list[list[int]]:
    """Token ids of each prompt.

    Args:
        prompts: from :func:`read_prompts` (or built directly).
        tokenizer: a ``transformers`` tokenizer; needed unless every prompt is already tokenized.
        vocab_size: if given, token ids must be below it.
    Returns:
        one list of ids per prompt, none empty.
    """
    encoded = []
    for index, prompt in enumerate(prompts):
        if prompt.input_ids is not None:
            ids = list(prompt.input_ids)
        elif tokenizer is None:
            raise ValueError(f"prompt {index} is text; pass a tokenizer (or give prompts as input_ids)")
        elif prompt.messages is not None:
            if not getattr(tokenizer, "chat_template", None):
                raise ValueError(
                    f"prompt {index} is a chat (messages/turns) but the tokenizer has no chat template; "
                    "use {'prompt': text} records instead"
                )
            ids = tokenizer.apply_chat_template(
                [dict(m) for m in prompt.messages], add_generation_prompt=True, tokenize=True, return_dict=False
            )
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
            ids = list(ids)
        else:
            ids = list(tokenizer(prompt.text).input_ids)
        if not ids:
            raise ValueError(f"prompt {index} encodes to no tokens")
        if vocab_size is not None and max(ids) >= vocab_size:
            raise ValueError(f"prompt {index} has token id {max(ids)} >= the model's vocabulary size {vocab_size}")
        encoded.append(ids)
    return encoded
