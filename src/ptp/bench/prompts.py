"""Benchmark prompts: Spec-Bench's ``question.jsonl`` and plain JSONL, and how a turn becomes token ids.

Two line formats are read (one per file):

* Spec-Bench: ``{"question_id": ..., "category": ..., "turns": ["first user turn", "second", ...]}``. A multi-turn
  conversation runs turn by turn: turn k's prompt is the conversation so far (the user turns and the method's own
  earlier answers), rendered with the tokenizer's chat template when it has one, else joined plainly.
* plain: ``{"prompt": "..."}`` with optional ``"question_id"`` and ``"category"``; the text is continued as is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

#: Separator between turns when a tokenizer has no chat template.
PLAIN_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class Question:
    """One benchmark item."""

    question_id: int | str
    """Spec-Bench's id, or the line number (from 1) of a plain prompt without one."""
    category: str
    """Spec-Bench's category (``default`` for plain prompts without one)."""
    turns: tuple[str, ...]
    """The user turns, in order; plain prompts have one."""
    chat: bool
    """True for Spec-Bench conversations (rendered with the chat template), False for plain continuations."""


def load_questions(
    path: str | Path, categories: list[str] | tuple[str, ...] | None = None, limit: int | None = None
) -> list[Question]:
    """Read a prompt file; keep the given categories (all when None) and at most ``limit`` questions, spread evenly
    over the file (Spec-Bench lists its categories one after another, so each is sampled in proportion).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a file that is not UTF-8, a line that is not a JSON object of either format, a file mixing the
            formats, an empty selection, or an unknown category.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"prompt file {path} is not UTF-8 text: {error}") from error
    questions: list[Question] = []
    kinds: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        question, kind = _parse_line(line, number, path)
        questions.append(question)
        kinds.add(kind)
    if not questions:
        raise ValueError(f"prompt file {path} holds no prompts")
    if len(kinds) > 1:
        raise ValueError(f"prompt file {path} mixes Spec-Bench lines ('turns') and plain lines ('prompt')")
    if categories:
        known = sorted({q.category for q in questions})
        unknown = sorted(set(categories) - set(known))
        if unknown:
            raise ValueError(f"categories {unknown} are not in {path}; it has {known}")
        questions = [q for q in questions if q.category in categories]
    if limit is not None:
        if limit < 1:
            raise ValueError(f"the question limit must be >= 1, got {limit}")
        count = len(questions)
        questions = [questions[i * count // limit] for i in range(min(limit, count))]
    return questions


def _parse_line(line: str, number: int, path: Path) -> tuple[Question, str]:
    where = f"{path}, line {number}"
    expected = 'either Spec-Bench {"question_id", "category", "turns": [...]} or plain {"prompt": "..."}'
    try:
        data = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where} is not JSON ({error}); expected {expected}") from error
    if not isinstance(data, dict):
        raise ValueError(f"{where} is not a JSON object; expected {expected}")
    if "turns" in data:
        turns = data["turns"]
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
            raise ValueError(f"{where}: 'turns' must be a non-empty list of strings")
        if "question_id" not in data:
            raise ValueError(f"{where}: a Spec-Bench line needs a 'question_id'")
        category = data.get("category", "default")
        return Question(data["question_id"], str(category), tuple(turns), chat=True), "spec-bench"
    if "prompt" in data:
        if not isinstance(data["prompt"], str) or not data["prompt"]:
            raise ValueError(f"{where}: 'prompt' must be a non-empty string")
        question_id = data.get("question_id", number)
        category = data.get("category", "default")
        return Question(question_id, str(category), (data["prompt"],), chat=False), "plain"
    raise ValueError(f"{where} has neither 'turns' nor 'prompt'; expected {expected}")


def render_turn(tokenizer, question: Question, answers: list[str], use_chat_template: bool = True) -> list[int]:
    """Token ids of the prompt for turn ``len(answers)`` of ``question``, after the method's earlier ``answers``.

    Spec-Bench questions use the tokenizer's chat template when it has one (and ``use_chat_template``); otherwise the
    user turns and answers are joined with :data:`PLAIN_SEPARATOR`.
    """
    turn = len(answers)
    if turn >= len(question.turns):
        raise ValueError(f"question {question.question_id} has {len(question.turns)} turns, asked for turn {turn}")
    if question.chat and use_chat_template and getattr(tokenizer, "chat_template", None):
        messages = []
        for user, assistant in zip(question.turns[:turn], answers, strict=True):
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        messages.append({"role": "user", "content": question.turns[turn]})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # The template writes the special tokens (BOS) itself.
        return tokenizer(text, add_special_tokens=False).input_ids
    parts: list[str] = []
    for user, assistant in zip(question.turns[:turn], answers, strict=True):
        parts += [user, assistant]
    parts.append(question.turns[turn])
    return tokenizer(PLAIN_SEPARATOR.join(parts)).input_ids
