"""What the size experiment measures a drafter by: separate drafters built from scratch with the teacher's
vocabulary (docs/method.md, Architecture: the paper's scaling study trains small drafters from scratch on the
teacher's bins), and the parameters a drafter holds, counted from the files it was saved in."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors import safe_open

from ptp.science.config import parse_size


def scratch_drafter(teacher: str, size: str, out: Path, seed: int = 0) -> Path:
    """A freshly initialised Llama of ``size`` (``HIDDENxLAYERS``) with the teacher's vocabulary, special tokens and
    context, saved with the teacher's tokenizer to ``out`` (kept when it is already there: every seed of an
    experiment starts from the same drafter, and distillation's ``train_drafter_base`` trains it). Returns ``out``."""
    from transformers import AutoConfig, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if (out / "config.json").is_file():
        return out
    hidden, layers = parse_size(size)
    source = AutoConfig.from_pretrained(teacher)
    source = getattr(source, "text_config", source)
    heads = max(2, hidden // 64)
    while hidden % heads:
        heads -= 1
    config = LlamaConfig(
        vocab_size=source.vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 8 // 3,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=source.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=source.bos_token_id,
        eos_token_id=source.eos_token_id,
        pad_token_id=getattr(source, "pad_token_id", None),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(teacher).save_pretrained(out)
    return out


def saved_parameters(directory: str | Path) -> int | None:
    """The number of parameters in the ``*.safetensors`` files of ``directory`` (tied weights are stored once);
    None when it holds none (a model given by name, not a directory)."""
    files = sorted(Path(directory).glob("*.safetensors")) if Path(directory).is_dir() else []
    if not files:
        return None
    total = 0
    for file in files:
        with safe_open(file, "pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (a safetensors handle is not iterable)
                total += math.prod(handle.get_slice(key).get_shape())
    return total


def drafter_parameters(teacher: str, adapter: Path) -> dict:
    """``trained``: the parameters a distillation trained and saved (LoRA and u embedding, plus a separate
    drafter's own base in ``base/``); ``drafting``: those of the whole network that runs the draft slots (the
    teacher's base plus the adapter, or the separate drafter's base plus its adapter). None where unknown."""
    adapter_only = saved_parameters(adapter) or 0
    own_base = saved_parameters(adapter / "base")
    trained = adapter_only + (own_base or 0)
    if own_base is not None:
        return {"trained": trained, "drafting": trained}
    base = saved_parameters(teacher)
    return {"trained": trained, "drafting": None if base is None else base + adapter_only}
