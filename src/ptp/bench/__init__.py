"""Benchmarks: the method comparison of ``ptp bench`` and the forward-call cost sweep of ``ptp bench-forward``."""

from ptp.bench.forward_cost import forward_cost, write_forward_cost
from ptp.bench.harness import BenchConfig, run_bench

__all__ = ["BenchConfig", "forward_cost", "run_bench", "write_forward_cost"]
