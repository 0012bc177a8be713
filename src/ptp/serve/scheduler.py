"""Batching requests through the decoding engine: a queue, a scheduler task, and one worker thread for the model.

Requests wait in a FIFO queue. The scheduler task takes the request at its head and runs
:func:`ptp.decode.engine.generate` on it in its worker thread, so the event loop stays free to accept and stream. The
engine calls back after every forward call with each row's newly committed tokens (``on_commit``); the callback
hands them to the rows' jobs, which turn them into text and events for their HTTP handlers, and returns the rows to
stop: finished (EOS, ``max_tokens``, a stop string) or abandoned by their client.

Continuous batching: between calls the engine asks for rows to join (``join``), and the scheduler hands it the
waiting requests that share the batch's sampling configuration (the engine samples a batch under one
configuration), as many as the batch has room for (``max_batch`` rows, a stopped row's number taken again). Their
prompts are prefilled on their own and their caches placed into the running batch, whose rows go on without being
computed again; so a newcomer costs the running rows one prefill of its prompt, not one of theirs. A request of
another configuration at the head of the queue waits until the batch has ended, and then starts the next one, so that
no configuration waits forever. Every mode of the engine joins rows this way (drafting or plain, a separate drafter,
the 16-bit layout, a captured or compiled step).

This is exact because of how the random numbers are used. A request draws its own u's (``seed``, or fresh ones), and
new token g of its row is ``Pick(u_g, P(. | prompt, tokens before g))`` whatever the other rows are and whenever it
joined: the engine's acceptance, positions and cache columns are per row. So a request with a seed gets the same
tokens alone or batched, streamed or not, and the same as ``generate(prompt, seed=seed)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from ptp.decode.inputs import context_length, prepare_auxiliaries
from ptp.sampling import SamplingConfig
from ptp.serve.text import TextStream

log = logging.getLogger("ptp.serve")


class QueueFull(Exception):
    """The waiting queue holds ``max_queue`` requests already."""


@dataclass(frozen=True)
class Delta:
    """Text of a row that became final."""

    text: str


@dataclass(frozen=True)
class Done:
    """The row ended: ``finish_reason`` is ``stop`` (EOS or a stop string) or ``length`` (``max_tokens``)."""

    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    """Tokens committed up to the end (an EOS included; tokens after a stop string's not)."""
    forward_calls: int
    """Forward calls in which the row committed tokens (its prefill included)."""


@dataclass(frozen=True)
class Failed:
    """Decoding raised; the message says why."""

    message: str


def auxiliaries(seed: int | None, count: int) -> torch.Tensor:
    """float32 ``[count]``: the u's of a request, drawn as :func:`ptp.decode.engine.generate` draws them for
    ``seed`` (None: fresh random numbers)."""
    return prepare_auxiliaries(None, seed, None, 1, count, torch.device("cpu"))[0]


class Job:
    """One request while it waits and decodes: its prompt, its u's, what it has committed, and the events that its
    HTTP handler reads (:class:`Delta`, then :class:`Done` or :class:`Failed`).

    Created on the event loop; ``commit`` and ``end`` run in the worker thread and post the events back to the loop.
    """

    def __init__(self, prompt: list[int], max_tokens: int, sampling: SamplingConfig, u: torch.Tensor,
                 text: TextStream, eos: set[int]):  # fmt: skip
        self.prompt, self.max_tokens, self.sampling, self.u = prompt, max_tokens, sampling, u
        self.text, self.eos = text, eos
        self.tokens: list[int] = []
        self.calls = 0
        self.finish_reason: str | None = None
        self.cancelled = False  # set on the loop when the client goes away; read by the worker between steps
        self.events: asyncio.Queue = asyncio.Queue()
        self._loop = asyncio.get_running_loop()

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def _post(self, event) -> None:
        self._loop.call_soon_threadsafe(self.events.put_nowait, event)

    def commit(self, tokens: list[int]) -> None:
        """Take the tokens the row committed in one call, up to its end."""
        if self.finished or not tokens:
            return
        self.calls += 1
        delta, reason = "", None
        for token in tokens:
            self.tokens.append(token)
            if token in self.eos:
                reason = "stop"
                break
            delta += self.text.feed(token)
            if self.text.stopped:
                reason = "stop"
                break
            if len(self.tokens) >= self.max_tokens:
                reason = "length"
                break
        if reason is not None:
            delta += self.text.finish()
        if delta:
            self._post(Delta(delta))
        if reason is not None:
            self.end(reason)

    def end(self, reason: str) -> None:
        """Finish the row (``stop``, ``length``, ``cancelled``) and tell the handler."""
        if self.finished:
            return
        self.finish_reason = reason
        self._post(Done(reason, len(self.prompt), len(self.tokens), self.calls))

    def fail(self, message: str) -> None:
        if self.finished:
            return
        self.finish_reason = "error"
        self._post(Failed(message))


class Scheduler:
    """The queue, the batches, and the worker thread that runs the model.

    Args:
        model: a :class:`ptp.PTPModel`.
        eos: token ids that end a row.
        pad: the id written left of shorter prompts.
        max_batch, max_queue: rows decoded together; requests waiting at most.
        use_drafter: False decodes one token per call.
        engine: further arguments of :func:`ptp.decode.engine.generate` (``auxiliary_budget``, ``max_draft_length``).
    """

    def __init__(self, model, eos: set[int], pad: int, max_batch: int, max_queue: int, use_drafter: bool = True,
                 **engine):  # fmt: skip
        self.model, self.eos, self.pad = model, set(eos), pad
        self.max_batch, self.max_queue, self.use_drafter, self.engine = max_batch, max_queue, use_drafter, engine
        self.context = context_length(model)
        self.waiting: deque[Job] = deque()
        self.active: list[Job] = []  # rows of the batch that have not left it
        self.batches = 0  # batches formed: a batch that newcomers join counts anew
        self.forward_calls = 0  # forward calls of the model, prefills included
        self.row_calls = 0  # sum over calls of the rows decoded in them
        self._lock = threading.Lock()  # the worker reads ``waiting`` while the loop changes it
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ptp-decode")
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closing = False

    # ------------------------------------------------------------------------------------------ the event loop
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="ptp-scheduler")

    async def close(self) -> None:
        """Stop the scheduler: a batch in flight stops at its next step, and requests still there fail."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.to_thread(self._executor.shutdown, wait=True)
        with self._lock:
            left = self.active + list(self.waiting)
            self.waiting.clear()
            self.active = []
        for job in left:
            job.fail("the server is shutting down")

    def submit(self, job: Job) -> None:
        """Queue ``job``; raises :class:`QueueFull` when ``max_queue`` requests are waiting, and ValueError when its
        prompt and ``max_tokens`` exceed the model's context (the engine would refuse the row, and with it its
        batch)."""
        if self.context is not None and len(job.prompt) + job.max_tokens > self.context:
            raise ValueError(f"{len(job.prompt)} prompt tokens and max_tokens {job.max_tokens} exceed the context of "
                             f"{self.context}")  # fmt: skip
        with self._lock:
            if len(self.waiting) >= self.max_queue:
                raise QueueFull(f"{len(self.waiting)} requests are waiting already")
            self.waiting.append(job)
        self._wake.set()

    def cancel(self, job: Job) -> None:
        """The client went away: a waiting job leaves the queue, a decoding one stops at the next step."""
        job.cancelled = True
        with self._lock:
            if job in self.waiting:
                self.waiting.remove(job)
                job.end("cancelled")

    @property
    def running(self) -> int:
        return len(self.active)

    async def run(self) -> None:
        """The scheduler task: start a batch with the queue's head, decode it in the worker, repeat."""
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                first = self.waiting.popleft() if self.waiting else None
            if first is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            self.active = [first]
            try:
                await loop.run_in_executor(self._executor, self._decode, first)
            except Exception as error:  # a failing batch fails its requests, not the server
                log.exception("decoding a batch of %d failed", len(self.active))
                for job in self.active:
                    job.fail(f"decoding failed: {type(error).__name__}: {error}")
            self.active = [job for job in self.active if not job.finished]

    def _take(self, sampling: SamplingConfig, room: int) -> list[Job]:
        """Waiting jobs from the queue's head while they share ``sampling``, ``room`` at most."""
        jobs = []
        with self._lock:
            while self.waiting and len(jobs) < room and self.waiting[0].sampling == sampling:
                jobs.append(self.waiting.popleft())
        return jobs

    # ------------------------------------------------------------------------------------------ the worker
    def _decode(self, first: Job) -> None:
        """One call of the engine (in the worker thread): ``first`` starts the batch, waiting jobs of its sampling
        configuration join it between calls while it has room, and the call returns when every row has left."""
        sampling = first.sampling
        rows: list[Job | None] = [first]  # the job of each row number; None: a number free for a newcomer

        def on_commit(committed: list[list[int]]) -> list[int]:
            self.forward_calls += 1
            stop = []
            for b, tokens in enumerate(committed):
                job = rows[b]
                if job is None:
                    continue
                self.row_calls += bool(tokens)
                job.commit(tokens)
                if job.cancelled:
                    job.end("cancelled")
                if job.finished or self._closing:
                    stop.append(b)
                if job.finished:
                    rows[b] = None
            self.active = [job for job in rows if job is not None]
            return stop

        def join() -> dict[int, tuple[list[int], torch.Tensor]]:
            free = [b for b, job in enumerate(rows) if job is None]
            jobs = [] if self._closing else self._take(sampling, self.max_batch - len(rows) + len(free))
            joining = {}
            for job in jobs:
                if free:
                    b = free.pop(0)
                    rows[b] = job
                else:
                    b = len(rows)
                    rows.append(job)
                joining[b] = (job.prompt, job.u)
            if joining:
                self.batches += 1
                self.active = [job for job in rows if job is not None]
            return joining

        self.batches += 1
        device = self.model.device
        self.model.generate(
            torch.tensor([first.prompt], device=device), max_new_tokens=first.max_tokens, sampling=sampling,
            auxiliaries=first.u.view(1, -1).to(device), eos_token_id=sorted(self.eos), pad_token_id=self.pad,
            use_drafter=self.use_drafter, on_commit=on_commit, join=join, **self.engine,
        )  # fmt: skip
