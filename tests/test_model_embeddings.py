"""ptp.model.embeddings: every way of turning u into an input vector."""

from __future__ import annotations

import struct

import pytest
import torch

from ptp.model.embeddings import EMBEDDING_KINDS, FEATURE_KINDS, AuxiliaryEmbedding, auxiliary_features
from ptp.sampling import MAX_AUXILIARY

HIDDEN = 32
#: Values further apart than 1/8 (an 8-level thermometer resolves no finer), both ends of the range included.
DISTINCT_U = torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8, MAX_AUXILIARY])


@pytest.mark.parametrize("kind", EMBEDDING_KINDS)
def test_every_kind_gives_finite_hidden_vectors_and_tells_u_apart(kind):
    torch.manual_seed(0)
    embedding = AuxiliaryEmbedding(kind, HIDDEN, size=8, init_std=0.5)
    u = torch.stack([DISTINCT_U, DISTINCT_U.flip(0)])  # [2, 6]
    out = embedding(u)
    assert out.shape == (2, len(DISTINCT_U), HIDDEN)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    rows = out[0]
    distance = torch.cdist(rows, rows) + torch.eye(len(rows)) * 1e9
    assert distance.min() > 1e-6, f"{kind}: two different u give the same embedding"
    assert torch.equal(out[1], out[0].flip(0)), "the embedding must act on each u independently"


@pytest.mark.parametrize("kind", EMBEDDING_KINDS)
def test_every_kind_is_trainable(kind):
    embedding = AuxiliaryEmbedding(kind, HIDDEN, size=8)
    (embedding(torch.rand(5)) - 1.0).square().sum().backward()
    grads = [p.grad for p in embedding.parameters()]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("kind", EMBEDDING_KINDS)
def test_a_fresh_embedding_contributes_nothing(kind):
    embedding = AuxiliaryEmbedding(kind, HIDDEN, size=8)
    assert torch.equal(embedding(torch.rand(7)), torch.zeros(7, HIDDEN))


def test_binary_features_are_the_binary_expansion():
    features = auxiliary_features(torch.tensor([0.625, 0.0, MAX_AUXILIARY]), "binary", 4)
    assert features[0].tolist() == [1.0, 0.0, 1.0, 0.0]  # 0.625 = 0.1010b
    assert features[1].tolist() == [0.0] * 4
    assert features[2].tolist() == [1.0] * 4


def test_float_bits_are_the_float32_representation():
    u = 0.3
    features = auxiliary_features(torch.tensor([u]), "float_bits", 32)[0]
    (word,) = struct.unpack("<I", struct.pack("<f", u))
    assert features.tolist() == [float((word >> b) & 1) for b in range(32)]
    assert AuxiliaryEmbedding("float_bits", HIDDEN, size=5).size == 32


def test_thermometer_and_cosine_features():
    therm = auxiliary_features(torch.tensor([0.5, 0.0, MAX_AUXILIARY]), "thermometer", 4)
    assert therm.tolist() == [[0.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]]
    cos = auxiliary_features(torch.tensor([0.25]), "cosine", 3)[0]
    assert cos.tolist() == pytest.approx([2**-0.5, 0.0, -(2**-0.5)], abs=1e-6)


def test_interpolation_hits_its_knots_and_is_linear_between_them():
    embedding = AuxiliaryEmbedding("interpolation", HIDDEN, size=4, init_std=1.0)
    table = embedding.table.detach()
    out = embedding(torch.tensor([0.0, 0.25, 0.5, 0.375])).detach()
    assert torch.allclose(out[:3], table[:3])
    assert torch.allclose(out[3], (table[1] + table[2]) / 2, atol=1e-6)
    near_one = embedding(torch.tensor([MAX_AUXILIARY])).detach()[0]
    assert torch.allclose(near_one, table[4], atol=1e-5)


def test_bad_kind_or_size_is_an_error():
    with pytest.raises(ValueError, match="unknown auxiliary embedding"):
        AuxiliaryEmbedding("fourier", HIDDEN)
    with pytest.raises(ValueError, match="unknown auxiliary embedding"):
        auxiliary_features(torch.rand(3), "fourier", 4)
    with pytest.raises(ValueError, match="size"):
        AuxiliaryEmbedding("binary", HIDDEN, size=0)


@pytest.mark.parametrize("kind", FEATURE_KINDS)
def test_per_layer_maps_start_at_zero_and_read_the_same_features(kind):
    embedding = AuxiliaryEmbedding(kind, HIDDEN, size=8, layers=3)
    size = 32 if kind == "float_bits" else 8
    assert embedding.layer_maps.shape == (3, size, HIDDEN) and not embedding.layer_maps.any()
    u = torch.rand(5)
    assert torch.equal(embedding.features(u), auxiliary_features(u, kind, size))


@pytest.mark.parametrize("kind", sorted(set(EMBEDDING_KINDS) - set(FEATURE_KINDS)))
def test_per_layer_maps_need_a_feature_code(kind):
    with pytest.raises(ValueError, match="feature code of u"):
        AuxiliaryEmbedding(kind, HIDDEN, layers=2)
