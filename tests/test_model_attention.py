"""ptp.model.attention: grouped SDPA under custom masks equals transformers' SDPA (which repeats keys and values)."""

from __future__ import annotations

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from conftest import tiny_base, wrap
from ptp.model.attention import FOLD_QUERIES, NAME, grouped_sdpa, use_mask_attention


class _Attention(torch.nn.Module):
    """What the attention functions read from a model's attention module."""

    def __init__(self, groups: int):
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = True


def _inputs(batch: int, heads: int, kv_heads: int, length: int, keys: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(batch, heads, length, 16, generator=generator)
    key = torch.randn(batch, kv_heads, keys, 16, generator=generator)
    value = torch.randn(batch, kv_heads, keys, 16, generator=generator)
    mask = torch.rand(batch, 1, length, keys, generator=generator) < 0.6
    mask[..., 0] = True  # every query sees a key
    return query, key, value, mask


@pytest.mark.parametrize(("heads", "kv_heads"), [(4, 2), (9, 3), (6, 1), (4, 4)])
@pytest.mark.parametrize("length", [1, 5, 40, FOLD_QUERIES])  # the last is beyond folding for every grouped case
def test_grouped_attention_equals_repeated_keys_and_values(heads, kv_heads, length):
    module = _Attention(heads // kv_heads).eval()
    query, key, value, mask = _inputs(3, heads, kv_heads, length, keys=70, seed=length + heads)
    got, _ = grouped_sdpa(module, query, key, value, mask, scaling=0.25)
    want, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.25)
    assert got.shape == want.shape == (3, length, heads, 16)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_a_mask_wider_than_the_keys_is_cut_to_them():
    module = _Attention(2).eval()
    query, key, value, mask = _inputs(2, 4, 2, 3, keys=20, seed=1)
    wide = torch.cat([mask, torch.ones(2, 1, 3, 5, dtype=torch.bool)], dim=-1)
    got, _ = grouped_sdpa(module, query, key, value, wide)
    want, _ = sdpa_attention_forward(module, query, key, value, mask)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_models_switch_to_grouped_attention_unless_eager():
    sdpa = wrap(tiny_base("llama", attn_implementation="sdpa"), window_length=4)[0].base_model
    assert sdpa.config._attn_implementation == NAME
    eager = tiny_base("llama", attn_implementation="eager")
    use_mask_attention(eager)
    assert eager.config._attn_implementation == "eager"
