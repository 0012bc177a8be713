"""An OpenAI-compatible server for a PTP model (``ptp serve``).

:mod:`~ptp.serve.config` (the settings), :mod:`~ptp.serve.protocol` (request bodies and errors),
:mod:`~ptp.serve.text` (tokens to streamed text, stop strings), :mod:`~ptp.serve.scheduler` (the queue and the
batches through the engine), :mod:`~ptp.serve.metrics` (Prometheus), :mod:`~ptp.serve.app` (the FastAPI app) and
:mod:`~ptp.serve.server` (loading and running it). Requests with a ``seed`` get the same tokens alone or batched,
streamed or not, with or without the drafter.
"""

from ptp.serve.config import ServeConfig

__all__ = ["ServeConfig"]
