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
    input_ids,
    attention_mask,
    max_new_tokens: int,
    max_positions: int | None,
    vocab_size: int | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a batch of prompts.

    Args:
        input_ids: int ``[B, S]``, or a list of token ids (one prompt) or of equally long lists (a batch).
        attention_mask: ``[B, S]`` (or lists), 1 on real tokens, left padding only; None: all ones.
        max_new_tokens: must be >= 1, and with the longest prompt fit in ``max_positions`` (None: no limit).
        vocab_size: ids must lie in ``[0, vocab_size)`` (None: not checked).
        device: where the prompt goes (default: where it is).
    Returns:
        ``(input_ids, mask)``: int64 ``[B, S]`` and bool ``[B, S]`` on ``device``.
    """
    input_ids = _as_tensor(input_ids, "input_ids")
    if input_ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"input_ids must hold integer token ids, got {input_ids.dtype} (convert with .long())")
    if input_ids.dim() != 2:
        raise ValueError(
            f"input_ids must have shape [batch, prompt_length], got {tuple(input_ids.shape)} (one prompt: [1, length])"
        )
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError("the prompt is empty: input_ids needs at least one row and one token")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1 (new tokens per row), got {max_new_tokens!r}")
    input_ids = input_ids.to(device=device, dtype=torch.int64)
    if vocab_size is not None:
        low, high = int(input_ids.min()), int(input_ids.max())
        if low < 0 or high >= vocab_size:
            raise ValueError(
                f"input_ids holds token id {low if low < 0 else high}, outside the model's vocabulary of {vocab_size} "
                "ids: tokenize the prompt with the model's own tokenizer (padding too must use a valid id)"
            )
    if attention_mask is None:
        mask = torch.ones_like(input_ids, dtype=torch.bool)
    else:
        attention_mask = _as_tensor(attention_mask, "attention_mask")
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
    holes = (started & ~mask).any(dim=1)
    if holes.any():
        raise ValueError(
            f"prompts must be left-padded: row {int(holes.nonzero()[0])} of attention_mask has a zero after a one; "
            "pad on the left (a tokenizer does with padding_side='left')"
        )
    if max_positions is not None:
        longest = int(lengths.max())
        if longest >= max_positions:
            raise ValueError(
                f"the prompt ({longest} tokens) leaves no room for a new token in the model's context of "
                f"{max_positions} positions: shorten it (e.g. keep its last {max_positions - 1} tokens)"
            )
        if longest + max_new_tokens > max_positions:
            raise ValueError(
                f"prompt ({longest} tokens) + max_new_tokens ({max_new_tokens}) exceeds the model's context of "
                f"{max_positions} positions: shorten the prompt or ask for at most {max_positions - longest} tokens"
            )
    return input_ids, mask


def _as_tensor(value, name: str) -> torch.Tensor:
    """``value`` as a tensor: a tensor as it is, a list of numbers as one row, a list of equally long lists as rows."""
    if isinstance(value, torch.Tensor):
        return value
    rows = [value]
    if isinstance(value, (list, tuple)) and value and all(isinstance(row, (list, tuple)) for row in value):
        rows = list(value)
    items = [item for row in rows if isinstance(row, (list, tuple)) for item in row]
    if isinstance(value, str) or any(isinstance(item, str) for item in items):
        raise TypeError(f"{name} must be token ids, not text: tokenize the prompt first (tokenizer(text).input_ids)")
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a torch.Tensor [batch, length] or a list of token ids, got {type(value)}")
    if not all(isinstance(item, int) for item in items):
        raise TypeError(f"{name} must hold integers (a list of ints, or a list of lists of ints)")
    lengths = sorted({len(row) for row in rows})
    if len(lengths) > 1:
        raise ValueError(
            f"the rows of {name} have different lengths {lengths}: pad them on the left to one length and pass an "
            "attention_mask with 0 on the padding"
        )
    return torch.tensor(rows, dtype=torch.int64).view(len(rows), lengths[0])


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
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if generator is not None and (not isinstance(generator, torch.Generator) or generator.device.type != "cpu"):
        got = f"one on {generator.device}" if isinstance(generator, torch.Generator) else type(generator).__name__
        raise TypeError(
            f"generator must be a CPU torch.Generator (u are drawn on the CPU, so that a seed gives the same tokens "
            f"on every device), got {got}"
        )
    if generator is None:
        generator = torch.Generator()
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
    return torch.rand((batch, max_new_tokens), generator=generator).to(device)


def stop_tokens(model, tokenizer=None) -> tuple[list[int], int | None]:
    """Where a model's text ends, and what pads it: the EOS ids of the model's generation config (a chat model names
    its end-of-turn token there) together with the tokenizer's, sorted; the pad id is the tokenizer's, else the first
    EOS id. ``model``: a causal LM or a :class:`ptp.PTPModel` (its base's generation config)."""
    base = getattr(model, "base_model", None)
    generation = getattr(model, "generation_config", None) or getattr(base, "generation_config", None)
    configured = getattr(generation, "eos_token_id", None)
    ids = set([configured] if isinstance(configured, int) else configured or [])
    if tokenizer is not None and tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    eos = sorted(ids)
    pad = tokenizer.pad_token_id if tokenizer is not None else None
    return eos, pad if pad is not None else (eos[0] if eos else None)


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


def vocabulary_size(model) -> int:
    """The number of token ids the model's input embedding takes (a :class:`ptp.PTPModel`'s: its base's)."""
    return getattr(model, "base_model", model).get_input_embeddings().weight.shape[0]


def sampling_from_arguments(
    sampling: SamplingConfig | None,
    do_sample: bool | None,
    temperature: float | None,
    top_k: int | None,
    top_p: float | None,
    default: SamplingConfig | None = None,
) -> SamplingConfig:
    """The sampling configuration of a call: ``sampling``, or the one the transformers-style arguments describe (those
    left None are plain: sampling, temperature 1, no top-k, no top-p), or ``default`` when none of the five is given
    (None: plain sampling)."""
    arguments = dict(do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p)
    given = {name: value for name, value in arguments.items() if value is not None}
    if sampling is not None:
        if given:
            raise ValueError(f"pass either sampling or do_sample/temperature/top_k/top_p, not both (got {given})")
        if not isinstance(sampling, SamplingConfig):
            raise TypeError(f"sampling must be a ptp.SamplingConfig, got {type(sampling).__name__}")
        return sampling
    if not given and default is not None:
        return default
    return SamplingConfig(**given)


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
    input_ids, mask = check_prompt(
        input_ids, attention_mask, max_new_tokens, context_length(model), vocabulary_size(model), device
    )
    check_sliding_window(model.config, input_ids.shape[1] + max_new_tokens)
    u = check_auxiliaries(auxiliaries, (input_ids.shape[0], max_new_tokens)).to(device)
    eos, pad = resolve_stop_tokens(eos_token_id, pad_token_id, model)
    return model, input_ids, mask, u, eos.to(device), pad


def left_pad(sequences, pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, S]`` left-padded ids on the host and their bool mask, from token id sequences (lists or 1-D tensors)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.int64)
    mask = torch.zeros((len(sequences), width), dtype=torch.bool)
    for b, seq in enumerate(sequences):
        ids[b, width - len(seq) :] = torch.as_tensor(seq, dtype=torch.int64)
        mask[b, width - len(seq) :] = True
    return ids, mask
