"""ptp.serve.scheduler, and the engine's ``on_commit`` hook it decodes through.

The claim under test: a request's tokens depend only on its prompt and its u's. Whatever else is in the batch, when
it joins or leaves, and how many others join the batch after it, a job gets exactly the tokens of ``generate`` on its
prompt alone with its seed, one token per call. The model is near-uniform but context-dependent with an untrained C-PTP
drafter whose drafts are mostly accepted, so that calls commit several tokens and rows of a batch advance unevenly.
"""

from __future__ import annotations

import asyncio

import pytest
import torch

import ptp
from conftest import EOS, left_padded, tiny_base
from ptp.decode import graphs
from ptp.sampling import SamplingConfig
from ptp.serve.scheduler import Delta, Done, Failed, Job, QueueFull, Scheduler, auxiliaries
from ptp.serve.text import TextStream
from test_decode_engine import count_prefills, fake_capture
from test_serve_text import tiny_tokenizer

#: Most drafts are accepted; EOS may be drawn.
SAMPLING = SamplingConfig(temperature=1.0)
#: EOS is never drawn (its logit 0 is never among the 20 largest), so rows run to max_tokens; drafts are accepted less.
NO_EOS = SamplingConfig(temperature=1.0, top_k=20)


#: Slots of a drafting call (not the CPU's default: that measures the machine first, with calls of its own).
SLOTS = dict(auxiliary_budget=8, max_draft_length=4)
#: The drafter of the tests: C-PTP, trained for plain sampling at temperature 1 (the server's default sampling).
DRAFTER = dict(lora_rank=4, embedding_size=8, window_length=4, mode="categorical", sampling=SAMPLING)


def near_uniform_base():
    """A tiny Llama whose next-token distribution is near uniform (final norm scaled by 0.05) yet changes with the
    context (about half of the tokens change when one prompt token does). An untrained C-PTP drafter on it picks with
    its slots' own u from a distribution close to the teacher's, so most drafts are accepted (about 1.6 tokens per
    call without top-k). EOS has logit 0, in the middle of the others: ``top_k`` 20 never keeps it."""
    base = tiny_base("llama", hidden=32, layers=2, max_positions=512)
    with torch.no_grad():
        base.model.norm.weight.mul_(0.05)
        base.lm_head.weight[EOS].zero_()
    return base


def tiny_model() -> ptp.PTPModel:
    return ptp.PTPModel(near_uniform_base(), **DRAFTER).eval()


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def alone(model, prompt: list[int], max_tokens: int, seed: int, sampling=SAMPLING) -> list[int]:
    """The reference: the prompt alone, one token per call, u's from the seed."""
    out = model.generate(torch.tensor([prompt]), max_new_tokens=max_tokens, seed=seed, sampling=sampling,
                         eos_token_id=EOS, use_drafter=False)  # fmt: skip
    return out.rows()[0]


# ------------------------------------------------------------------------------------------ the engine hook
def test_on_commit_hands_over_every_committed_token(model):
    ids, mask = left_padded([7, 2, 5], seed=1)
    full = model.generate(ids, mask, max_new_tokens=40, seed=3, sampling=SAMPLING, eos_token_id=[])
    got: list[list[int]] = [[], [], []]
    calls = []

    def on_commit(rows):
        calls.append([len(r) for r in rows])
        for b, tokens in enumerate(rows):
            got[b] += tokens
        return ()

    out = model.generate(ids, mask, max_new_tokens=40, seed=3, sampling=SAMPLING, eos_token_id=[], on_commit=on_commit)
    assert got == out.rows() == full.rows()
    assert len(calls) == out.num_calls and calls[0] == [1, 1, 1]
    assert out.tokens_per_call > 1.3 and max(max(c) for c in calls) > 1  # calls commit several tokens


