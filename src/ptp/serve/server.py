"""``ptp serve``: load the model the configuration names and run the app under uvicorn until SIGTERM or SIGINT.

On either signal uvicorn stops accepting connections, lets the requests in flight finish (streams included), and
then runs the app's shutdown, which stops the scheduler.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from ptp.serve.config import ServeConfig

log = logging.getLogger("ptp.serve")

#: The model id of the shipped model.
DEFAULT_NAME = "ptp-default"


def load(config: ServeConfig):
    """``(model, tokenizer, model_name, config)`` for ``config``, loaded by :func:`ptp.load`: the shipped model, a base
    model with its PTP adapter, an adapter that holds its own base, or (``use_drafter`` off) a plain base model.

    While no drafter ships for the shipped model, its teacher is served one token per call, as ``ptp chat`` and
    ``ptp generate`` decode it (an untrained drafter would cost every call more and save none): the returned config
    has ``use_drafter`` off, and a warning says so.
    """
    from ptp.chat import NO_SHIPPED_DRAFTER
    from ptp.loading import load as load_models

    loaded = load_models(config.model, config.adapter, device=config.device)
    if config.model is None and config.adapter is None:
        if not loaded.trained and config.use_drafter:
            log.warning(NO_SHIPPED_DRAFTER)
            config = replace(config, use_drafter=False)
        return loaded.model, loaded.tokenizer, config.served_model_name or DEFAULT_NAME, config
    name = config.served_model_name or Path(config.model or config.adapter).resolve().name
    return loaded.model, loaded.tokenizer, name, config


def serve(config: ServeConfig) -> None:
    """Load, build the app, and serve until a signal; returns after the drain."""
    import uvicorn

    from ptp.serve.app import create_app

    model, tokenizer, name, config = load(config)
    if config.threads is not None:
        import torch

        from ptp.runtime import decoding_threads

        torch.set_num_threads(decoding_threads(model) if config.threads == "auto" else config.threads)
    app = create_app(model, tokenizer, config, name)
    if not config.loopback and config.api_key is None:
        log.warning("serving on %s without an API key: anyone who can reach it can use it", config.host)
    uvicorn.run(app, host=config.host, port=config.port, log_level="info", timeout_graceful_shutdown=None)
