"""ptp.model.attention: grouped SDPA under custom masks equals transformers' SDPA (which repeats keys and values)."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from conftest import Operators, tiny_base, wrap
from ptp.model.attention import FOLD_QUERIES, NAME, grouped_sdpa, sdpa_mask_of, use_mask_attention


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


@pytest.mark.parametrize("length", [5, FOLD_QUERIES])  # folded, and beyond folding
def test_a_mask_is_made_into_sdpas_form_once_for_all_the_layers_of_a_call(length):
    """Every layer of a call gets the same bool mask, which SDPA would make additive (after grouped_sdpa had folded
    it) in every layer: it is made once and kept on the mask, made anew once the mask changes in place, and never
    kept on an inference tensor. The attention is what the bool mask gives, bit for bit."""
    module = _Attention(3).eval()
    query, key, value, mask = _inputs(2, 6, 2, length, keys=70, seed=3)
    with Operators() as ops:
        got = [grouped_sdpa(module, query, key, value, mask)[0] for _ in range(3)]
    assert [name for name, _, _ in ops.ran].count("where") == 1
    for form in got:
        assert torch.equal(form, grouped_sdpa(module, query, key, value, mask.clone())[0])  # a mask made afresh
    if length == FOLD_QUERIES:  # unfolded: transformers' SDPA on the bool mask, whose form SDPA makes itself
        assert torch.equal(got[0], sdpa_attention_forward(module, query, key, value, mask)[0])
    mask[:, :, :, 1:] = ~mask[:, :, :, 1:]
    changed = grouped_sdpa(module, query, key, value, mask)[0]
    assert torch.equal(changed, grouped_sdpa(module, query, key, value, mask.clone())[0])
    with torch.inference_mode():
        inference = mask.clone()
        assert torch.equal(grouped_sdpa(module, query, key, value, inference)[0], changed)
    assert "_sdpa_form" not in inference.__dict__


def test_a_models_call_makes_its_mask_additive_once_and_computes_what_transformers_sdpa_computes():
    """A model switched to grouped attention makes a call's mask additive once, not in each of its layers, and its
    logits are those of transformers' own SDPA attention under the same bool mask, bit for bit."""
    model, reference = wrap(tiny_base("llama", layers=3), window_length=4)
    ids = torch.randint(3, 90, (2, FOLD_QUERIES), generator=torch.Generator().manual_seed(0))
    allowed = torch.ones(FOLD_QUERIES, FOLD_QUERIES, dtype=torch.bool).tril().expand(2, 1, -1, -1)
    positions = torch.arange(FOLD_QUERIES).expand(2, -1)
    with torch.no_grad(), Operators() as ops:
        logits = model(ids, position_ids=positions, attention_mask=allowed)
    assert [made for name, _, made in ops.ran if name == "where"] == [allowed.shape]
    with torch.no_grad():
        assert torch.equal(logits, reference(ids, position_ids=positions, attention_mask=allowed).logits)


class _Devices(TorchDispatchMode):
    """Records the devices of the tensors every operator reads while it is active."""

    def __init__(self):
        super().__init__()
        self.read = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        flat = [*args, *(kwargs or {}).values()]
        self.read |= {a.device.type for a in flat if isinstance(a, torch.Tensor)}
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("groups", [1, 3])
def test_a_masks_sdpa_form_is_made_from_tensors_on_the_masks_device_alone(groups):
    """A decoding step on a GPU is captured as a CUDA graph, whose capture refuses copies from the host: making the
    additive mask must read nothing but tensors on the mask's own device (a mask on the meta device shows it on a
    machine without a GPU)."""
    mask = torch.ones(2, 1, 7, 9, dtype=torch.bool, device="meta")
    with _Devices() as devices:
        made = sdpa_mask_of(mask, torch.bfloat16, groups, 9)
    assert devices.read == {"meta"}
    assert made.dtype == torch.bfloat16 and made.shape == (2, 1, 7 * groups, 9)
