"""``ptp bench-serve``: a bounded load test of a running ``ptp serve`` on this machine.

N clients stream requests back to back for T seconds (and at most ``max_requests`` in all). Each request is one of
``distinct`` (prompt, seed) pairs, so the same question is asked many times under different loads; afterwards every
pair is asked once more alone, and each answer given under load must equal that one (the server's exactness claim:
a seed's text does not depend on what it was batched with, or on streaming). Reported: throughput, time to first
token, inter-token latency (per request: the time after its first token divided by the tokens after it), the gaps
between streamed pieces (a piece is one forward call's tokens), tokens per forward call, errors.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

import httpx

#: Short prompts of several kinds (code, prose, questions); the pairs cycle through them.
PROMPTS = (
    "def fibonacci(n):",
    "Write a short poem about the sea.",
    "import os\n\n\ndef list_python_files(directory):",
    "What is a hash table? Explain briefly.",
    "class Stack:\n    def __init__(self):",
    "Give three tips for writing clear documentation.",
    'def parse_args(argv=None):\n    """Parse the command line."""',
    "Summarise the rules of chess in two sentences.",
)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class LoadConfig:
    """One load test."""

    url: str
    """The server, e.g. ``http://127.0.0.1:8000``; loopback only."""
    clients: int = 16
    """Concurrent clients, each sending its next request when its last one has ended."""
    seconds: float = 30.0
    """Clients start no request after this; requests in flight finish."""
    max_tokens: int = 64
    """max_tokens of every request."""
    endpoint: str = "completions"
    """``completions`` (the prompt as text) or ``chat`` (the prompt as one user message)."""
    distinct: int = 32
    """Distinct (prompt, seed) pairs; each is checked against its answer alone after the load."""
    max_requests: int = 10_000
    """Requests sent under load at most."""
    temperature: float | None = None
    """None: the server's default (the drafter's sampling configuration)."""
    api_key: str | None = None
    """The server's API key, sent as ``Authorization: Bearer <api_key>``."""
    timeout: float = 300.0
    """Seconds a single request may take."""
    prompts: tuple[str, ...] = field(default=PROMPTS)

    def __post_init__(self) -> None:
        if urlsplit(self.url).hostname not in LOOPBACK:
            raise ValueError(f"bench-serve talks to a server on this machine only (127.0.0.1); got {self.url}")
        for name, least, most in (("clients", 1, 256), ("max_tokens", 1, 1 << 16), ("distinct", 1, 1 << 16),
                                  ("max_requests", 1, 1 << 20)):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
                raise ValueError(f"{name} must be an integer in [{least}, {most}], got {value!r}")
        if not 0 < self.seconds <= 3600:
            raise ValueError(f"seconds must be in (0, 3600], got {self.seconds!r}")
        if self.endpoint not in ("completions", "chat"):
            raise ValueError(f"endpoint must be 'completions' or 'chat', got {self.endpoint!r}")
        if not self.prompts:
            raise ValueError("no prompts")


@dataclass
class _Answer:
    pair: int
    text: str = ""
    error: str | None = None
    first: float | None = None  # seconds from sending to the first text
    pieces: list[float] = field(default_factory=list)  # arrival times of the text pieces, from sending
    seconds: float = 0.0
    tokens: int = 0
    calls: int = 0


def _percentiles(values: list[float], scale: float = 1000.0) -> dict:
    """p50 and p99 (nearest rank) of ``values`` times ``scale`` (seconds to ms), and their count."""
    if not values:
        return {"p50": None, "p99": None, "n": 0}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))] * scale, 3)

    return {"p50": rank(0.50), "p99": rank(0.99), "n": len(ordered)}


