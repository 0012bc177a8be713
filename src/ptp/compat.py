"""Differences between the transformers versions ptp-lm supports (``>= 5.0, < 5.40``, see pyproject.toml).

transformers 5.2x renamed the forward argument that carries the KV cache from ``past_key_values`` to ``cache`` and
warns on the old name until 5.40 removes it; every call that hands a cache to a Hugging Face model goes through
:func:`cache_argument`, so both spellings work without warnings.
"""

from __future__ import annotations

import inspect

#: The cache keyword of each model class, found once (a plain dict, which a compiled decoding step reads as it is).
_KEYWORDS: dict[type, str] = {}


def cache_argument(model, cache) -> dict:
    """``{keyword: cache}`` for ``model``'s forward: ``cache`` where the model takes it, else ``past_key_values``."""
    kind = type(model)
    if kind not in _KEYWORDS:
        _KEYWORDS[kind] = "cache" if "cache" in inspect.signature(kind.forward).parameters else "past_key_values"
    return {_KEYWORDS[kind]: cache}
