"""Overlap between training prompts and an evaluation set: exact and near duplicates of its turns.

Texts are compared after normalisation (case folded, words only: punctuation, markup and spacing ignored). A
prompt's text is an *exact* match of an evaluation turn when the normalised texts are equal, and a *near* match when
they share a run of ``NEAR_NGRAM`` consecutive words (the usual contamination test, which takes 13 words; 8 also
catches a question copied with a changed ending). An evaluation turn shorter than that counts as one run of its own
length, so a short question copied into a longer prompt is found too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

#: Consecutive words two texts must share to be near duplicates.
NEAR_NGRAM = 8
#: Evaluation turns shorter than this many words are only matched exactly (a run of three words is no evidence).
MIN_RUN = 4
_WORD = re.compile(r"[^\W_]+")


def normalise(text: str) -> str:
    """Case-folded words separated by single spaces (``"Hello, World!"`` -> ``"hello world"``)."""
    return " ".join(_WORD.findall(text.casefold()))


def read_evaluation_turns(path: str | Path) -> list[str]:
    """Every turn of a JSONL evaluation file: all ``turns`` (Spec-Bench), the user ``messages``, or ``prompt``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"evaluation file {path} does not exist")
    turns = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not a JSON object ({error})") from error
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object")
        if isinstance(record.get("turns"), list):
            turns.extend(x for x in record["turns"] if isinstance(x, str))
        elif isinstance(record.get("messages"), list):
            turns.extend(m["content"] for m in record["messages"] if m.get("role") == "user")
        elif isinstance(record.get("prompt"), str):
            turns.append(record["prompt"])
        else:
            raise ValueError(f"{path}:{number}: a record needs 'turns', 'messages' or 'prompt'")
    if not turns:
        raise ValueError(f"{path} holds no evaluation turns")
    return turns


class EvaluationIndex:
    """The normalised turns and word runs of evaluation files, for constant-time collision checks."""

    def __init__(self, paths: Sequence[str | Path], ngram: int = NEAR_NGRAM):
        self.ngram = ngram
        self.turns = [turn for path in paths for turn in read_evaluation_turns(path)]
        self.exact = {normalise(turn) for turn in self.turns}
        self.runs: set[str] = set()
        self.lengths = {ngram}  # run lengths to look for: ngram, and the lengths of shorter turns
        for text in self.exact:
            words = text.split()
            if len(words) >= ngram:
                self.runs.update(" ".join(words[i : i + ngram]) for i in range(len(words) - ngram + 1))
            elif len(words) >= MIN_RUN:
                self.runs.add(text)
                self.lengths.add(len(words))

    def collision(self, texts: Iterable[str]) -> str | None:
        """``"exact"`` if one of ``texts`` equals an evaluation turn, ``"near"`` if one shares a run, else None."""
        near = False
        for text in texts:
            normal = normalise(text)
            if normal in self.exact:
                return "exact"
            words = normal.split()
            near = near or any(
                " ".join(words[i : i + n]) in self.runs for n in self.lengths for i in range(len(words) - n + 1)
            )
        return "near" if near else None


def overlap_report(prompts: Sequence[dict | str], evaluation_path: str | Path, ngram: int = NEAR_NGRAM) -> dict:
    """Which prompts duplicate an evaluation file's turns.

    Args:
        prompts: records with ``messages`` (their user turns are checked) or ``prompt``, or plain strings.
        evaluation_path: a JSONL evaluation file (see :func:`read_evaluation_turns`).
        ngram: words in a run that makes a near duplicate.
    Returns:
        ``{"evaluation", "evaluation_turns", "prompts", "ngram", "exact", "near", "exact_indices",
        "near_indices"}``: counts of prompts that match exactly or nearly (an exact match is not also counted as
        near), and their positions in ``prompts``.
    """
    index = EvaluationIndex([evaluation_path], ngram)
    found: dict[str, list[int]] = {"exact": [], "near": []}
    for position, prompt in enumerate(prompts):
        collision = index.collision(_user_texts(prompt))
        if collision is not None:
            found[collision].append(position)
    return {
        "evaluation": str(evaluation_path),
        "evaluation_turns": len(index.turns),
        "prompts": len(prompts),
        "ngram": ngram,
        "exact": len(found["exact"]),
        "near": len(found["near"]),
        "exact_indices": found["exact"],
        "near_indices": found["near"],
    }


def _user_texts(prompt: dict | str) -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    if "messages" in prompt:
        return [m["content"] for m in prompt["messages"] if m["role"] == "user"]
    if "prompt" in prompt:
        return [prompt["prompt"]]
    raise ValueError("a prompt must be a string or a record with 'messages' or 'prompt'")
