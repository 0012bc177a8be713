"""Sampling as a deterministic function of a uniform number.

A sampling configuration S (temperature, top-k, top-p, or greedy) turns a row of logits into a distribution P over
the vocabulary. Its cumulative distribution in *vocabulary order* gives every token j a half-open bin
``[F(j-1), F(j))``; ``pick(u)`` returns the token whose bin holds ``u``. With ``u ~ Uniform[0, 1)`` this is an exact
sample of P, and with the same ``u`` it is the same token every time. ``order="probability"`` (this project's
extension) lays the bins out by descending probability instead, so that a small u picks the likely tokens: the same
distribution, another coupling of u and tokens, which a drafter may find easier to learn. This module is the only
implementation of S and of pick in the project: data generation, training targets, verification and the reference
sampler all call it.

All functions are pure tensor functions over a trailing vocabulary axis, batched over any leading axes, and compute
in float32 whatever the dtype of the logits.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch

#: The largest float32 strictly below 1: the top of the range an auxiliary may take.
MAX_AUXILIARY = 1.0 - 2.0**-24

#: How the bins are laid out along [0, 1): by token id (docs/method.md, Sampling), or by descending probability.
ORDERS = ("vocabulary", "probability")


@dataclass(frozen=True)
class SamplingConfig:
    """How logits become the distribution that tokens are drawn from (docs/method.md, Sampling)."""

    do_sample: bool = True
    """False: greedy decoding, a one-hot distribution on the argmax (ties: the lower token id)."""
    temperature: float = 1.0
    """Logits are divided by it; must be > 0 when sampling."""
    top_k: int | None = None
    """Keep the k largest logits (ties: the lower token id); None or 0 (as in transformers): off, stored as None."""
    top_p: float | None = None
    """Nucleus: keep tokens, in descending probability, while the mass before them is < top_p; None or 1.0 (as in
    transformers): off, stored as None."""
    order: str = "vocabulary"
    """The order of the bins along [0, 1): ``vocabulary`` (token ids) or ``probability`` (descending, ties to the
    lower id). It changes which token a given u picks, not the distribution; a drafter is trained for one order."""

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {self.order!r}")
        # One spelling of "off", so that equal configurations compare (and hash) equal.
        if _is_number(self.top_k) and self.top_k == 0:
            object.__setattr__(self, "top_k", None)
        if _is_number(self.top_p) and self.top_p == 1:
            object.__setattr__(self, "top_p", None)
        if not self.do_sample:
            return
        if not _is_number(self.temperature) or not math.isfinite(self.temperature) or self.temperature <= 0:
            raise ValueError(
                f"temperature must be a finite number > 0 when sampling, got {self.temperature!r} "
                "(for greedy decoding pass do_sample=False)"
            )
        integer = isinstance(self.top_k, int) and not isinstance(self.top_k, bool)
        if self.top_k is not None and (not integer or self.top_k < 1):
            raise ValueError(f"top_k must be an integer >= 1, or 0 or None for no top-k, got {self.top_k!r}")
        if self.top_p is not None and not (_is_number(self.top_p) and 0.0 < self.top_p < 1.0):
            raise ValueError(f"top_p must be in (0, 1), or 1.0 or None for no top-p, got {self.top_p!r}")

    @classmethod
    def greedy(cls) -> SamplingConfig:
        return cls(do_sample=False)

    @classmethod
    def parse(cls, text: str, order: str = "vocabulary") -> SamplingConfig:
        """The compact spelling of the command line: ``greedy``, or ``T,k,p`` (temperature, top_k, top_p), where as
        in ``transformers`` top_k 0 and top_p 1 mean off (``-`` is taken for either too); e.g. ``0.7,50,0.95`` or
        ``1,0,1`` (plain sampling). The bins are in ``order``."""
        text = text.strip()
        if text == "greedy":
            return cls(do_sample=False, order=order)
        parts = [part.strip() for part in text.split(",")]
        if len(parts) != 3:
            raise ValueError(f"sampling must be 'greedy' or 'T,k,p' (e.g. 0.7,50,0.95; top_k 0 and top_p 1: off), "
                             f"got {text!r}")  # fmt: skip
        temperature = _number(parts[0], float, "temperature", text)
        top_k = None if parts[1] == "-" else _number(parts[1], int, "top_k", text)
        top_p = None if parts[2] == "-" else _number(parts[2], float, "top_p", text)
        return cls(temperature=temperature, top_k=top_k, top_p=top_p, order=order)

    @classmethod
    def from_values(
        cls,
        *,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        do_sample: bool | None = None,
        default: SamplingConfig | None = None,
    ) -> SamplingConfig | None:
        """The configuration that user-facing values describe, as a ``transformers`` generation config reads them:
        the values given override ``default`` (e.g. the configuration an adapter was trained for), the others keep
        its values. Used wherever S comes from a person: the command line, the server's requests, pregeneration.

        Args:
            temperature: > 0; 0 means greedy (as in the OpenAI API). Given alone it also switches a greedy default
                to sampling.
            top_k: 0 (as in ``transformers``) or None: off. top_p: in (0, 1]; 1: off.
            do_sample: False: greedy; None: sampling if ``default`` samples or a temperature is given.
            default: the configuration the values modify (None: plain sampling, temperature 1, no top-k or top-p);
                the result's bins are in its order.
        Returns:
            ``default`` itself when no value is given (None stays None), else the new configuration.
        """
        if temperature is None and top_k is None and top_p is None and do_sample is None:
            return default
        base = default if default is not None else cls()
        if temperature == 0:
            if do_sample:
                raise ValueError("temperature 0 means greedy decoding; it cannot be combined with do_sample=True")
            do_sample = False
        sample = do_sample if do_sample is not None else (temperature is not None or base.do_sample)
        if not sample:
            return cls(do_sample=False, order=base.order)
        inherited = base if base.do_sample else cls()  # a greedy default has no values worth keeping
        return cls(
            temperature=inherited.temperature if temperature is None else temperature,
            top_k=inherited.top_k if top_k is None else top_k,
            top_p=inherited.top_p if top_p is None else top_p,
            order=base.order,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SamplingConfig:
        unknown = set(data) - {"do_sample", "temperature", "top_k", "top_p", "order"}
        if unknown:
            raise ValueError(f"unknown sampling configuration keys: {sorted(unknown)}")
        return cls(**data)

    def describe(self) -> str:
        if not self.do_sample:
            return "greedy"
        text = f"T={self.temperature:g}, top_k={self.top_k}, top_p={self.top_p}"
        return text if self.order == "vocabulary" else f"{text}, order={self.order}"

    def same_distribution(self, other: SamplingConfig) -> bool:
        """Whether both give the same P (they may differ in the order of the bins)."""
        return replace(self, order="vocabulary") == replace(other, order="vocabulary")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(text: str, kind: type, name: str, whole: str):
    """``text`` as an int or a float, or a ValueError naming the field."""
    try:
        return kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise ValueError(f"{name} must be {what}, got {text!r} in {whole!r}") from None


#: The sampling configuration S that drafters are trained and decode with unless told otherwise: temperature 0.7,
#: top-k 50, top-p 0.95 (pregeneration, a new drafter, a plain model's chat, the throughput benchmark).
DEFAULT_SAMPLING = SamplingConfig(temperature=0.7, top_k=50, top_p=0.95)


def probabilities(logits: torch.Tensor, config: SamplingConfig) -> torch.Tensor:
    """The distribution P of S (docs/method.md, Sampling).

    Args:
        logits: ``[..., V]`` in any floating dtype.
    Returns:
        ``[..., V]`` float32 probabilities; tokens outside the kept set are exactly 0, the rest sum to 1 (up to
        round-off).
    """
    if not config.do_sample:
        return torch.nn.functional.one_hot(logits.argmax(dim=-1), logits.shape[-1]).float()
    probs, ids = _kept(logits, config)
    if ids is None:
        return probs
    return torch.zeros(logits.shape, device=logits.device).scatter_(-1, ids, probs)


def _kept(logits: torch.Tensor, config: SamplingConfig) -> tuple[torch.Tensor, torch.Tensor | None]:
    """S on the tokens that can be kept: ``(probs, ids)``, ``[..., C]`` each, ids ascending, a dropped token's
    probability exactly 0. With top-k the candidates are the k kept ids (C = k), so that everything after one pass
    over the vocabulary costs ``[..., k]``; without it they are the whole vocabulary (``ids`` None: the identity).
    """
    z = logits.float() / config.temperature
    vocab = z.shape[-1]
    ids = None
    if config.top_k is not None and config.top_k < vocab:
        ids = torch.sort(_top_k(z, config.top_k), dim=-1).values
        z = z.gather(-1, ids)
    probs = torch.softmax(z, dim=-1)
    if config.top_p is not None:
        # Descending probability, ties in ascending id: the candidates are in id order and the sort is stable.
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)
        # The exclusive prefix sum, shifted rather than cumsum - p: the subtraction rounds, and at a cut where the
        # mass before a token equals top_p it would keep a token that the definition drops.
        total = torch.cumsum(sorted_probs, dim=-1)
        mass_before = torch.cat([torch.zeros_like(total[..., :1]), total[..., :-1]], dim=-1)
        keep = torch.empty_like(order, dtype=torch.bool).scatter_(-1, order, mass_before < config.top_p)
        probs = torch.where(keep, probs, 0.0)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs, ids


def _top_k(z: torch.Tensor, k: int) -> torch.Tensor:
    """The ids of the k largest of ``z`` ``[..., V]``, of values equal to the k-th the lower ids. ``topk`` alone
    may return any of the tied ones: a second ``topk`` over keys that rank every larger value first (inf), then the
    tied ones by ascending id (minus the id), then the rest (-inf) returns the right ones."""
    kth = z.topk(k, dim=-1).values[..., -1:]
    ids = torch.arange(z.shape[-1], device=z.device, dtype=torch.float32)
    key = torch.where(z > kth, math.inf, torch.where(z == kth, -ids, -math.inf))
    return key.topk(k, dim=-1).indices


def cumulative(probs: torch.Tensor) -> torch.Tensor:
    """Bin-order CDF ``F(j) = sum_{l <= j} P(l)`` of ``[..., C]`` probabilities.

    ``F`` is made non-decreasing (a parallel scan may round otherwise) and every entry from the last token that adds
    probability onwards is exactly 1, so that any ``u < 1`` lands in a non-empty bin.
    """
    cdf = torch.cumsum(probs.float(), dim=-1)
    cdf = torch.cummax(cdf, dim=-1).values
    return torch.where(cdf >= cdf[..., -1:], 1.0, cdf)


def _in_order(probs: torch.Tensor, order: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``probs`` (in id order) laid out in bin order, and the index of each place (None: id order, the identity)."""
    if order == "vocabulary":
        return probs, None
    # Descending, ties to the lower id: the sort is stable and the input is in id order.
    return torch.sort(probs, dim=-1, descending=True, stable=True)


