"""``ptp chat``: an interactive conversation with a model, its answers streamed as they are decoded.

A :class:`Chat` keeps the conversation (an optional system prompt, then user and assistant turns), renders it with
the tokenizer's chat template for every answer, and decodes with the engine: with the PTP drafter (several tokens
per forward call) or plainly (one token per call); either way the text is plain sampling's text for the same
auxiliaries. Answer k of a conversation draws its auxiliaries from ``seed + k``, so a conversation replays exactly.
:func:`run_chat` is the loop over a text stream of user lines (``/reset`` starts a new conversation, ``/quit`` or the
end of the stream ends it), and :func:`load_chat_model` loads a model the way ``ptp chat`` does.

Sampling defaults to the configuration the drafter was trained for; a model without a drafter samples with
:data:`PLAIN_SAMPLING` (temperature 0.7, top-k 50, top-p 0.95).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ptp.data.prompts import Prompt, encode_prompts
from ptp.decode.engine import generate
from ptp.decode.inputs import context_length, stop_tokens
from ptp.loading import load
from ptp.model.ptp import PTPModel
from ptp.runtime import cpu_threads
from ptp.sampling import DEFAULT_SAMPLING, SamplingConfig
from ptp.serve.text import TextStream

#: The sampling of a model without a drafter (no trained configuration to follow).
PLAIN_SAMPLING = DEFAULT_SAMPLING
#: What ``ptp chat`` says when the default model has no drafter and decodes plainly.
NO_SHIPPED_DRAFTER = "no drafter ships for the default model yet: decoding one token per call (as with --no-drafter)"
COMMANDS_HELP = "/reset starts a new conversation, /quit (or end of input) leaves"


@dataclass
class Reply:
    """One answer: its text, new tokens (the end token included), forward calls and wall-clock seconds."""

    text: str
    tokens: int
    calls: int
    seconds: float

    @property
    def tokens_per_call(self) -> float:
        return self.tokens / self.calls

    def summary(self) -> str:
        return (
            f"[{self.tokens} tokens in {self.calls} calls, {self.tokens_per_call:.2f} tokens per call, "
            f"{self.seconds:.2f}s]"
        )


class _Printer:
    """The engine's streamer: writes each committed token's text as soon as it is final. The engine puts the prompt
    first; it is skipped. The answer's full text is ``stream.answer``."""

    def __init__(self, tokenizer, out):
        self.stream = TextStream(tokenizer)
        self.out = out
        self.prompt_skipped = False

    def put(self, tokens: torch.Tensor) -> None:
        if not self.prompt_skipped:
            self.prompt_skipped = True
            return
        self._write("".join(self.stream.feed(token) for token in tokens.flatten().tolist()))

    def end(self) -> None:
        self._write(self.stream.finish())

    def _write(self, text: str) -> None:
        if text:
            self.out.write(text)
            self.out.flush()


class Chat:
    """A conversation with ``model``.

    Args:
        model: a :class:`ptp.PTPModel`, or any causal LM with ``use_drafter=False``.
        tokenizer: its tokenizer, with a chat template.
        sampling: the sampling configuration (default: the drafter's trained one; a plain model:
            :data:`PLAIN_SAMPLING`).
        system: a system prompt opening every conversation (None: the chat template's own default, if any).
        max_new_tokens: the longest answer in tokens.
        seed: answer k of a conversation draws its auxiliaries from ``seed + k``.
        use_drafter: False decodes one token per call.
        threads: CPU threads for decoding (a count, ``"auto"`` or None: see :func:`ptp.runtime.cpu_threads`).
        engine: further options of :func:`ptp.decode.engine.generate` (``auxiliary_budget``, ...).
    """

    def __init__(self, model, tokenizer, *, sampling: SamplingConfig | None = None, system: str | None = None,
                 max_new_tokens: int = 256, seed: int = 0, use_drafter: bool = True,
                 threads: int | str | None = "auto", **engine):  # fmt: skip
        if use_drafter and not isinstance(model, PTPModel):
            raise ValueError("decoding with a drafter needs a PTP adapter; pass one, or decode plainly (--no-drafter)")
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template: ptp chat needs a chat (instruction-tuned) model")
        if sampling is None:
            sampling = model.config.sampling if isinstance(model, PTPModel) else PLAIN_SAMPLING
        self.model, self.tokenizer, self.sampling = model, tokenizer, sampling
        self.system, self.max_new_tokens, self.seed = system, max_new_tokens, seed
        self.use_drafter, self.threads, self.engine = use_drafter, threads, engine
        self.history: list[dict[str, str]] = []

    def reset(self) -> None:
        """Forget the conversation (the system prompt stays)."""
        self.history = []

    def messages(self, question: str) -> list[dict[str, str]]:
        """The conversation so far with ``question`` as the next user turn."""
        opening = [{"role": "system", "content": self.system}] if self.system is not None else []
        return opening + self.history + [{"role": "user", "content": question}]

    def answer(self, question: str, out) -> Reply:
        """Answer ``question`` in the conversation, writing the text to ``out`` as it is decoded; the turn is kept.

        Near the end of the model's context the answer is cut shorter; ValueError when the conversation leaves no
        room for a token (it is then left unchanged).
        """
        ids = encode_prompts([Prompt(messages=tuple(self.messages(question)))], self.tokenizer)[0]
        # A long conversation leaves less room in the context: the answer may be shorter, never cut off by an error.
        room = context_length(self.model)
        max_new_tokens = self.max_new_tokens if room is None else max(1, min(self.max_new_tokens, room - len(ids)))
        printer = _Printer(self.tokenizer, out)
        start = time.perf_counter()
        with cpu_threads(self.threads, self.model):
            output = generate(self.model, torch.tensor([ids]), max_new_tokens=max_new_tokens,
                              sampling=self.sampling, seed=self.seed + len(self.history) // 2, streamer=printer,
                              use_drafter=self.use_drafter, eos_token_id=stop_tokens(self.model, self.tokenizer)[0],
                              **self.engine)  # fmt: skip
        seconds = time.perf_counter() - start
        text = printer.stream.answer
        self.history += [{"role": "user", "content": question}, {"role": "assistant", "content": text.strip()}]
        return Reply(text=text, tokens=int(output.lengths[0]), calls=output.num_calls, seconds=seconds)


