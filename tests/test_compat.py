"""The cache keyword follows the installed transformers: ``cache`` where a model's forward takes it."""

import inspect
import warnings

import torch
from transformers import DynamicCache

from bench_support import tiny_llama
from ptp.compat import cache_argument


def test_cache_argument_names_the_keyword_the_forward_takes_and_the_call_does_not_warn():
    model = tiny_llama(32)
    (keyword,) = cache_argument(model, None)
    assert keyword in inspect.signature(type(model).forward).parameters
    cache = DynamicCache()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        model(torch.tensor([[1, 2, 3]]), use_cache=True, **cache_argument(model, cache))
    assert cache.get_seq_length() == 3
