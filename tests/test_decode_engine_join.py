"""ptp.decode.engine's ``join``: rows that join a running batch between calls.

The claim under test: a joined row gets exactly the tokens of its prompt decoded alone with its u's, the rows
already running go on without being prefilled again, and rows that stop (finished, or stopped by ``on_commit``)
leave while others join, their numbers taken by newcomers. Each joining row is prefilled once, counted by a spy on
the engine's prefill. The batch moves to runs of more places, a longer cache and more new tokens as newcomers need
them, and to fewer places as rows leave.
"""

from __future__ import annotations

import pytest
import torch

import ptp
from conftest import EOS, FIRST_ORDINARY, VOCAB, randomize_adapter, tiny_base, uniform
from ptp.decode import engine, graphs
from test_decode_engine import count_prefills, fake_capture
from test_serve_scheduler import NO_EOS, SAMPLING, SLOTS, tiny_model

#: (prompt length, new tokens at most): prompts of different lengths; the later rows need more cache columns and
#: more new tokens than the first batch's run has.
REQUESTS = [(3, 12), (9, 20), (1, 30), (5, 6), (14, 40), (2, 25), (7, 60), (4, 9)]
#: Calls after which requests join (the first two start the batch): one, then two at once, then the rest one by one.
ARRIVALS = {1: [2], 3: [3, 4], 6: [5], 9: [6], 10: [7]}


