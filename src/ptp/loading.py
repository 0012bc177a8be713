"""What generation needs, loaded from paths: :func:`load` (``ptp.load``), the one place that turns a model, an adapter
and a separate drafter named by the user into models and a tokenizer (``ptp generate``, ``ptp bench`` and
``ptp serve`` all load through it).

The rules:

- nothing given: the shipped model, the default teacher with its PTP adapter (:func:`ptp.load_default`); while no
  adapter ships, the teacher alone, for plain decoding;
- ``model`` alone: the plain model, wrapped in a :class:`PTPModel` whose fresh drafter is never used; it decodes one
  token per call (``use_drafter=False``), which needs no adapter;
- ``model`` and ``adapter``: the trained drafter on that base;
- ``adapter`` alone: an adapter that holds its own trained base (``base/``: ``ptp train --objective ptp``, or a
  separate drafter trained with its base);
- ``drafter`` (with ``model`` as the teacher): a separate drafter, on ``drafter_model`` or on the base its adapter
  holds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ptp.model.ptp import PTPModel
from ptp.runtime import resolve_device, resolve_dtype
from ptp.sampling import SamplingConfig

#: A directory (or, for a model, a name ``transformers`` loads).
PathLike = str | os.PathLike
#: Why a model loaded without an adapter or a separate drafter cannot draft.
NO_TRAINED_DRAFTER = ("a model without a PTP adapter has no trained drafter: pass an adapter, or decode plainly, one "
                      "token per call (use_drafter=False; ptp generate --no-drafter)")  # fmt: skip


@dataclass
class Loaded:
    """What :func:`load` returns: pass ``model`` (and ``drafter``) to :func:`ptp.generate`."""

    model: PTPModel
    """The model that decodes: the teacher, drafting itself through its adapter unless there is a ``drafter``."""
    tokenizer: object
    """The model's tokenizer (``transformers``)."""
    drafter: PTPModel | None = None
    """A separate drafter (``generate(..., drafter=...)``); None: the model drafts itself, if it has an adapter."""
    trained: bool = True
    """Whether a trained drafter was loaded (an adapter or a separate drafter); without one, decode with
    ``use_drafter=False``."""

    @property
    def sampling(self) -> SamplingConfig:
        """The sampling configuration the drafter was trained for: the default of ``generate``."""
        return (self.drafter or self.model).config.sampling

    def generate(self, input_ids, *, use_drafter: bool = True, **options):
        """:func:`ptp.generate` with this model and drafter, stopping at :func:`ptp.decode.inputs.stop_tokens` unless
        ``eos_token_id`` is given. A model loaded without a trained drafter decodes plainly only
        (``use_drafter=False``)."""
        from ptp.decode.engine import generate
        from ptp.decode.inputs import stop_tokens

        if use_drafter and not self.trained:
            raise ValueError(NO_TRAINED_DRAFTER)
        options.setdefault("eos_token_id", stop_tokens(self.model, self.tokenizer)[0])
        return generate(self.model, input_ids, drafter=self.drafter, use_drafter=use_drafter, **options)


def load(
    model: PathLike | None = None,
    adapter: PathLike | None = None,
    *,
    drafter: PathLike | None = None,
    drafter_model: PathLike | None = None,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = torch.float32,
) -> Loaded:
    """Load a model, its drafter and its tokenizer by the rules of this module's docstring.

    Args:
        model: a base model directory (or a name ``AutoModelForCausalLM`` loads); None with ``adapter``: the base the
            adapter holds; None with neither: the shipped model.
        adapter: a PTP adapter directory (``ptp distill``, ``ptp train --objective ptp``).
        drafter: a separate drafter's adapter directory; ``model`` is then the teacher.
        drafter_model: the separate drafter's base (None: its adapter holds it).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``; CUDA without a GPU is a ValueError.
        dtype: a ``torch.dtype`` or its name (``auto``: bfloat16 on CUDA); exactness holds in float32, the default.
    Returns:
        :class:`Loaded`. Raises FileNotFoundError naming a path that does not exist, ValueError for a combination
        that does not fit (e.g. a model next to an adapter that holds its own base).
    """
    from transformers import AutoTokenizer

    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    for flag, path in (("model", model), ("adapter", adapter), ("drafter", drafter), ("drafter_model", drafter_model)):
        check_exists(flag, path)
    if drafter_model is not None and drafter is None:
        raise ValueError("drafter_model is the base of a separate drafter: pass drafter (its adapter) too")
    if model is None and adapter is None:
        if drafter is not None:
            raise ValueError("a separate drafter needs its teacher: pass model")
        from ptp.default_model import load_default, ships_drafter, teacher_dir

        if not ships_drafter():  # the teacher alone, for plain decoding
            model = teacher_dir()
        else:
            default, tokenizer = load_default(device=device, dtype=dtype)
            return Loaded(default, tokenizer)
    loaded = load_model(model, adapter, device=device, dtype=dtype)
    separate = None if drafter is None else load_model(drafter_model, drafter, device=device, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(model if model is not None else adapter))
    return Loaded(loaded, tokenizer, separate, trained=adapter is not None or drafter is not None)


def load_model(
    model: PathLike | None,
    adapter: PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = torch.float32,
) -> PTPModel:
    """One :class:`PTPModel` in eval mode: ``adapter`` on ``model`` (None: the base the adapter holds), or ``model``
    alone with a fresh drafter that plain decoding leaves unused."""
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    if model is None:
        if adapter is None:
            raise ValueError("pass a model, an adapter, or both")
        return PTPModel.from_pretrained(None, adapter, dtype=dtype, device=device)
    from transformers import AutoModelForCausalLM

    check_exists("model", model)
    try:
        base = AutoModelForCausalLM.from_pretrained(str(model), dtype=dtype).to(device)
    except OSError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FileNotFoundError(f"cannot load the model {model}: {reason}") from error
    if adapter is not None:
        return PTPModel.from_pretrained(base, adapter)
    return PTPModel(base).eval()


def check_exists(what: str, path: PathLike | None) -> None:
    """A path that does not exist is a FileNotFoundError; only a model may instead be a name (``org/name``) that
    ``transformers`` finds in its cache or on the Hub."""
    if path is None or Path(path).exists():
        return
    text = str(path)
    name = what in ("model", "drafter_model") and not text.startswith((".", "/", "~")) and text.count("/") <= 1
    if not name:
        raise FileNotFoundError(f"{what} {text} does not exist")
