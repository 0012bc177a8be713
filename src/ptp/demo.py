"""``ptp demo``: a few chat questions answered one token per call and with PTP, shown side by side.

Each question is rendered with the tokenizer's chat template and answered twice from the same auxiliaries u: once
by plain decoding (one forward call per token) and once with the PTP drafter (each call commits the verified drafts
plus one token). The two texts must be identical; the PTP text is printed with each forward call's tokens as one
visible chunk (alternating colours on a terminal, brackets otherwise), so that the parallelism can be seen, and the
calls, tokens per call and wall-clock times of both runs are reported per question and in total.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import torch

from ptp.data.prompts import Prompt, encode_prompts
from ptp.decode.inputs import stop_tokens
from ptp.serve.text import TextStream

#: One question of each kind a small chat model is asked: code, an explanation, arithmetic.
QUESTIONS = (
    "Write a Python function that returns the largest of three numbers.",
    "Explain in two sentences what a hash table is.",
    "What is 15 + 27? Answer with the number only.",
)
#: What the default model is, for the legend.
DEFAULT_ABOUT = (
    "SmolLM2-135M-Instruct, a small 135M-parameter chat model: expect short answers, simple code and weak arithmetic"
)

_COLOURS = ("\033[38;5;33m", "\033[38;5;208m")  # blue, orange
_RESET = "\033[0m"


@dataclass
class DemoResult:
    """One question answered both ways; ``chunks`` concatenate to ``text``, one chunk per PTP forward call."""

    question: str
    text: str
    new_tokens: int
    identical: bool
    ar_calls: int
    ar_seconds: float
    ptp_calls: int
    ptp_seconds: float
    chunks: list[str]

    @property
    def tokens_per_call(self) -> float:
        return self.new_tokens / self.ptp_calls

    @property
    def speedup(self) -> float:
        return self.ar_seconds / max(self.ptp_seconds, 1e-9)


def question_ids(tokenizer, question: str) -> list[int]:
    """The token ids of ``question`` as a user turn of a chat, with the generation prompt (the chat template)."""
    return encode_prompts([Prompt(messages=({"role": "user", "content": question},))], tokenizer)[0]


def call_chunks(tokenizer, tokens: list[int], accept_lengths: list[int]) -> list[str]:
    """The text of each forward call: ``accept_lengths[i]`` tokens committed by call i, decoded incrementally (so
    that the chunks concatenate to the answer's text; special tokens such as the end token are left out)."""
    stream = TextStream(tokenizer)
    chunks, at = [], 0
    for n in accept_lengths:
        chunks.append("".join(stream.feed(token) for token in tokens[at : at + n]))
        at += n
    chunks[-1] += stream.finish()
    return chunks


def run_question(model, tokenizer, question: str, max_new_tokens: int, seed: int, **engine) -> DemoResult:
    """Answer ``question`` by plain decoding and with PTP from the same auxiliaries; time both."""
    ids = torch.tensor([question_ids(tokenizer, question)], device=model.device)
    u = torch.rand((1, max_new_tokens), generator=torch.Generator().manual_seed(seed))
    common = dict(
        max_new_tokens=max_new_tokens,
        auxiliaries=u,
        sampling=model.config.sampling,  # the configuration the drafter was trained for
        eos_token_id=stop_tokens(model, tokenizer)[0],
    )
    start = time.perf_counter()
    ar = model.generate(ids, use_drafter=False, **common)
    ar_seconds = time.perf_counter() - start
    start = time.perf_counter()
    fast = model.generate(ids, **common, **engine)
    ptp_seconds = time.perf_counter() - start
    tokens = fast.rows()[0]
    chunks = call_chunks(tokenizer, tokens, fast.accept_lengths[0])
    return DemoResult(
        question=question,
        text="".join(chunks),
        new_tokens=len(tokens),
        identical=ar.rows() == fast.rows(),
        ar_calls=ar.num_calls,
        ar_seconds=ar_seconds,
        ptp_calls=fast.num_calls,
        ptp_seconds=ptp_seconds,
        chunks=chunks,
    )


def legend(about: str, colour: bool) -> str:
    """What the demo shows and how to read its output."""
    if colour:
        marks = f"alternating {_COLOURS[0]}blue{_RESET} and {_COLOURS[1]}orange{_RESET} blocks show"
    else:
        marks = "[bracketed] chunks show"
    empty = "" if colour else " ([] is a call whose tokens have no text, e.g. the end token)"
    return (
        f"Model: {about}.\n"
        "Each question is answered twice from the same random numbers: one token per forward call, and with PTP,\n"
        "where one call verifies the drafter's guesses and commits several tokens. The two answers must be identical.\n"
        f"In the answers below, {marks} what each PTP forward call committed{empty}."
    )


def render(result: DemoResult, colour: bool) -> str:
    """The question, then the answer with one visible chunk per forward call."""
    if colour:
        body = "".join(_COLOURS[i % 2] + chunk + _RESET for i, chunk in enumerate(result.chunks))
    else:
        body = "".join(f"[{chunk}]" for chunk in result.chunks)
    return f"user: {result.question}\nassistant: {body}"


def run_demo(
    model,
    tokenizer,
    questions=QUESTIONS,
    max_new_tokens: int = 128,
    seed: int = 0,
    out=None,
    about: str = DEFAULT_ABOUT,
    **engine,
) -> list[DemoResult]:
    """Answer each question both ways and print the comparison; ``engine`` goes to ``generate`` (e.g. the budget).

    Args:
        model: a :class:`ptp.PTPModel` (its drafter's trained sampling configuration is used).
        tokenizer: with a chat template.
        questions: user turns, each answered in a fresh conversation.
        seed: question i's auxiliaries are drawn from ``seed + i``.
        out: a text stream (default: stdout); colours are used when it is a terminal.
        about: the model's one-line description in the legend.
    Returns:
        One :class:`DemoResult` per question; the caller checks ``identical``.
    """
    out = out or sys.stdout
    colour = out.isatty()
    print(legend(about, colour), file=out)
    results = []
    for i, question in enumerate(questions):
        result = run_question(model, tokenizer, question, max_new_tokens, seed + i, **engine)
        results.append(result)
        print("-" * 100, file=out)
        print(render(result, colour), file=out)
        print(
            f"\n  identical to one-token-per-call decoding: {'yes' if result.identical else 'NO'} | "
            f"{result.new_tokens} tokens | one token per call: {result.ar_calls} calls {result.ar_seconds:.2f}s | "
            f"PTP: {result.ptp_calls} calls {result.ptp_seconds:.2f}s, {result.tokens_per_call:.2f} tokens/call | "
            f"speedup {result.speedup:.2f}x",
            file=out,
        )
    total_ar = sum(r.ar_seconds for r in results)
    total_ptp = sum(r.ptp_seconds for r in results)
    tokens = sum(r.new_tokens for r in results)
    calls = sum(r.ptp_calls for r in results)
    print("=" * 100, file=out)
    print(
        f"all identical: {all(r.identical for r in results)} | {tokens} tokens | "
        f"one token per call: {sum(r.ar_calls for r in results)} calls {total_ar:.2f}s | "
        f"PTP: {calls} calls {total_ptp:.2f}s, {tokens / calls:.2f} tokens/call | "
        f"speedup {total_ar / max(total_ptp, 1e-9):.2f}x",
        file=out,
    )
    return results
