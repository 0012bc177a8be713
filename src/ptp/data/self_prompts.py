"""Prompts a chat model writes itself: user turns sampled from its own chat template.

An instruct model is trained on whole conversations, so it has learnt what users write as well as what assistants
answer. Sampling the tokens that follow the template's opening of a user turn (on SmolLM2-135M-Instruct
``<|im_start|>system ... <|im_end|>\\n<|im_start|>user\\n``) until the turn's end token gives requests in the
distribution of the conversations it was tuned on: mostly plain ones ("I'm planning to run a marathon. Can you help
me plan a combination of training and preparation?"), some rambling, which the length limits drop. Its answers to
them are the text it produces for real users, which templated prompts (:mod:`ptp.data.chat_prompts`) reach only in
part: a drafter distilled on those learns their regular answers better than what carries to a benchmark's questions.

Turns that do not end within ``max_new_tokens``, fall outside the word limits, repeat an earlier one, or repeat or
share a run of words with an evaluation file (as ``ptp chat-prompts --exclude`` checks) are dropped and counted; the
set depends on the model, its dtype and device, the sampling and the seed.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ptp.data.chat_prompts import ChatPromptSet, write_jsonl
from ptp.data.overlap import EvaluationIndex, normalise
from ptp.decode.flow import decode_rows
from ptp.decode.inputs import stop_tokens
from ptp.sampling import SamplingConfig

#: The category of every prompt written here.
CATEGORY = "self"

#: Rounds in a row that may add no prompt before sampling gives up.
PATIENCE = 10

_SENTINEL = "PTP-USER-TURN-STARTS-HERE"


@dataclass
class SelfPromptConfig:
    """How user turns are sampled and which are kept."""

    count: int = 1000
    """Prompts to write."""
    seed: int = 0
    """Seed of the auxiliaries; round r of sampling draws from a generator seeded by (seed, r)."""
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=1.0, top_p=0.95))
    """How the turns are sampled (default: the model's own distribution, the least likely 5% cut off)."""
    batch_size: int = 64
    """Turns sampled together, and the rows of a round of u's: as turns end, the next rows take their places."""
    max_new_tokens: int = 128
    """Tokens a turn may take, its end token included; a longer one is dropped."""
    min_words: int = 4
    """Fewer words: dropped."""
    max_words: int = 150
    """More words: dropped."""
    system: str | None = None
    """The system prompt of the conversations (None: the chat template's own default, if any)."""

    def __post_init__(self) -> None:
        if isinstance(self.sampling, dict):
            self.sampling = SamplingConfig.from_dict(self.sampling)
        for name in ("count", "batch_size", "max_new_tokens", "min_words", "max_words"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) must not exceed max_words ({self.max_words})")


def user_turn_opening(tokenizer, system: str | None = None) -> list[int]:
    """The token ids of a conversation rendered with ``tokenizer``'s chat template up to where the first user
    message's text starts (with ``system`` as its system prompt, or the template's default)."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("the tokenizer has no chat template: self-prompting needs a chat model")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": _SENTINEL}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    if _SENTINEL not in text:
        raise ValueError("the chat template does not show the user's message verbatim")
    return tokenizer(text[: text.index(_SENTINEL)], add_special_tokens=False)["input_ids"]


def sample_self_prompts(
    model, tokenizer, config: SelfPromptConfig | None = None, *, exclude: Sequence[str | Path] = (), progress=True
) -> ChatPromptSet:
    """``config.count`` distinct user turns that ``model`` writes itself, as chat prompts (``{"messages": [{"role":
    "user", "content": ...}], "category": "self"}``), in the order they were sampled.

    Args:
        model: a Hugging Face causal LM (or a :class:`ptp.PTPModel`, sampled with its adapter off).
        tokenizer: its tokenizer, with a chat template.
        exclude: evaluation files (JSONL with ``turns``, ``messages`` or ``prompt``) whose turns no prompt may repeat
            or share :data:`~ptp.data.overlap.NEAR_NGRAM` consecutive words with.
    Returns:
        the prompts, with counts of the turns dropped (``unfinished``, ``length``, ``exact``, ``near``, ``repeat``).
    Raises:
        ValueError: no chat template, or :data:`PATIENCE` rounds in a row kept nothing.
    """
    from tqdm.auto import tqdm

    config = config or SelfPromptConfig()
    opening = user_turn_opening(tokenizer, config.system)
    eos = set(stop_tokens(model, tokenizer)[0])
    if not eos:
        raise ValueError("the model and tokenizer name no end-of-turn token: a sampled turn could not end")
    index = EvaluationIndex(exclude) if exclude else None
    result = ChatPromptSet([], config.seed, evaluation=tuple(str(p) for p in exclude))
    batch = config.batch_size

    def rows():
        """Row r: the opening, with row r % batch of round r // batch's u's, drawn from (seed, round)."""
        for round_ in itertools.count():
            generator = torch.Generator().manual_seed(config.seed * 1_000_003 + round_)
            yield from ((opening, u) for u in torch.rand((batch, config.max_new_tokens), generator=generator))

    # The rows flow through one batch (ptp.decode.flow). An ended turn is checked at once for what does not depend on
    # the others (an end, its length, the evaluation files) and judged in row order for repeats, as round by round,
    # so the prompts do not depend on how the rows were batched. Rows join only while too few turns may be kept.
    finished: dict[int, tuple[str | None, str]] = {}  # row -> (reason to drop it but a repeat, text), until judged
    seen: set[str] = set()
    judged = kept_in_round = idle = 0

    def on_finish(row: int, turn: list[int]) -> bool:
        """Judge the turns that have ended in row order; True once the prompts are complete (or none come)."""
        nonlocal judged, kept_in_round, idle
        finished[row] = _judge(turn, eos, tokenizer, config, index, seen=())
        while judged in finished:
            reason, text = finished.pop(judged)
            if reason is None and normalise(text) in seen:
                reason = "repeat"
            if reason is not None:
                result.dropped[reason] += 1
            else:
                seen.add(normalise(text))
                result.records.append({"messages": [{"role": "user", "content": text}], "category": CATEGORY})
                kept_in_round += 1
                bar.update(1)
            judged += 1
            if len(result.records) == config.count:
                return True
            if judged % batch == 0:  # a round ends
                idle, kept_in_round = (0 if kept_in_round else idle + 1), 0
                if idle == PATIENCE:
                    return True
        return False

    def wanted() -> bool:
        return len(result.records) + sum(reason is None for reason, _ in finished.values()) < config.count

    with tqdm(total=config.count, desc="self-prompts", unit="prompt", disable=not progress) as bar:
        decode_rows(model, rows(), batch, on_finish, max_new_tokens=config.max_new_tokens, sampling=config.sampling,
                    eos_token_id=sorted(eos), wanted=wanted)  # fmt: skip
    if len(result.records) < config.count:
        raise ValueError(
            f"{PATIENCE} rounds of {batch} sampled user turns in a row kept none (dropped so far: "
            f"{dict(result.dropped)}); is this a chat model? (try other word limits or more new tokens)"
        )
    return result


def _judge(turn: list[int], eos: set[int], tokenizer, config: SelfPromptConfig, index, seen) -> tuple[str | None, str]:
    """``(reason, text)`` of a sampled turn: the reason it is dropped (``unfinished``, ``length``, ``exact``, ``near``,
    ``repeat``) or None, and its text."""
    if not turn or turn[-1] not in eos:
        return "unfinished", ""
    text = tokenizer.decode(turn[:-1], skip_special_tokens=True).strip()
    if not config.min_words <= len(text.split()) <= config.max_words:
        return "length", text
    collision = index.collision([text]) if index is not None else None
    if collision is not None:
        return collision, text
    return ("repeat" if normalise(text) in seen else None), text


def write_self_prompts(
    model: str | None,
    out: str | Path,
    config: SelfPromptConfig | None = None,
    *,
    exclude: Sequence[str | Path] = (),
    device: str = "auto",
    dtype: torch.dtype | str = torch.float32,
    progress: bool = True,
) -> ChatPromptSet:
    """What ``ptp self-prompts`` does: load ``model`` and its tokenizer (:func:`ptp.loading.load`; None: the default
    model's teacher), sample the prompts (:func:`sample_self_prompts`) and write them to ``out`` as JSONL,
    atomically."""
    from ptp.loading import load

    loaded = load(model, device=device, dtype=dtype)
    built = sample_self_prompts(loaded.model, loaded.tokenizer, config, exclude=exclude, progress=progress)
    write_jsonl(built.records, out)
    return built
