"""Linear layers on an x86 CPU: float32 inference through oneDNN, each weight packed once into oneDNN's layout.

A decoding call multiplies a few rows (its new positions) by every weight matrix of the model, and on a CPU
``F.linear`` gives that product to MKL, whose kernels for a few rows are slow. Measured inside decoding calls of
SmolLM2-135M's shape in float32 on 2 cores of an AMD EPYC (AVX2, 2 threads), where every weight comes from memory:
with MKL the language-model head (49152 x 576) takes 8.5 ms for one row and 18-19 ms for 4 to 12 rows, an MLP weight
(1536 x 576) 0.28 and 0.45 ms; with oneDNN and the weight reordered once into its blocked layout, the head takes
3.5 ms for one row, 5.0 for 4 and 7.7 for 12, the MLP weight 0.15, 0.21 and 0.29 ms. The engine's calls (a fresh
adapter, a 512-token context) then go from 65 to 58 ms for one token, from 123 to 85 ms for a PTP call of 4 positions
(2 slots) and from 135 to 103 ms for one of 12 (9 slots); with one thread the one-token call stays at 66 ms and these
PTP calls gain 16% and 6%. A row's result is also the same alone or among up to 16 rows (MKL's changes with the
number of rows, by rounding).

:func:`use_packed_linears` switches a model's ``nn.Linear`` layers to :class:`PackedLinear` (their class only; their
parameters, names and hooks stay). It computes as ``nn.Linear`` does, except in float32 inference on the CPU (no
gradient recorded, no autocast, not traced by ``torch.compile``, the weight an ordinary parameter): there it packs
its weight on first use, keeps the packing until the weight changes in place (torch's count of its changes, which
writes through ``.data`` do not move) or is replaced, and multiplies through oneDNN. The packings take as much memory
again as the linear weights; moving or casting the model (``.to``) drops them.
"""

from __future__ import annotations

import functools
import platform

import torch
from torch import nn


@functools.cache
def available() -> bool:
    """Whether this machine runs the packed linear: an x86 CPU (where it was measured) and a torch built with oneDNN."""
    return platform.machine().lower() in ("x86_64", "amd64") and torch.backends.mkldnn.is_available()


class PackedLinear(nn.Linear):
    """An ``nn.Linear`` that, in float32 inference on the CPU, multiplies through oneDNN with its weight packed."""

    #: (the weight packed from, its count of changes then, the packed weight), made on first use
    _packed: tuple[torch.Tensor, int, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if not _packs(x, weight):
            return super().forward(x)
        kept = self._packed
        # The packing holds the tensor it was made from, so no other tensor can take its address.
        if kept is None or kept[0].data_ptr() != weight.data_ptr() or kept[1] != weight._version:
            source = weight.detach()
            kept = self._packed = (source, weight._version, torch.ops.mkldnn._reorder_linear_weight(source, None))
        return torch.ops.mkldnn._linear_pointwise(x, kept[2], self.bias, "none", [], "")

    def _apply(self, fn, recurse: bool = True):
        # .to(device / dtype) and the like end here: a moved or cast weight is packed again where it is used.
        self._packed = None
        return super()._apply(fn, recurse)

    def __getstate__(self) -> dict:
        # A packed weight is an opaque tensor that neither copy.deepcopy nor pickle can copy: copies pack again.
        return {**self.__dict__, "_packed": None}


def _packs(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``x @ weight.T`` runs packed: float32 on the CPU, no gradient recorded, no autocast, not traced by
    ``torch.compile``, oneDNN on (``torch.backends.mkldnn``), and the weight an ordinary parameter (an inference
    tensor keeps no count of its changes; a weight that a parametrization computes, or a sharded one, may be a new
    tensor at every call: neither can keep a packing)."""
    return (
        x.is_cpu
        and x.dtype == weight.dtype == torch.float32
        and not (torch.is_grad_enabled() or torch.is_autocast_enabled("cpu") or torch.compiler.is_compiling())
        and torch.backends.mkldnn.enabled
        and type(weight) is nn.Parameter
        and not weight.is_inference()
    )


def use_packed_linears(model: nn.Module) -> None:
    """Switch every ``nn.Linear`` of ``model`` (not its subclasses) to :class:`PackedLinear`, in place, where the
    machine runs it (:func:`available`). Only their class changes: parameters, names and hooks stay as they were."""
    if not available():
        return
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = PackedLinear
