"""How far a drafter that does not read u can go: the runs of the teacher's modes in its own samples.

A drafter that never reads u (the independent baseline, any argmax drafter) can at best draft the teacher's mode
chain, the argmax continuation; a draft holds only while the sampled tokens are the modes of their distributions.
In PTP's decoding there is one more condition: the drafts a call proposes follow the token that the teacher decides
in that same call (the "+1" token, docs/method.md, Partial quadratic decoding), so they were made before that token
was known and bet on its value too. An argmax drafter bets that it is the mode; an O-PTP drafter whose first slot
reads u perfectly knows it.

:func:`mode_chain_ceiling` runs the teacher over a data directory's completions (its own samples under the data's
sampling configuration S) and reports the mode rate and, for several window lengths, the tokens per call of two ideal
drafters: ``mode_chain`` (drafts the mode chain after betting that the "+1" token is the mode: the ceiling of every
drafter that ignores u) and ``known_first`` (knows the "+1" token and drafts the mode chain after it: what reading
the first slot's u alone is worth). A drafter that beats ``mode_chain`` must read u. ``ptp ceiling`` is the command.

:func:`bin_agreement` measures a second limit, set by training in 16 bits: the bins a distillation's teacher pass
computes under autocast against the bins of the verification in the model's own precision. A u drawn in the 16-bit
bin of a target picks another token under float32 wherever the two bins do not overlap, so a drafter trained on those
bins is right at most that share of the time per slot (``ptp ceiling --bins-in bfloat16``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from ptp.data.dataset import Dataset, load_dataset
from ptp.loading import check_exists
from ptp.runtime import resolve_device, resolve_dtype
from ptp.sampling import bins

#: Window lengths reported by default.
WINDOWS = (4, 8, 16, 32)


def calls_for(modes: Sequence[bool], window: int, known_first: bool) -> int:
    """Forward calls that an ideal drafter with groups of ``window`` slots needs for one completion.

    ``modes[k]``: the completion's token k is the mode of the teacher's distribution given the tokens before it. The
    prefill call decides token 0; every later call commits the drafts that hold (at most ``window - 1``: the group's
    first slot is the "+1" token) and the token the teacher decides.
    """
    n, decided, calls = len(modes), 0, 1
    while decided + 1 < n:
        held = 0
        if known_first or modes[decided]:
            while held < window - 1 and decided + 1 + held < n and modes[decided + 1 + held]:
                held += 1
        decided, calls = min(n - 1, decided + held + 1), calls + 1
    return calls


@torch.no_grad()
def mode_flags(model, data: Dataset, max_documents: int | None = None, progress: bool = False) -> list[list[bool]]:
    """For each completion of ``data`` (the first ``max_documents``), whether each of its tokens is the mode of the
    teacher's distribution at its position (one forward pass of ``model`` per document)."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    flags = []
    for document in tqdm(data.documents[:max_documents], desc="documents", disable=not progress):
        tokens = document.tokens.to(device)
        logits = model(tokens.unsqueeze(0)).logits[0]
        start = document.prompt_length
        flags.append((tokens[start:] == logits[start - 1 : -1].argmax(dim=-1)).tolist())
    return flags


