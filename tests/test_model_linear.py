"""ptp.model.linear: linear layers that run packed through oneDNN in float32 inference on a CPU, against
``nn.Linear``, their oracle."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from conftest import left_padded, randomize_adapter, tiny_base, wrap
from ptp.model import linear
from ptp.model.linear import PackedLinear, use_packed_linears

pytestmark = pytest.mark.skipif(not linear.available(), reason="packed linear layers run on x86 CPUs with oneDNN")


def _pair(bias: bool = True, seed: int = 0) -> tuple[nn.Linear, PackedLinear]:
    """An ``nn.Linear`` and a packed one with the same weights."""
    layers = []
    for _ in range(2):
        torch.manual_seed(seed)
        layers.append(nn.Linear(24, 40, bias=bias))
    use_packed_linears(layers[1])
    return layers[0], layers[1]


def _same(plain: nn.Module, packed: nn.Module, x: torch.Tensor) -> None:
    """Both layers give the same output for ``x`` (to float32 rounding), and the packed one ran packed."""
    with torch.no_grad():
        expected, got = plain(x), packed(x)
    assert packed._packed is not None
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(24,), (1, 24), (5, 24), (1, 16, 24), (3, 7, 24), (2, 2, 3, 24), (1, 0, 24)])
@pytest.mark.parametrize("bias", [True, False])
def test_in_float32_inference_a_packed_linear_computes_what_nn_linear_computes(shape, bias):
    plain, packed = _pair(bias)
    _same(plain, packed, torch.randn(shape))


def test_it_reads_views_and_inference_tensors_as_nn_linear_does():
    plain, packed = _pair()
    _same(plain, packed, torch.randn(3, 9, 24)[:, 2:])  # rows of a slice
    _same(plain, packed, torch.randn(24, 5).t())  # a transposed input
    with torch.inference_mode():
        _same(plain, packed, torch.randn(2, 4, 24))


def test_outside_float32_inference_it_is_nn_linear(monkeypatch):
    plain, packed = _pair()
    x = torch.randn(4, 24)
    plain(x).square().sum().backward()
    packed(x).square().sum().backward()  # training: nn.Linear's gradients
    torch.testing.assert_close(packed.weight.grad, plain.weight.grad, rtol=0, atol=0)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert packed(x).dtype == torch.bfloat16
    with torch.no_grad():
        assert packed.double()(x.double()).dtype == torch.float64
    packed.float()
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    with torch.no_grad():
        torch.testing.assert_close(packed(x), plain(x), rtol=0, atol=0)
    assert packed._packed is None


def test_weights_made_in_inference_mode_are_not_packed():
    with torch.inference_mode():  # an inference tensor keeps no count of its changes
        plain, packed = _pair()
        x = torch.randn(4, 24)
        torch.testing.assert_close(packed(x), plain(x), rtol=0, atol=0)
    assert packed._packed is None


def test_a_weight_changed_in_place_replaced_or_moved_is_packed_again():
    plain, packed = _pair()
    x = torch.randn(6, 24)
    _same(plain, packed, x)
    changes = [
        lambda layer: layer.weight.mul_(-2.0),
        lambda layer: layer.weight.copy_(torch.linspace(-1, 1, layer.weight.numel()).view_as(layer.weight)),
        lambda layer: torch.optim.SGD(layer.parameters(), lr=0.5).step(),
        lambda layer: setattr(layer.weight, "data", layer.weight.detach() + 1.0),  # a new tensor
        lambda layer: layer.double().float(),
    ]
    for layer in (plain, packed):
        layer.weight.grad = torch.ones_like(layer.weight)
    for change in changes:
        with torch.no_grad():
            change(plain)
            change(packed)
        _same(plain, packed, x)
    with torch.no_grad():
        packed.load_state_dict({"weight": torch.zeros(40, 24), "bias": torch.ones(40)})
        torch.testing.assert_close(packed(x), torch.ones(6, 40), rtol=0, atol=0)


def test_a_packed_linear_is_copied_and_pickled_without_its_packing(tmp_path):
    plain, packed = _pair()
    x = torch.randn(3, 24)
    _same(plain, packed, x)
    torch.save(packed, tmp_path / "layer.pt")
    for copied in (copy.deepcopy(packed), torch.load(tmp_path / "layer.pt", weights_only=False)):
        assert type(copied) is PackedLinear and copied._packed is None
        _same(plain, copied, x)
    assert packed._packed is not None  # the original keeps its own


def test_use_packed_linears_switches_the_linear_layers_and_keeps_their_parameters():
    class Subclass(nn.Linear):
        pass

    model = tiny_base("gpt2")  # Conv1D projections, and a head tied to the input embedding
    model.extra = Subclass(4, 4)
    parameters = dict(model.named_parameters())
    use_packed_linears(model)
    assert type(model.lm_head) is PackedLinear and type(model.extra) is Subclass
    assert any(isinstance(module, Conv1D) for module in model.modules())
    assert dict(model.named_parameters()).keys() == parameters.keys()
    assert all(p is parameters[name] for name, p in model.named_parameters())
    assert model.lm_head.weight is model.get_input_embeddings().weight


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_model_with_packed_linears_gives_the_logits_of_the_plain_model(arch):
    plain, model = tiny_base(arch, seed=3), tiny_base(arch, seed=3)
    use_packed_linears(model)
    ids, mask = left_padded([7, 2, 5], seed=3)
    with torch.no_grad():
        expected, got = plain(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits
    assert model.lm_head._packed is not None
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


def test_a_ptp_models_base_runs_packed_and_its_adapter_factors_stay_plain(monkeypatch):
    model, _ = wrap(tiny_base("llama", seed=2), lora_rank=4)
    randomize_adapter(model, seed=2)
    linears = [(name, m) for name, m in model.base_model.named_modules() if isinstance(m, nn.Linear)]
    kinds = {name.rsplit(".", 1)[-1]: type(m) for name, m in linears}
    assert kinds == {"base_layer": PackedLinear, "lm_head": PackedLinear, "lora_A": nn.Linear, "lora_B": nn.Linear}
    ids, _ = left_padded([6], seed=2)
    slots = 3
    length = ids.shape[1] + slots
    inputs = dict(
        input_ids=torch.cat([ids, torch.zeros(1, slots, dtype=torch.long)], dim=1),
        position_ids=torch.arange(length).unsqueeze(0),
        attention_mask=torch.ones(length, length, dtype=torch.bool).tril().view(1, 1, length, length),
        auxiliaries=torch.rand(1, slots),
        slots_from=ids.shape[1],
    )
    with torch.no_grad():
        got = model(**inputs)
        monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
        expected = model(**inputs)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
