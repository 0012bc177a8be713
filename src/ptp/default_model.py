"""The model that ships inside the package: a small Llama trained on the Python standard library, its PTP adapter,
an independent-baseline adapter for comparison, and a tiny draft model for transformers' assisted generation (see
``assets/default/MODEL_CARD.md``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

DEFAULT_DIR = Path(str(resources.files("ptp"))) / "assets" / "default"


def default_paths() -> dict[str, Path]:
    """``teacher`` (a Hugging Face model directory with its tokenizer), ``adapter``, ``independent`` and ``draft``
    (a 1.4M-parameter causal LM with the teacher's tokenizer, the draft model of ``ptp bench``'s hf-assisted)."""
    return {name: DEFAULT_DIR / name for name in ("teacher", "adapter", "independent", "draft")}


def has_default() -> bool:
    return all(
        (path / "config.json").is_file() or (path / "ptp_config.json").is_file() for path in default_paths().values()
    )


def load_default(adapter: str = "adapter", device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """The shipped model as ``(PTPModel, tokenizer)``; ``adapter="independent"`` loads the baseline drafter."""
    from transformers import AutoTokenizer

    from ptp.model.ptp import PTPModel

    paths = default_paths()
    if adapter not in ("adapter", "independent"):
        raise ValueError(f"adapter must be 'adapter' or 'independent', got {adapter!r}")
    if not has_default():
        raise FileNotFoundError(
            f"the default model is not installed under {DEFAULT_DIR}; reinstall ptp-lm or pass --model/--adapter"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(paths["teacher"]))
    model = PTPModel.from_pretrained(str(paths["teacher"]), paths[adapter], dtype=dtype, device=device)
    return model, tokenizer