def pick(u: torch.Tensor, logits: torch.Tensor, config: SamplingConfig) -> torch.Tensor:
    """Pick(u, S(logits)): the token of the sampling configuration whose bin holds ``u``: the first place in bin
    order where ``F`` exceeds ``u``.

    Args:
        u: ``[...]`` auxiliaries in [0, 1).
        logits: ``[..., V]``.
    Returns:
        int64 token ids ``[...]``.
    """
    if not config.do_sample:
        return logits.argmax(dim=-1)
    probs, ids = _kept(logits, config)
    ranked, order = _in_order(probs, config.order)
    place = torch.searchsorted(cumulative(ranked), u.float().unsqueeze(-1).contiguous(), right=True)
    # Unreachable for u < 1 (the last edge is exactly 1); the clamp only keeps a bad u from indexing out of range.
    index = place.clamp_(max=probs.shape[-1] - 1)
    for lookup in (order, ids):  # place -> candidate -> token id
        if lookup is not None:
            index = lookup.gather(-1, index)
    return index.squeeze(-1)


def bins(logits: torch.Tensor, tokens: torch.Tensor, config: SamplingConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The bin ``[F(t-1), F(t))`` of each observed token under S (F in the configuration's bin order).

    Args:
        logits: ``[..., V]``.
        tokens: int ``[...]``.
    Returns:
        ``(left, right)``, float32 ``[...]`` each. A token outside the kept set has an empty bin (left == right);
        callers must handle it explicitly.
    """
    if not config.do_sample:
        probs, ids = probabilities(logits, config), None
    else:
        probs, ids = _kept(logits, config)
    token = tokens.long().unsqueeze(-1)
    candidate, found = token, None
    if ids is not None:
        match = ids == token
        found = match.any(dim=-1, keepdim=True)
        candidate = match.to(torch.uint8).argmax(dim=-1, keepdim=True)  # 0 where the token is no candidate
    ranked, order = _in_order(probs, config.order)
    place = candidate
    if order is not None:  # the place of each candidate in the bin order
        places = torch.arange(order.shape[-1], device=order.device).expand(order.shape)
        place = torch.empty_like(order).scatter_(-1, order, places).gather(-1, candidate)
    cdf = cumulative(ranked)
    right = cdf.gather(-1, place)
    left = torch.where(place > 0, cdf.gather(-1, (place - 1).clamp(min=0)), 0.0)
    if found is not None:
        # A token that is no candidate has the empty bin where the full CDF has it: in id order at the mass of the
        # candidates below it, in probability order at 1 (the zeros come last).
        if order is None:
            below = (ids < token).sum(dim=-1, keepdim=True) - 1
            edge = torch.where(below >= 0, cdf.gather(-1, below.clamp(min=0)), 0.0)
        else:
            edge = torch.ones_like(right)
        left, right = torch.where(found, left, edge), torch.where(found, right, edge)
    return left.squeeze(-1), right.squeeze(-1)


def sample_in_bins(
    left: torch.Tensor, right: torch.Tensor, beta: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Auxiliaries ``u = left + (right - left) * b`` with ``b ~ Beta(beta, beta)``, strictly inside each bin.

    ``beta = 1`` is uniform; ``beta < 1`` puts u near the bin edges. Bins must be non-empty.
    """
    if beta == 1.0:
        b = torch.rand(left.shape, generator=generator, device=left.device)
    else:
        # Beta(a, a) from two Gamma draws, through the generator so that it is reproducible.
        x = _gamma(left.shape, beta, generator, left.device)
        y = _gamma(left.shape, beta, generator, left.device)
        b = x / (x + y).clamp_min(torch.finfo(torch.float32).tiny)
    u = left + (right - left) * b
    # Round-off may land on the right edge, which belongs to the next bin; step back to the largest float below it.
    below_right = torch.nextafter(right, torch.zeros_like(right))
    return torch.minimum(torch.maximum(u, left), below_right).clamp(0.0, MAX_AUXILIARY)


def _gamma(shape, concentration: float, generator, device) -> torch.Tensor:
    # torch.distributions.Gamma takes no generator; the Marsaglia-Tsang sampler with the boost for shape < 1 does.
    boost = concentration < 1.0
    d = (concentration + 1.0 if boost else concentration) - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.empty(shape, device=device)
    todo = torch.ones(shape, dtype=torch.bool, device=device)
    while todo.any():
        x = torch.randn(shape, generator=generator, device=device)
        v = (1.0 + c * x) ** 3
        uu = torch.rand(shape, generator=generator, device=device)
        ok = (v > 0) & (torch.log(uu.clamp_min(1e-30)) < 0.5 * x * x + d - d * v + d * torch.log(v.clamp_min(1e-30)))
        take = ok & todo
        out = torch.where(take, d * v, out)
        todo = todo & ~take
    if boost:
        out = out * torch.rand(shape, generator=generator, device=device) ** (1.0 / concentration)
    return out


def check_auxiliaries(auxiliaries: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Validate caller-supplied auxiliaries: the given shape, finite values in [0, 1). Returns them as float32.

    Values that are below 1 but round up to 1 in float32 are clamped to :data:`MAX_AUXILIARY`.
    """
    if not isinstance(auxiliaries, torch.Tensor):
        raise TypeError(f"auxiliaries must be a torch.Tensor, got {type(auxiliaries).__name__}")
    if not auxiliaries.is_floating_point():
        raise TypeError(f"auxiliaries must be a floating-point tensor, got {auxiliaries.dtype}")
    if tuple(auxiliaries.shape) != tuple(shape):
        got = tuple(auxiliaries.shape)
        raise ValueError(f"auxiliaries must have shape {tuple(shape)} (batch, max_new_tokens), got {got}")
    bad = ~((auxiliaries >= 0) & (auxiliaries < 1))
    if bad.any():
        value = auxiliaries[bad].flatten()[0].item()
        raise ValueError(f"auxiliaries must lie in [0, 1); found {value!r}")
    return auxiliaries.float().clamp(max=MAX_AUXILIARY)