def test_on_commit_stops_the_rows_it_names_and_the_others_go_on(model):
    ids, mask = left_padded([7, 2, 5], seed=1)
    full = model.generate(ids, mask, max_new_tokens=40, seed=3, sampling=SAMPLING, eos_token_id=[]).rows()
    got: list[list[int]] = [[], [], []]

    def on_commit(rows):
        for b, tokens in enumerate(rows):
            got[b] += tokens
        return [1] if len(got[1]) >= 5 else []

    out = model.generate(ids, mask, max_new_tokens=40, seed=3, sampling=SAMPLING, eos_token_id=[], on_commit=on_commit)
    assert 5 <= len(got[1]) < 40 and got[1] == full[1][: len(got[1])] == out.rows()[1]
    assert got[0] == full[0] and got[2] == full[2]
    stopped = model.generate(ids, mask, max_new_tokens=40, seed=3, sampling=SAMPLING, eos_token_id=[],
                             on_commit=lambda rows: range(3))  # fmt: skip
    assert stopped.num_calls == 1 and stopped.lengths.tolist() == [1, 1, 1]


# ------------------------------------------------------------------------------------------ the scheduler
def _job(prompt, max_tokens, seed, sampling=SAMPLING, stop=()) -> Job:
    return Job(prompt, max_tokens, sampling, auxiliaries(seed, max_tokens), TextStream(tiny_tokenizer(), stop), {EOS})


async def _finish(job: Job) -> tuple[str, Done | Failed]:
    text = ""
    while True:
        event = await asyncio.wait_for(job.events.get(), timeout=60)
        if isinstance(event, Delta):
            text += event.text
        else:
            return text, event


def _run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, timeout=120))


PROMPTS = [[9, 10, 11], [20, 21, 22, 23, 24, 25, 26, 27], [30], [40, 41, 42, 43, 44], [50, 51], [60, 61, 62, 63]]


def test_batched_jobs_get_the_tokens_they_get_alone(model):
    """Six jobs, at most three rows at a time: later jobs join the running batch as rows leave it."""
    lengths, seeds = [30, 12, 45, 7, 25, 18], [0, 1, 2, 3, 2**40, -5]

    async def main():
        scheduler = Scheduler(model, {EOS}, 0, max_batch=3, max_queue=8)
        scheduler.start()
        jobs = [_job(p, n, s) for p, n, s in zip(PROMPTS, lengths, seeds, strict=True)]
        for job in jobs:
            scheduler.submit(job)
        results = await asyncio.gather(*(_finish(job) for job in jobs))
        await scheduler.close()
        return scheduler, jobs, results

    scheduler, jobs, results = _run(main())
    tokenizer = tiny_tokenizer()
    for job, (text, done), prompt, n, seed in zip(jobs, results, PROMPTS, lengths, seeds, strict=True):
        assert job.tokens == alone(model, prompt, n, seed)
        assert isinstance(done, Done) and done.completion_tokens == len(job.tokens)
        assert done.finish_reason == ("stop" if job.tokens[-1] == EOS else "length")
        assert done.prompt_tokens == len(prompt) and 0 < done.forward_calls <= len(job.tokens)
        assert text == tokenizer.decode(job.tokens, skip_special_tokens=True)
    assert sum(done.forward_calls for _, done in results) < 0.8 * sum(len(job.tokens) for job in jobs)
    assert scheduler.row_calls > scheduler.forward_calls  # rows were decoded together
    assert scheduler.batches > 2  # and newcomers joined running batches


def test_with_captured_steps_jobs_of_any_length_replay_a_few_graphs_and_get_their_tokens_alone(monkeypatch):
    """As on a GPU (``ptp serve`` captures by default): batches grow and shrink in powers of two and round their cache
    and new-token room, so six jobs asking for 7 to 45 tokens, twice over, are decoded by a handful of captured steps,
    each job with exactly its tokens alone."""
    model = tiny_model()
    captured = fake_capture(monkeypatch)
    lengths, seeds = [30, 12, 45, 7, 25, 18], [0, 1, 2, 3, 2**40, -5]

    async def main():
        scheduler = Scheduler(model, {EOS}, 0, max_batch=4, max_queue=8, cuda_graph=True, **SLOTS)
        scheduler.start()
        jobs = []
        for _ in range(2):
            batch = [_job(p, n, s) for p, n, s in zip(PROMPTS, lengths, seeds, strict=True)]
            for job in batch:
                scheduler.submit(job)
            await asyncio.gather(*(_finish(job) for job in batch))
            jobs += batch
        await scheduler.close()
        return jobs

    jobs = _run(main())
    for job, prompt, n, seed in zip(jobs, PROMPTS * 2, lengths * 2, seeds * 2, strict=True):
        assert job.tokens == alone(model, prompt, n, seed)
    assert len(captured) == len(graphs.captured_runs(model)) <= 4  # 1, 2 and 4 places, one cache and token room
    assert sum(graph.replays for graph in captured) > 40


