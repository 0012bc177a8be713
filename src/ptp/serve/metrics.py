"""What ``GET /metrics`` reports, in Prometheus' text format: requests, tokens, tokens per call, the queue, latencies.

Each app has its own registry (so that several apps in one process do not collide); the queue and the engine's
counts are read from the scheduler when scraped.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily

#: Seconds; from a millisecond to two minutes.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TOKENS_PER_CALL_BUCKETS = (1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 6.0, 8.0, 16.0)


class _EngineCollector:
    """The scheduler's running totals, read at scrape time."""

    def __init__(self, scheduler):
        self.scheduler = scheduler

    def collect(self):
        calls = CounterMetricFamily("ptp_forward_calls", "Forward calls of the model (prefills included)")
        calls.add_metric([], self.scheduler.forward_calls)
        rows = CounterMetricFamily("ptp_row_calls", "Rows decoded, summed over forward calls (batch occupancy)")
        rows.add_metric([], self.scheduler.row_calls)
        batches = CounterMetricFamily("ptp_batches", "Batches formed (newcomers joining a running batch count anew)")
        batches.add_metric([], self.scheduler.batches)
        return [calls, rows, batches]


class Metrics:
    """The server's instruments; ``render()`` is the body of ``/metrics``."""

    def __init__(self, scheduler):
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("ptp_requests", "Requests answered, by endpoint and HTTP status",
                                ["endpoint", "status"], registry=registry)  # fmt: skip
        self.prompt_tokens = Counter("ptp_prompt_tokens", "Prompt tokens of decoded requests", registry=registry)
        self.completion_tokens = Counter("ptp_completion_tokens", "Tokens generated", registry=registry)
        self.tokens_per_call = Histogram("ptp_tokens_per_call", "Tokens per forward call of each finished request",
                                         buckets=TOKENS_PER_CALL_BUCKETS, registry=registry)  # fmt: skip
        self.latency = Histogram("ptp_request_seconds", "Time from a request's arrival to its last token",
                                 buckets=LATENCY_BUCKETS, registry=registry)  # fmt: skip
        self.first_token = Histogram("ptp_time_to_first_token_seconds", "Time from arrival to the first text",
                                     buckets=LATENCY_BUCKETS, registry=registry)  # fmt: skip
        self.inter_token = Histogram("ptp_inter_token_seconds", "Time between tokens after the first, per request",
                                     buckets=LATENCY_BUCKETS, registry=registry)  # fmt: skip
        queue = Gauge("ptp_queue_length", "Requests waiting for a batch", registry=registry)
        queue.set_function(lambda: len(scheduler.waiting))
        running = Gauge("ptp_running_requests", "Requests in the batch being decoded", registry=registry)
        running.set_function(lambda: scheduler.running)
        registry.register(_EngineCollector(scheduler))

    def finished(self, prompt_tokens: int, completion_tokens: int, calls: int, seconds: float,
                 first_token: float | None) -> None:  # fmt: skip
        """Record one decoded request (``first_token``: seconds to its first text, None if it had none)."""
        self.prompt_tokens.inc(prompt_tokens)
        self.completion_tokens.inc(completion_tokens)
        if calls:
            self.tokens_per_call.observe(completion_tokens / calls)
        self.latency.observe(seconds)
        if first_token is not None:
            self.first_token.observe(first_token)
            if completion_tokens > 1:
                self.inter_token.observe((seconds - first_token) / (completion_tokens - 1))

    def render(self) -> bytes:
        return generate_latest(self.registry)
