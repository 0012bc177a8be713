"""ptp-lm: Parallel Token Prediction for Hugging Face causal language models.

Layout, along the data flow: :mod:`ptp.sampling` (S and Pick) -> :mod:`ptp.model` (u embeddings, gated LoRA,
PTPModel) -> :mod:`ptp.decode` (reference sampler, budget, engine).

The names below are imported when first used (PEP 562), so that ``import ptp`` (and ``ptp --help``) does not load
torch or transformers; ``from ptp import PTPModel`` and ``ptp.generate`` work as plain imports would.
"""

from __future__ import annotations

import importlib

#: Each public name and the module that defines it.
_EXPORTS = {
    "GenerationOutput": "ptp.decode.inputs",
    "Loaded": "ptp.loading",
    "PTPConfig": "ptp.model.config",
    "PTPModel": "ptp.model.ptp",
    "SamplingConfig": "ptp.sampling",
    "bins": "ptp.sampling",
    "generate": "ptp.decode.engine",
    "load": "ptp.loading",
    "load_default": "ptp.default_model",
    "pick": "ptp.sampling",
    "probabilities": "ptp.sampling",
    "sample_autoregressive": "ptp.decode.reference",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ptp' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