@torch.no_grad()
def bin_agreement(
    model, data: Dataset, bins_in: torch.dtype, max_documents: int | None = None, progress: bool = False
) -> dict:
    """How often a u drawn in a completion token's bin under the data's sampling configuration, computed under
    autocast in ``bins_in`` (as a distillation's teacher pass in 16 bits computes it), picks the same token when the
    bin is computed in ``model``'s own precision (as the engine's float32 verification computes it).

    Returns ``dtype``, ``positions`` (tokens whose ``bins_in`` bin is not empty), ``agreement`` (the mean share of
    their ``bins_in`` bin inside the full-precision bin) and ``empty`` (tokens outside the kept set in ``bins_in``,
    which do not train).
    """
    from tqdm.auto import tqdm

    if data.sampling is None:
        raise ValueError(f"{data.path} records no sampling configuration: its tokens have no bins")
    device = next(model.parameters()).device
    agreement, positions, empty = 0.0, 0, 0
    for document in tqdm(data.documents[:max_documents], desc="bins", disable=not progress):
        tokens, start = document.tokens.to(device), document.prompt_length
        if start >= len(tokens):
            continue
        full = model(tokens.unsqueeze(0)).logits[0, start - 1 : -1].float()
        with torch.autocast(device.type, dtype=bins_in):
            low = model(tokens.unsqueeze(0)).logits[0, start - 1 : -1].float()
        (left, right), (low_left, low_right) = (bins(x, tokens[start:], data.sampling) for x in (full, low))
        width = low_right - low_left
        kept = width > 0
        overlap = (torch.minimum(right, low_right) - torch.maximum(left, low_left)).clamp(min=0)
        agreement += float((overlap[kept] / width[kept]).sum())
        positions, empty = positions + int(kept.sum()), empty + int((~kept).sum())
    name = str(bins_in).removeprefix("torch.")
    return {"dtype": name, "positions": positions, "agreement": agreement / max(positions, 1), "empty": empty}


def mode_chain_ceiling(
    model,
    data: str | os.PathLike | Dataset,
    *,
    windows: Sequence[int] = WINDOWS,
    max_documents: int | None = None,
    device: str = "auto",
    dtype: str | torch.dtype = "float32",
    bins_in: str | torch.dtype | None = None,
    progress: bool = False,
) -> dict:
    """The mode rate of ``data``'s completions under ``model`` (the teacher that sampled them) and, per window
    length, the tokens per call of the ideal ``mode_chain`` and ``known_first`` drafters (module docstring); with
    ``bins_in`` (``bfloat16`` or ``float16``) also :func:`bin_agreement`, as ``bins``.

    ``model``: a causal LM, a directory or name ``AutoModelForCausalLM`` loads (in ``dtype``, on ``device``), or None
    for the default model's teacher.

    Returns:
        ``documents``, ``tokens`` (completion tokens), ``mode_rate``, ``sampling`` (the data's S, a dict or None), and
        ``windows``: ``{N: {"mode_chain": tau, "known_first": tau}}``.
    """
    if bins_in is not None:
        bins_in = resolve_dtype(bins_in, torch.device("cpu"))
        if bins_in not in (torch.bfloat16, torch.float16):
            raise ValueError(f"bins_in must be a 16-bit dtype (bfloat16 or float16), got {bins_in}")
    if any(w < 1 for w in windows):
        raise ValueError(f"window lengths must be >= 1, got {list(windows)}")
    if max_documents is not None and max_documents < 1:
        raise ValueError(f"max_documents must be >= 1 (or None: all), got {max_documents}")
    data = data if isinstance(data, Dataset) else load_dataset(data)
    if model is None or isinstance(model, (str, os.PathLike)):
        model = _load(model, resolve_device(device), resolve_dtype(dtype, resolve_device(device)))
    data.check_model(model)
    flags = [f for f in mode_flags(model, data, max_documents, progress) if f]
    if not flags:
        raise ValueError(f"{data.path} has no completion tokens to measure")
    tokens = sum(len(f) for f in flags)
    result = {}
    for window in windows:
        result[window] = {
            name: tokens / sum(calls_for(f, window, known) for f in flags)
            for name, known in (("mode_chain", False), ("known_first", True))
        }
    measured = {
        "documents": len(flags),
        "tokens": tokens,
        "mode_rate": sum(map(sum, flags)) / tokens,
        "sampling": data.sampling.to_dict() if data.sampling else None,
        "windows": result,
    }
    if bins_in is not None:
        measured["bins"] = bin_agreement(model, data, bins_in, max_documents, progress)
    return measured


def _load(path: str | os.PathLike | None, device: torch.device, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    if path is None:
        from ptp.default_model import teacher_dir

        path = teacher_dir()
    check_exists("model", path)
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).to(device).eval()
