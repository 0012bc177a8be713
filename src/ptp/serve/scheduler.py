"""Batching requests through the decoding engine: a queue, a scheduler task, and one worker thread for the model.

Requests wait in a FIFO queue. The scheduler task takes as many as fit (``max_batch``) that share a sampling
configuration (the engine samples a batch under one configuration) and runs :func:`ptp.decode.engine.generate` on
them in its worker thread, so the event loop stays free to accept and stream. The engine calls back after every
forward call with each row's newly committed tokens (``on_commit``); the callback hands them to the rows' jobs, which
turn them into text and events for their HTTP handlers, and returns the rows to stop: finished (EOS, ``max_tokens``,
a stop string) or abandoned by their client.

Rows join between steps by recomputation: when a request is waiting for which the batch has room, the callback stops
every row, and the next batch re-enters the unfinished rows with their text so far as the prompt (their cache is
rebuilt by the prefill) next to the newcomers. The engine's loop stays as it is.

This is exact because of how the random numbers are used. A request draws its own u's (``seed``, or fresh ones), and
new token g of its row is ``Pick(u_g, P(. | prompt, tokens before g))`` whatever the other rows are and whether it
was decoded in one call of ``generate`` or several: the engine's acceptance is per row, and a continued row simply
passes its remaining u's. So a request with a seed gets the same tokens alone or batched, streamed or not, and the
same as ``generate(prompt, seed=seed)``.
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
from ptp.model.embeddings import NULL_AUXILIARY
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
    """Forward calls in which the row committed tokens (a rejoining row's prefill counts)."""


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
        self.active: list[Job] = []  # rows of the last batch that have not finished
        self.batches = 0  # calls of the engine
        self.forward_calls = 0  # forward calls of the model, prefills included
        self.row_calls = 0  # sum over calls of the rows in the batch
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
        """Queue ``job``; raises :class:`QueueFull` when ``max_queue`` requests are waiting."""
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
        """The scheduler task: form a batch, decode it in the worker, repeat."""
        loop = asyncio.get_running_loop()
        while True:
            jobs, sampling = self._next_batch()
            if not jobs:
                self._wake.clear()
                await self._wake.wait()
                continue
            self.active = jobs
            try:
                await loop.run_in_executor(self._executor, self._decode, jobs, sampling)
            except Exception as error:  # a failing batch fails its requests, not the server
                log.exception("decoding a batch of %d failed", len(jobs))
                for job in jobs:
                    job.fail(f"decoding failed: {type(error).__name__}: {error}")
            self.active = [job for job in jobs if not job.finished]

    def _next_batch(self) -> tuple[list[Job], SamplingConfig | None]:
        """The unfinished rows, then waiting jobs in order while they share the batch's sampling configuration (the
        queue's head decides when no row is left, so that no configuration waits forever)."""
        for job in self.active:
            if job.cancelled:
                job.end("cancelled")
        with self._lock:
            jobs = [job for job in self.active if not job.finished]
            sampling = jobs[0].sampling if jobs else (self.waiting[0].sampling if self.waiting else None)
            while self.waiting and len(jobs) < self.max_batch and self.waiting[0].sampling == sampling:
                jobs.append(self.waiting.popleft())
        return jobs, sampling

    def _admits(self, sampling: SamplingConfig, rows: int) -> bool:
        """Whether a waiting job could join a batch of ``rows`` unfinished rows decoding under ``sampling``."""
        with self._lock:
            return bool(self.waiting) and rows < self.max_batch and self.waiting[0].sampling == sampling

    # ------------------------------------------------------------------------------------------ the worker
    def _decode(self, jobs: list[Job], sampling: SamplingConfig) -> None:
        """One call of the engine over ``jobs`` (in the worker thread): each row continues from the tokens it has,
        with the u's that follow them, until it ends or the batch is re-formed."""
        contexts = [job.prompt + job.tokens for job in jobs]
        width = max(len(context) for context in contexts)
        steps = max(job.max_tokens - len(job.tokens) for job in jobs)
        if self.context is not None:  # every row fits alone (checked on admission), so steps >= 1
            steps = min(steps, self.context - width)
        batch = len(jobs)
        ids = torch.full((batch, width), self.pad, dtype=torch.int64)
        mask = torch.zeros((batch, width), dtype=torch.int64)
        # u's past a row's max_tokens only pick tokens that the row discards.
        u = torch.full((batch, steps), NULL_AUXILIARY)
        for b, (job, context) in enumerate(zip(jobs, contexts, strict=True)):
            ids[b, width - len(context) :] = torch.tensor(context)
            mask[b, width - len(context) :] = 1
            part = job.u[len(job.tokens) : len(job.tokens) + steps]
            u[b, : len(part)] = part

        def on_commit(rows: list[list[int]]) -> list[int]:
            self.row_calls += batch
            for job, tokens in zip(jobs, rows, strict=True):
                job.commit(tokens)
                if job.cancelled:
                    job.end("cancelled")
            unfinished = sum(not job.finished for job in jobs)
            if self._closing or (unfinished and self._admits(sampling, unfinished)):
                return list(range(batch))  # re-form the batch: the unfinished rows continue in the next one
            return [b for b, job in enumerate(jobs) if job.finished]

        out = self.model.generate(
            ids.to(self.model.device), mask.to(self.model.device), max_new_tokens=steps, sampling=sampling,
            auxiliaries=u, eos_token_id=sorted(self.eos), pad_token_id=self.pad, use_drafter=self.use_drafter,
            on_commit=on_commit, **self.engine,
        )  # fmt: skip
        self.batches += 1
        self.forward_calls += out.num_calls