class _Client:
    def __init__(self, config: LoadConfig, http: httpx.AsyncClient, model: str):
        self.config, self.http, self.model = config, http, model
        self.path = "/v1/chat/completions" if config.endpoint == "chat" else "/v1/completions"

    def body(self, pair: int, stream: bool) -> dict:
        config = self.config
        prompt = config.prompts[pair % len(config.prompts)]
        body = {"model": self.model, "max_tokens": config.max_tokens, "seed": pair, "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        if config.temperature is not None:
            body["temperature"] = config.temperature
        if config.endpoint == "chat":
            return body | {"messages": [{"role": "user", "content": prompt}]}
        return body | {"prompt": prompt}

    async def streamed(self, pair: int) -> _Answer:
        answer, started = _Answer(pair), time.perf_counter()
        try:
            async with self.http.stream("POST", self.path, json=self.body(pair, stream=True)) as response:
                if response.status_code != 200:
                    await response.aread()
                    answer.error = f"HTTP {response.status_code}: {response.text[:200]}"
                    return answer
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    event = json.loads(line[len("data: ") :])
                    if "error" in event:
                        answer.error = event["error"].get("message", "error event")
                        return answer
                    if event.get("usage"):
                        answer.tokens = event["usage"]["completion_tokens"]
                        answer.calls = event["usage"].get("forward_calls", 0)
                    for choice in event.get("choices", []):
                        piece = choice.get("text") if "text" in choice else (choice.get("delta") or {}).get("content")
                        if piece:
                            now = time.perf_counter() - started
                            answer.first = answer.first if answer.first is not None else now
                            answer.pieces.append(now)
                            answer.text += piece
        except (httpx.HTTPError, json.JSONDecodeError, KeyError) as error:
            answer.error = f"{type(error).__name__}: {error}"
        answer.seconds = time.perf_counter() - started
        return answer

    async def alone(self, pair: int) -> str | None:
        response = await self.http.post(self.path, json=self.body(pair, stream=False))
        if response.status_code != 200:
            return None
        choice = response.json()["choices"][0]
        return choice["text"] if "text" in choice else choice["message"]["content"]


async def run_load(config: LoadConfig) -> dict:
    """Run the load test against ``config.url``; returns the report (see the module docstring)."""
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    limits = httpx.Limits(max_connections=config.clients + 4)
    async with httpx.AsyncClient(base_url=config.url, headers=headers, timeout=config.timeout, limits=limits) as http:
        listed = await http.get("/v1/models")
        listed.raise_for_status()
        client = _Client(config, http, listed.json()["data"][0]["id"])
        answers: list[_Answer] = []
        deadline = time.monotonic() + config.seconds

        async def worker() -> None:
            while time.monotonic() < deadline and len(answers) < config.max_requests:
                # The pairs are handed out in turn to whichever client is free, so that a client is not left
                # asking the same few (a pair whose answer ends at once would otherwise be asked over and over).
                slot = len(answers)
                pair = slot % config.distinct
                answers.append(_Answer(pair))  # reserves the count before awaiting
                answers[slot] = await client.streamed(pair)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(config.clients)))
        elapsed = time.perf_counter() - started
        # Each pair alone, one at a time: the answer its loaded twins must equal.
        asked = sorted({a.pair for a in answers if a.error is None})
        single = {pair: await client.alone(pair) for pair in asked}
    return _report(config, answers, single, elapsed)


def _report(config: LoadConfig, answers: list[_Answer], single: dict[int, str | None], elapsed: float) -> dict:
    good = [a for a in answers if a.error is None]
    errors = [a.error for a in answers if a.error is not None]
    tokens = sum(a.tokens for a in good)
    calls = sum(a.calls for a in good)
    gaps = [later - earlier for a in good for earlier, later in zip(a.pieces, a.pieces[1:], strict=False)]
    per_token = [(a.seconds - a.first) / (a.tokens - 1) for a in good if a.first is not None and a.tokens > 1]
    same = sum(single.get(a.pair) == a.text for a in good)
    return {
        "config": {k: v for k, v in asdict(config).items() if k not in ("api_key", "prompts")},
        "requests": len(answers),
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:5],
        "seconds": round(elapsed, 3),
        "completion_tokens": tokens,
        "tokens_per_second": round(tokens / elapsed, 2) if elapsed else None,
        "requests_per_second": round(len(good) / elapsed, 3) if elapsed else None,
        "tokens_per_call": round(tokens / calls, 3) if calls else None,
        "time_to_first_token_ms": _percentiles([a.first for a in good if a.first is not None]),
        "inter_token_ms": _percentiles(per_token),
        "inter_piece_ms": _percentiles(gaps),
        "seeded_checked": len(good),
        "seeded_identical": same,
        "seeded_all_identical": same == len(good) and all(v is not None for v in single.values()),
    }


def load_test(config: LoadConfig) -> dict:
    return asyncio.run(run_load(config))


def describe(report: dict) -> str:
    """The report as a few lines for a terminal."""
    ttft, itl, piece = report["time_to_first_token_ms"], report["inter_token_ms"], report["inter_piece_ms"]
    config = report["config"]
    return "\n".join([
        f"{config['clients']} clients, {report['seconds']:.1f} s, {report['requests']} requests, "
        f"{report['errors']} errors",
        f"throughput      {report['tokens_per_second']} tokens/s, {report['requests_per_second']} requests/s, "
        f"{report['tokens_per_call']} tokens per forward call",
        f"first token     p50 {ttft['p50']} ms, p99 {ttft['p99']} ms",
        f"inter-token     p50 {itl['p50']} ms, p99 {itl['p99']} ms (per request: time after the first token / tokens)",
        f"between pieces  p50 {piece['p50']} ms, p99 {piece['p99']} ms (a piece: one forward call's text)",
        f"seeded answers  {report['seeded_identical']} / {report['seeded_checked']} equal to the same request alone",
    ])  # fmt: skip