def _requests(seed: int) -> list[tuple[list[int], torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(FIRST_ORDINARY, VOCAB, (length,), generator=generator).tolist() for length, _ in REQUESTS]
    return [
        (prompt, uniform(1, n, seed=seed + i)[0])
        for i, (prompt, (_, n)) in enumerate(zip(prompts, REQUESTS, strict=True))
    ]


def alone(model, prompt: list[int], u: torch.Tensor, **options) -> list[int]:
    """The reference: the request decoded alone with its u's."""
    out = engine.generate(model, torch.tensor([prompt]), max_new_tokens=len(u), auxiliaries=u.view(1, -1),
                          eos_token_id=EOS, **options)  # fmt: skip
    return out.rows()[0]


class Server:
    """``on_commit`` and ``join`` as a server drives them: requests join after the calls of ``arrivals`` into the
    numbers of rows that have stopped (else new ones); ``cancel`` maps a request to the call after which it is
    stopped. Collects each request's tokens up to its own end (a row may commit past it in its last call)."""

    def __init__(self, requests, first: int, arrivals: dict[int, list[int]], cancel: dict[int, int] | None = None):
        self.requests, self.arrivals, self.cancel = requests, arrivals, cancel or {}
        self.tokens: dict[int, list[int]] = {i: [] for i in range(len(requests))}
        self.at: dict[int, int] = {i: i for i in range(first)}  # the request of each row number in use
        self.calls = 0
        self.commits = 0  # rows' calls that committed tokens
        self.joined: list[dict[int, int]] = []  # per join: row number -> request

    def ended(self, request: int) -> bool:
        tokens = self.tokens[request]
        return len(tokens) >= len(self.requests[request][1]) or EOS in tokens

    def on_commit(self, rows: list[list[int]]) -> list[int]:
        self.calls += 1
        stop = []
        for number, tokens in enumerate(rows):
            request = self.at.get(number)
            if request is None:
                assert not tokens, "a row that has left commits nothing"
                continue
            self.commits += bool(tokens)
            self.tokens[request] = (self.tokens[request] + tokens)[: len(self.requests[request][1])]
            if self.ended(request) or self.cancel.get(request, self.calls + 1) <= self.calls:
                stop.append(number)
                del self.at[number]
        return stop

    def join(self) -> dict[int, tuple[list[int], torch.Tensor]]:
        due = [call for call in self.arrivals if call <= self.calls]  # a join's own prefill is a call too
        arriving = [request for call in sorted(due) for request in self.arrivals.pop(call)]
        rows = {}
        for request in arriving:
            number = min(set(range(len(self.at) + 1)) - set(self.at))
            self.at[number] = request
            rows[number] = self.requests[request]
        if rows:
            self.joined.append({number: self.at[number] for number in rows})
        return rows


def count_places(monkeypatch) -> list[tuple[int, int, int]]:
    """The (places, capacity, new tokens) of every run that the batch moves to."""
    shapes, original = [], engine._Run.adopt

    def adopt(run, source, rows):
        shapes.append((run.batch, run.capacity, run.max_new_tokens))
        original(run, source, rows)

    monkeypatch.setattr(engine._Run, "adopt", adopt)
    return shapes


def _decode_with_joins(model, monkeypatch, seed: int, cancel=None, **options):
    """Requests 0 and 1 start the batch, the others join at ARRIVALS; returns what the assertions need."""
    requests = _requests(seed)
    server = Server(requests, 2, {call: list(ids) for call, ids in ARRIVALS.items()}, cancel)
    prefills, moves = count_prefills(monkeypatch), count_places(monkeypatch)
    ids = torch.tensor([[0] * 6 + requests[0][0], requests[1][0]])
    mask = (torch.arange(9) >= torch.tensor([[6], [0]])).long()
    u = torch.stack([torch.cat([requests[0][1], torch.full((8,), 0.5)]), requests[1][1][:20]])
    out = engine.generate(model, ids, mask, max_new_tokens=20, auxiliaries=u, eos_token_id=EOS,
                          on_commit=server.on_commit, join=server.join, **options)  # fmt: skip
    return requests, server, out, list(prefills), list(moves)  # not the references' calls below


def _assert_exact(model, requests, server, out, prefills, moves, cancel=None, **options) -> None:
    cancel = cancel or {}
    for request, (prompt, u) in enumerate(requests):
        expected = alone(model, prompt, u, **options)
        got = server.tokens[request]
        if request in cancel:
            assert 0 < len(got) < len(expected) and got == expected[: len(got)], f"request {request} (cancelled)"
        else:
            assert got == expected, f"request {request}"
    assert not server.arrivals and len(server.joined) == len(ARRIVALS)
    # Every request was prefilled once, the two first together and each arrival with those arriving with it: the
    # rows already running were never prefilled again.
    assert prefills == [2] + [len(ids) for ids in ARRIVALS.values()]
    assert out.num_calls == server.calls, "on_commit sees every call, the joining rows' prefills included"
    # The output holds the rows of input_ids up to where the server stopped them (request 0 ends at 12 tokens).
    assert out.rows()[0][:12] == server.tokens[0] and out.rows()[1] == server.tokens[1]
    # The batch grew (places, cache, new tokens) for the newcomers and shrank when its rows finished.
    assert max(shape[0] for shape in moves) >= 4 and moves[-1][0] < max(shape[0] for shape in moves)
    assert max(shape[1] for shape in moves) >= 256 and max(shape[2] for shape in moves) >= 60


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.mark.parametrize("sampling", [SAMPLING, NO_EOS], ids=["eos", "no-eos"])
def test_rows_that_join_a_drafting_batch_get_their_tokens_alone_and_the_running_rows_are_not_prefilled_again(
    model, monkeypatch, sampling
):
    requests, server, out, prefills, moves = _decode_with_joins(model, monkeypatch, 11, sampling=sampling, **SLOTS)
    _assert_exact(model, requests, server, out, prefills, moves, sampling=sampling, **SLOTS)
    tokens = sum(len(tokens) for tokens in server.tokens.values())
    assert tokens > (1.3 if sampling is SAMPLING else 1.0) * server.commits, "drafts are accepted (fewer with top-k)"
    if sampling is SAMPLING:
        assert any(EOS in tokens for tokens in server.tokens.values()), "some rows end at EOS"


@pytest.mark.parametrize("options", [dict(use_drafter=False), dict(use_drafter=False, match_drafting=True, **SLOTS)],
                         ids=["plain", "drafting-layout"])  # fmt: skip
def test_rows_that_join_a_plain_batch_get_their_tokens_alone(model, monkeypatch, options):
    requests, server, out, prefills, moves = _decode_with_joins(model, monkeypatch, 12, sampling=SAMPLING, **options)
    _assert_exact(model, requests, server, out, prefills, moves, sampling=SAMPLING, **options)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_joining_rows_see_their_own_context_on_a_peaked_model(monkeypatch, arch):
    """On a model whose distributions change completely with the context (and, with gpt2, absolute positions), a
    joined row whose cache or positions were mixed up with another row's would pick other tokens."""
    base = tiny_base(arch, seed=5, max_positions=256)
    requests, server, out, prefills, moves = _decode_with_joins(base, monkeypatch, 13, use_drafter=False)
    _assert_exact(base, requests, server, out, prefills, moves, use_drafter=False)


def test_rows_that_join_a_batch_with_a_separate_drafter_get_their_tokens_alone(model, monkeypatch):
    small = tiny_base("gpt2", seed=6, hidden=16, layers=1, max_positions=256)
    drafter = ptp.PTPModel(small, mode="categorical", window_length=4, lora_rank=4, embedding_size=8).eval()
    randomize_adapter(drafter, seed=7, std=0.05)
    requests, server, out, prefills, moves = _decode_with_joins(model, monkeypatch, 14, drafter=drafter, **SLOTS)
    _assert_exact(model, requests, server, out, prefills, moves, drafter=drafter, **SLOTS)


def test_rows_join_a_captured_step_in_place(model, monkeypatch):
    """With a captured step the joining rows are written into the buffers that the graph replays."""
    captured = fake_capture(monkeypatch)
    requests, server, out, prefills, moves = _decode_with_joins(model, monkeypatch, 15, cuda_graph=True, **SLOTS)
    assert sum(graph.replays for graph in captured) > 10
    graphs.release_graphs(model)
    _assert_exact(model, requests, server, out, prefills, moves, **SLOTS)


def test_rows_stopped_by_on_commit_leave_while_others_join(model, monkeypatch):
    cancel = {1: 4, 4: 8, 6: 14}  # request -> the call after which it is stopped
    requests, server, out, prefills, moves = _decode_with_joins(model, monkeypatch, 16, cancel=cancel,
                                                                sampling=NO_EOS, **SLOTS)  # fmt: skip
    _assert_exact(model, requests, server, out, prefills, moves, cancel=cancel, sampling=NO_EOS, **SLOTS)
    numbers = [number for joined in server.joined for number in joined]
    assert len(set(numbers)) < len(numbers) or set(numbers) & {0, 1}, "newcomers took the numbers of stopped rows"


def test_joining_rows_are_prefilled_with_a_cache_as_long_as_their_prompts(model, monkeypatch):
    """A joining row's prefill writes its prompt and one group of slots, whatever the running batch's cache holds:
    its run is made with no more columns than that, and its rows still get their tokens alone."""
    shapes, original = [], engine._prefill

    def prefill(run, prompt, mask):
        shapes.append((prompt.shape[1], run.capacity, run.cache_valid.shape[1]))
        original(run, prompt, mask)

    monkeypatch.setattr(engine, "_prefill", prefill)
    requests, server, out, prefills, moves = _decode_with_joins(model, monkeypatch, 17, sampling=NO_EOS, **SLOTS)
    first, *joins = list(shapes)  # not the references' prefills below
    _assert_exact(model, requests, server, out, prefills, moves, sampling=NO_EOS, **SLOTS)
    assert len(joins) == len(ARRIVALS)
    slots = min(SLOTS["auxiliary_budget"], SLOTS["max_draft_length"])
    for width, capacity, columns in joins:
        assert capacity == columns == width + slots < first[1], "a prompt-sized cache, not the batch's"


def test_join_refuses_a_running_row_and_needs_on_commit(model):
    prompt, u = [5, 6, 7], uniform(1, 10, seed=1)
    with pytest.raises(ValueError, match="join needs on_commit"):
        model.generate(torch.tensor([prompt]), max_new_tokens=10, seed=0, join=dict)
    with pytest.raises(ValueError, match="row 0 cannot join: it is still running"):
        model.generate(torch.tensor([prompt]), max_new_tokens=10, seed=0, eos_token_id=[], on_commit=lambda rows: (),
                       join=lambda: {0: (prompt, u[0])})  # fmt: skip
    with pytest.raises(ValueError, match="the prompt is empty"):
        model.generate(torch.tensor([prompt]), max_new_tokens=10, seed=0, on_commit=lambda rows: (),
                       join=lambda: {1: ([], u[0])})  # fmt: skip
