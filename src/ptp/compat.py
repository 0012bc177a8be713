"""Differences between the transformers versions ptp-lm supports (``>= 5.0, < 5.40``, see pyproject.toml).

transformers 5.2x renamed the forward argument that carries the KV cache from ``past_key_values`` to ``cache`` and
warns on the old name until 5.40 removes it; every call that hands a cache to a Hugging Face model goes through
:func:`cache_argument`, so both spellings work without warnings.
"""

from __future__ import annotations

import functools
import inspect


@functools.cache
def _cache_keyword(model_class: type) -> str:
    parameters = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def cache_argument(model, cache) -> dict:
    """``{keyword: cache}`` for ``model``'s forward: ``cache`` where the model takes it, else ``past_key_values``."""
    return {_cache_keyword(type(model)): cache}