def test_a_job_joins_a_running_batch_and_leaves_before_it_ends(model):
    async def main():
        scheduler = Scheduler(model, {EOS}, 0, max_batch=4, max_queue=8)
        scheduler.start()
        long = _job(PROMPTS[1], 150, seed=7, sampling=NO_EOS)
        scheduler.submit(long)
        first = await asyncio.wait_for(long.events.get(), timeout=60)
        short = _job(PROMPTS[0], 6, seed=8, sampling=NO_EOS)
        scheduler.submit(short)
        text, done = await _finish(short)
        running_when_short_ended = not long.finished
        await _finish(long)
        await scheduler.close()
        return long, short, first, running_when_short_ended

    long, short, first, overlap = _run(main())
    assert isinstance(first, Delta) and overlap
    assert long.tokens == alone(model, PROMPTS[1], 150, 7, NO_EOS)
    assert short.tokens == alone(model, PROMPTS[0], 6, 8, NO_EOS)


def test_sampling_configurations_take_turns_and_each_is_exact(model):
    greedy, hot = SamplingConfig.greedy(), SamplingConfig(temperature=1.3, top_p=0.9)
    plan = [(PROMPTS[0], 20, 1, greedy), (PROMPTS[1], 15, 2, SAMPLING), (PROMPTS[2], 25, 3, greedy),
            (PROMPTS[3], 10, 4, hot), (PROMPTS[4], 20, 5, SAMPLING)]  # fmt: skip

    async def main():
        scheduler = Scheduler(model, {EOS}, 0, max_batch=4, max_queue=8)
        scheduler.start()
        jobs = [_job(p, n, s, sampling) for p, n, s, sampling in plan]
        for job in jobs:
            scheduler.submit(job)
        await asyncio.gather(*(_finish(job) for job in jobs))
        await scheduler.close()
        return jobs

    for job, (prompt, n, seed, sampling) in zip(_run(main()), plan, strict=True):
        assert job.tokens == alone(model, prompt, n, seed, sampling)


def test_stop_strings_and_eos_end_a_row_and_the_answer_is_cut(model):
    full = alone(model, PROMPTS[0], 30, seed=11, sampling=NO_EOS)
    tokenizer = tiny_tokenizer()
    stop = tokenizer.decode(full[5:7])
    expected = tokenizer.decode(full)
    expected = expected[: expected.find(stop)]

    async def main():
        scheduler = Scheduler(model, {EOS}, 0, max_batch=4, max_queue=8)
        scheduler.start()
        stopped = _job(PROMPTS[0], 30, 11, NO_EOS, stop=[stop])
        ended = [_job(PROMPTS[1], 300, seed, SAMPLING) for seed in range(4)]
        for job in [stopped, *ended]:
            scheduler.submit(job)
        results = await asyncio.gather(*(_finish(job) for job in [stopped, *ended]))
        await scheduler.close()
        return stopped, ended, results

    stopped, ended, results = _run(main())
    text, done = results[0]
    assert text == expected and done.finish_reason == "stop" and done.completion_tokens == 7
    assert stopped.tokens == full[:7]
    for seed, (job, (_, done)) in enumerate(zip(ended, results[1:], strict=True)):
        assert job.tokens == alone(model, PROMPTS[1], 300, seed, SAMPLING)
        assert (job.tokens[-1] == EOS) == (done.finish_reason == "stop")
    assert any(job.tokens[-1] == EOS for job in ended)