def run_chat(chat: Chat, lines, out, prompt: str = "> ") -> int:
    """Read user lines from ``lines`` and answer each in ``chat``, writing to ``out``; returns the answers given.

    ``/reset`` starts a new conversation, ``/quit``, the end of ``lines`` or Ctrl-C at the prompt ends the loop;
    empty lines are skipped.
    Lines that do not come from a terminal are echoed after the prompt, so that a piped conversation reads as one.
    After each answer a line gives its tokens, calls, tokens per call and seconds. An answer that fails (the
    conversation outgrew the model's context) or is interrupted (Ctrl-C) leaves the conversation as it was.
    """
    mode = "PTP drafter" if chat.use_drafter else "one token per call"
    print(f"decoding: {mode}; {COMMANDS_HELP}", file=out)
    echo = not (hasattr(lines, "isatty") and lines.isatty())
    answers = 0
    while True:
        out.write(prompt)
        out.flush()
        try:
            line = lines.readline()
        except KeyboardInterrupt:  # Ctrl-C at the prompt leaves, as the end of input does
            line = ""
        if not line:
            print(file=out)
            return answers
        question = line.strip()
        if echo:
            print(question, file=out)
        if question == "/quit":
            return answers
        if question == "/reset":
            chat.reset()
            print("(new conversation)", file=out)
            continue
        if not question:
            continue
        try:
            reply = chat.answer(question, out)
        except ValueError as error:
            print(f"\n{error} (/reset starts a new conversation)", file=out)
            continue
        except KeyboardInterrupt:  # Ctrl-C stops the answer and keeps the conversation as it was before the question
            print("\n(answer interrupted)", file=out)
            continue
        answers += 1
        print(f"\n{reply.summary()}", file=out)


def load_chat_model(model: str | None = None, adapter: str | None = None, *, use_drafter: bool = True,
                    device: str | torch.device = "auto"):  # fmt: skip
    """The model and tokenizer of ``ptp chat``: ``(model, tokenizer, use_drafter, note)``, loaded by
    :func:`ptp.load`'s rules.

    Without ``model`` and ``adapter``: the default model with its shipped O-PTP drafter; while no drafter ships,
    its teacher alone, decoded one token per call (``note`` says so in one line; else it is None). ``model`` alone
    decodes plainly and needs ``use_drafter=False``.
    """
    loaded = load(model, adapter, device=device)
    note = None
    if model is None and adapter is None and not loaded.trained:  # the default teacher, while no drafter ships
        note = NO_SHIPPED_DRAFTER if use_drafter else None
        use_drafter = False
    if use_drafter and not loaded.trained:
        raise ValueError("--model needs --adapter (a PTP adapter trained for it), or --no-drafter to decode plainly")
    network = loaded.model if loaded.trained else loaded.model.base_model  # a plain model: no adapter to carry
    return network, loaded.tokenizer, use_drafter, note
