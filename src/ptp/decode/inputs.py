"""What both decoders share: argument checks, the auxiliaries, stopping, and the result object."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ptp.sampling import SamplingConfig, check_auxiliaries


@dataclass
class GenerationOutput:
    """The result of a generation call.

    ``sequences`` is ``[B, prompt_width + max_new_tokens]``: the (left-padded) prompt, then the new tokens; a row
    that stopped at EOS is filled with ``pad_token_id`` after it. Only verified tokens are ever returned.
    """

    sequences: torch.Tensor
    """int64 ``[B, prompt_width + max_new_tokens]``."""
    lengths: torch.Tensor
    """int64 ``[B]``: new tokens per row (EOS included)."""
    prompt_width: int
    """Columns of ``sequences`` taken by the prompt."""
    num_calls: int = 0
    """Forward passes of the model (prefill included)."""
    accept_lengths: list[list[int]] = field(default_factory=list)
    """Per row, the tokens committed by each forward call while the row was running."""

    @property
    def new_tokens(self) -> torch.Tensor:
        """``[B, max_new_tokens]``: the generated part of ``sequences``."""
        return self.sequences[:, self.prompt_width :]

    @property
    def tokens_per_call(self) -> float:
        """Mean tokens committed per forward call, over all rows and calls (tau)."""
        calls = sum(len(row) for row in self.accept_lengths)
        return sum(sum(row) for row in self.accept_lengths) / max(calls, 1)

    def accept_histogram(self, size: int | None = None) -> list[int]:
        """Counts of calls that committed n tokens, n = 0..size-1 (index 0 is always 0)."""
        longest = max((max(row) for row in self.accept_lengths if row), default=0)
        counts = [0] * max(size or 0, longest + 1)
        for row in self.accept_lengths:
            for n in row:
                counts[n] += 1
        return counts

    def rows(self) -> list[list[int]]:
        """The new tokens of each row as Python lists, cut at their length."""
        return [self.new_tokens[b, : int(n)].tolist() for b, n in enumerate(self.lengths)]


def check_prompt(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, max_new_tokens: int, max_positions: int | None
) -> torch.Tensor:
    """Validate a batch of prompts; returns the bool ``[B, S]`` attention mask (all ones when None)."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.int64, torch.int32):
        raise TypeError("input_ids must be an integer torch.Tensor of shape [batch, prompt_length]")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape [batch, prompt_length], got {tuple(input_ids.shape)}")
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError("the prompt is empty: input_ids needs at least one row and one token")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if attention_mask is None:
        mask = torch.ones_like(input_ids, dtype=torch.bool)
    else:
        if tuple(attention_mask.shape) != tuple(input_ids.shape):
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids {tuple(input_ids.shape)}"
            )
        mask = attention_mask.to(input_ids.device).bool()
    lengths = mask.sum(dim=1)
    if (lengths == 0).any():
        raise ValueError("a prompt row is empty (its attention_mask is all zeros)")
    # Left padding only: once a row starts, it must not have holes.
    started = mask.long().cumsum(dim=1) > 0
    if (started & ~mask).any():
        raise ValueError("prompts must be left-padded: attention_mask has a zero after a one")
    if max_positions is not None:
        longest = int(lengths.max())
        if longest + max_new_tokens > max_positions:
            raise ValueError(
                f"prompt ({longest} tokens) + max_new_tokens ({max_new_tokens}) exceeds the model's context of "
                f"{max_positions} positions"
            )
    return mask


def prepare_auxiliaries(
    auxiliaries: torch.Tensor | None,
    seed: int | None,
    generator: torch.Generator | None,
    batch: int,
    max_new_tokens: int,
    device: torch.device,
) -> torch.Tensor:
    """The auxiliary of each new token: the caller's (checked), or drawn uniformly.

    Draws happen on the CPU so that a seed gives the same tokens on every device. Returns float32
    ``[batch, max_new_tokens]`` on ``device``.
    """
    if auxiliaries is not None:
        if seed is not None or generator is not None:
            raise ValueError("pass either auxiliaries or a seed/generator, not both")
        return check_auxiliaries(auxiliaries, (batch, max_new_tokens)).to(device)
    if seed is not None and generator is not None:
        raise ValueError("pass either a seed or a generator, not both")
    if generator is None:
        generator = torch.Generator()
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
    return torch.rand((batch, max_new_tokens), generator=generator).to(device)


def resolve_stop_tokens(eos_token_id, pad_token_id, config) -> tuple[torch.Tensor, int | None]:
    """EOS ids (``int``, list, or the model's generation config) and the pad id used after a row stops.

    Returns the EOS ids as an int64 tensor (possibly empty) and the pad id (None only when there is no EOS).
    """
    generation = getattr(config, "generation_config", None)
    if eos_token_id is None and generation is not None:
        eos_token_id = generation.eos_token_id
    if pad_token_id is None and generation is not None:
        pad_token_id = generation.pad_token_id
    eos = [] if eos_token_id is None else ([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id))
    if any(isinstance(e, bool) or not isinstance(e, int) or e < 0 for e in eos):
        raise ValueError(f"eos_token_id must be a non-negative int or a list of them, got {eos_token_id!r}")
    if pad_token_id is None and eos:
        pad_token_id = eos[0]
    return torch.tensor(eos, dtype=torch.int64), pad_token_id


def check_sliding_window(model_config, total_length: int) -> None:
    """Decoders build their own attention masks; sequences longer than a sliding window are not supported yet."""
    window = getattr(model_config, "sliding_window", None)
    uses = getattr(model_config, "use_sliding_window", True)
    if isinstance(window, int) and uses and total_length > window:
        raise ValueError(
            f"prompt + max_new_tokens = {total_length} exceeds the model's sliding window ({window}); "
            "ptp-lm does not support sliding-window attention beyond the window yet"
        )


def context_length(model) -> int | None:
    """The longest sequence the model's position embeddings allow (None: unbounded); a :class:`ptp.PTPModel`'s is its
    base's."""
    config = getattr(model, "base_model", model).config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def sampling_from_arguments(
    sampling: SamplingConfig | None, do_sample: bool, temperature: float, top_k: int | None, top_p: float | None
) -> SamplingConfig:
    """``sampling``, or the configuration of the transformers-style arguments; not both."""
    if sampling is None:
        return SamplingConfig(do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p)
    if (do_sample, temperature, top_k, top_p) != (True, 1.0, None, None):
        raise ValueError("pass either sampling or do_sample/temperature/top_k/top_p, not both")
    return sampling


def check_plain_inputs(model, input_ids, attention_mask, auxiliaries, max_new_tokens, eos_token_id, pad_token_id):
    """The checks of the plain (one token per call) samplers.

    Returns ``(model, input_ids, mask, u, eos, pad)`` on the model's device: a :class:`ptp.PTPModel` is replaced by
    its base (outside ``PTPModel.forward`` its adapter is off: the frozen teacher), ``mask`` is the bool prompt mask,
    ``u`` the float32 auxiliaries, ``eos`` the stop ids and ``pad`` the id written after a row stops.
    """
    from ptp.model.ptp import PTPModel

    if isinstance(model, PTPModel):
        model = model.base_model
    device = model.device
    input_ids = input_ids.to(device)
    mask = check_prompt(input_ids, attention_mask, max_new_tokens, context_length(model))
    check_sliding_window(model.config, input_ids.shape[1] + max_new_tokens)
    u = check_auxiliaries(auxiliaries, (input_ids.shape[0], max_new_tokens)).to(device)
    eos, pad = resolve_stop_tokens(eos_token_id, pad_token_id, model)
    return model, input_ids, mask, u, eos.to(device), pad