def test_cancelled_jobs_stop_and_leave_the_queue_and_a_full_queue_refuses(model):
    async def main():
        scheduler = Scheduler(model, {EOS}, 0, max_batch=1, max_queue=2)
        scheduler.start()
        running, waiting, last = (
            _job(PROMPTS[1], 450, 1, NO_EOS),
            _job(PROMPTS[0], 5, 2),
            _job(PROMPTS[2], 5, 3, NO_EOS),
        )
        scheduler.submit(running)
        await asyncio.wait_for(running.events.get(), timeout=60)
        scheduler.submit(waiting)
        scheduler.submit(last)
        with pytest.raises(QueueFull):
            scheduler.submit(_job(PROMPTS[3], 5, 4))
        scheduler.cancel(waiting)
        scheduler.cancel(running)
        outcomes = [await _finish(job) for job in (running, waiting, last)]
        await scheduler.close()
        return scheduler, running, outcomes

    scheduler, running, outcomes = _run(main())
    (_, first), (_, second), (_, third) = outcomes
    assert first.finish_reason == "cancelled" and first.completion_tokens < 450
    assert second.finish_reason == "cancelled" and second.completion_tokens == 0
    assert third.finish_reason == "length" and third.completion_tokens == 5
    assert not scheduler.waiting and not scheduler.active


def test_a_failing_batch_fails_its_jobs_and_the_scheduler_goes_on(model, monkeypatch):
    generate = model.generate
    calls = []

    def failing_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return generate(*args, **kwargs)

    monkeypatch.setattr(model, "generate", failing_once)

    async def main():
        scheduler = Scheduler(model, {EOS}, 0, max_batch=2, max_queue=8)
        scheduler.start()
        failed = _job(PROMPTS[0], 5, 1, NO_EOS)
        scheduler.submit(failed)
        outcome = await _finish(failed)
        fine = _job(PROMPTS[0], 5, 1, NO_EOS)
        scheduler.submit(fine)
        second = await _finish(fine)
        await scheduler.close()
        return outcome, second

    (_, failure), (_, done) = _run(main())
    assert isinstance(failure, Failed) and "out of memory" in failure.message
    assert isinstance(done, Done) and done.completion_tokens == 5


@pytest.mark.parametrize("use_drafter", [True, False], ids=["drafting", "plain"])
def test_newcomers_join_the_running_batch_without_its_rows_being_prefilled_again(model, monkeypatch, use_drafter):
    """Jobs of different prompt lengths join a running batch as its rows finish or are cancelled; each job is
    prefilled once (the running rows never again) and gets the tokens it gets alone."""
    prefills = count_prefills(monkeypatch)
    plan = [(PROMPTS[1], 300, 1), (PROMPTS[3], 450, 2), (PROMPTS[2], 9, 3), (PROMPTS[0], 30, 4), (PROMPTS[5], 5, 5),
            (PROMPTS[4], 17, 6)]  # fmt: skip

    async def main():
        scheduler = Scheduler(model, {EOS}, 0, max_batch=3, max_queue=8, use_drafter=use_drafter, **SLOTS)
        scheduler.start()
        jobs = [_job(prompt, n, seed, NO_EOS) for prompt, n, seed in plan]
        long, cancelled, *later = jobs
        scheduler.submit(long)
        scheduler.submit(cancelled)
        await asyncio.wait_for(long.events.get(), timeout=60)
        await asyncio.wait_for(cancelled.events.get(), timeout=60)
        for job in later:
            scheduler.submit(job)
        await asyncio.wait_for(later[0].events.get(), timeout=60)
        joined_mid_run = len(long.tokens) > 0 and not long.finished
        scheduler.cancel(cancelled)
        results = await asyncio.gather(*(_finish(job) for job in jobs))
        await scheduler.close()
        return scheduler, jobs, results, joined_mid_run, list(prefills)

    scheduler, jobs, results, joined_mid_run, prefilled = _run(main())
    assert joined_mid_run
    assert sum(prefilled) == len(jobs), f"each job is prefilled once, the running rows never again: {prefilled}"
    for job, (_, done), (prompt, n, seed) in zip(jobs, results, plan, strict=True):
        expected = alone(model, prompt, n, seed, NO_EOS)
        if job is jobs[1]:
            assert done.finish_reason == "cancelled" and 0 < len(job.tokens) < n
            assert job.tokens == expected[: len(job.tokens)]
        else:
            assert done.finish_reason == "length" and job.tokens == expected
    assert scheduler.batches == len(prefilled), "one batch formed, then one more per group of newcomers"
    assert scheduler.row_calls > scheduler.forward_calls and not scheduler.active
