"""Embeddings of the auxiliary variable u: how a uniform number in [0, 1) becomes an input vector.

An auxiliary slot has no token; its input embedding is ``AuxiliaryEmbedding(u)``. Every variant first turns u into a
small feature vector and then maps it linearly (or through an MLP) to the model's hidden size. The paper compares
them; all work, the structured codes train faster. ``binary`` (the paper's choice) is the default.

=================  ===========================================================================================
``binary``         bits of the binary expansion of u: ``floor(2^b u) mod 2`` for b = 1..K, then a linear layer
``float_bits``     the 32 bits of u's float32 representation, then a linear layer
``thermometer``    ``1{u <= j/K}`` for j = 1..K, then a linear layer
``cosine``         ``cos(j * pi * u)`` for j = 1..K, then a linear layer
``interpolation``  linear interpolation between K + 1 learned vectors placed at u = 0, 1/K, ..., 1
``mlp``            the raw scalar through a two-layer MLP
=================  ===========================================================================================
"""

from __future__ import annotations

import math

import torch
from torch import nn

EMBEDDING_KINDS = ("binary", "float_bits", "thermometer", "cosine", "interpolation", "mlp")
#: The kinds that turn u into a feature vector (:func:`auxiliary_features`), which per-layer maps can read too.
FEATURE_KINDS = ("binary", "float_bits", "thermometer", "cosine")

#: The input of a slot that carries no information (the independent baseline, and C-PTP's first slot).
NULL_AUXILIARY = 0.5


def auxiliary_features(u: torch.Tensor, kind: str, size: int) -> torch.Tensor:
    """Feature vector of each u. ``u``: float ``[...]`` in [0, 1). Returns float32 ``[..., F]``."""
    if kind == "binary":
        powers = torch.pow(2.0, torch.arange(1, size + 1, device=u.device, dtype=torch.float64))
        scaled = u.double().unsqueeze(-1) * powers
        return torch.remainder(torch.floor(scaled), 2.0).float()
    if kind == "float_bits":
        bits = u.float().contiguous().view(torch.int32).unsqueeze(-1)
        shifts = torch.arange(32, device=u.device, dtype=torch.int32)
        return ((bits >> shifts) & 1).float()
    if kind == "thermometer":
        levels = torch.arange(1, size + 1, device=u.device, dtype=torch.float32) / size
        return (u.float().unsqueeze(-1) <= levels).float()
    if kind == "cosine":
        freq = torch.arange(1, size + 1, device=u.device, dtype=torch.float32) * math.pi
        return torch.cos(u.float().unsqueeze(-1) * freq)
    if kind == "mlp":
        return u.float().unsqueeze(-1)
    raise ValueError(f"unknown auxiliary embedding {kind!r}; choose one of {EMBEDDING_KINDS}")


class AuxiliaryEmbedding(nn.Module):
    """Maps auxiliaries ``u`` ``[...]`` to input vectors ``[..., hidden_size]`` (float32 parameters).

    By default the map starts at zero: u contributes nothing until training moves it, so that a fresh drafter whose
    first slot also gets its token (``first_slot_token``) computes there exactly what the teacher computes, and
    learns to read u from that start rather than from noise that first has to be unlearned.

    With ``layers`` > 0 the module also holds one linear map per decoder layer from u's features to the hidden size
    (``layer_maps``, ``[layers, F, hidden_size]``, starting at zero), which :class:`ptp.PTPModel` adds to the slots'
    hidden states before each layer (``u_every_layer``).

    Args:
        kind: one of :data:`EMBEDDING_KINDS`.
        hidden_size: the base model's hidden size.
        size: K, the number of features (bits, levels, frequencies or interpolation intervals).
        init_std: standard deviation of the output layer's starting weights (0: the map starts at zero).
        layers: decoder layers that receive u too (a kind of :data:`FEATURE_KINDS`); 0: the input alone.
    """

    def __init__(self, kind: str, hidden_size: int, size: int = 24, init_std: float = 0.0, layers: int = 0):
        super().__init__()
        if kind not in EMBEDDING_KINDS:
            raise ValueError(f"unknown auxiliary embedding {kind!r}; choose one of {EMBEDDING_KINDS}")
        if size < 1:
            raise ValueError(f"auxiliary embedding size must be >= 1, got {size}")
        if layers and kind not in FEATURE_KINDS:
            raise ValueError(f"u in every layer needs a feature code of u, one of {FEATURE_KINDS}; got {kind!r}")
        self.kind = kind
        self.size = 32 if kind == "float_bits" else size
        if layers:
            self.layer_maps = nn.Parameter(torch.zeros(layers, self.size, hidden_size))
        # Built on the CPU; the owner moves the module to the base model's device.
        if kind == "interpolation":
            self.table = nn.Parameter(torch.randn(self.size + 1, hidden_size) * init_std)
            return
        width = 4 * self.size if kind == "mlp" else self.size
        if kind == "mlp":
            self.hidden = nn.Linear(1, width)
        self.proj = nn.Linear(width, hidden_size)
        nn.init.normal_(self.proj.weight, std=init_std / math.sqrt(width))
        nn.init.zeros_(self.proj.bias)

    def features(self, u: torch.Tensor) -> torch.Tensor:
        """u's feature vector ``[..., F]`` (float32), what the input map and the per-layer maps read."""
        return auxiliary_features(u, self.kind, self.size)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if self.kind == "interpolation":
            x = u.float().clamp(0.0, 1.0) * self.size
            lower = x.floor().long().clamp(max=self.size - 1)
            frac = (x - lower).unsqueeze(-1)
            return self.table[lower] * (1 - frac) + self.table[lower + 1] * frac
        return self.project(self.features(u))

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Input vectors ``[..., hidden_size]`` from u's features (of any kind but ``interpolation``)."""
        if self.kind == "mlp":
            return self.proj(torch.nn.functional.gelu(self.hidden(features * 2.0 - 1.0)))
        return self.proj(features)
