"""Helpers of the benchmark tests: a character-level tokenizer, tiny random Llamas, adapters and prompt files."""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from ptp.model.ptp import PTPModel

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
SPEC_BENCH = [
    {"question_id": 81, "category": "writing", "turns": ["Write a poem.", "Now shorter."]},
    {"question_id": 82, "category": "coding", "turns": ["def add(a, b):"]},
]
PLAIN = [{"prompt": "import os\n"}, {"prompt": "Hello, world", "category": "greeting"}]


def char_tokenizer(chars: str = string.printable, chat_template: str | None = CHAT_TEMPLATE):
    """One token per character, plus pad/BOS/EOS/unk at ids 0..3."""
    chars = [c for c in dict.fromkeys(chars) if c not in "\x0b\x0c\r"]
    vocab = {t: i for i, t in enumerate(SPECIALS + chars)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def tiny_llama(vocab: int, hidden: int = 32, layers: int = 2, seed: int = 0) -> LlamaForCausalLM:
    """A random Llama with peaked next-token distributions (initializer range 0.5), so that outputs depend on the
    context and a wrong token shows up as a different continuation."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=0.5,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForCausalLM(config).eval()


def save_tiny_model(path: Path) -> Path:
    """A model directory: a :func:`tiny_llama` with its :func:`char_tokenizer`."""
    tokenizer = char_tokenizer()
    tiny_llama(len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def build_bench_files(root: Path) -> dict[str, Path]:
    """A base model with its tokenizer, a PTP and an independent adapter, a draft model with the same tokenizer and a
    separate drafter's adapter on it, one with another tokenizer, and prompt files in both formats."""
    tokenizer = char_tokenizer()
    vocab = len(tokenizer)
    paths = {name: root / name for name in ("model", "adapter", "independent", "draft", "alien_draft")}
    tiny_llama(vocab).save_pretrained(paths["model"])
    tokenizer.save_pretrained(paths["model"])
    PTPModel(tiny_llama(vocab), window_length=4, lora_rank=4).save_pretrained(paths["adapter"])
    PTPModel(tiny_llama(vocab), window_length=4, lora_rank=4, mode="independent").save_pretrained(paths["independent"])
    tiny_llama(vocab, hidden=16, layers=1, seed=1).save_pretrained(paths["draft"])
    tokenizer.save_pretrained(paths["draft"])
    # A separate drafter on the draft model (its own weights, random adapter and u embedding).
    drafter = PTPModel(tiny_llama(vocab, hidden=16, layers=1, seed=1), window_length=4, lora_rank=4)
    with torch.no_grad():
        for name, parameter in drafter.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(3))
    drafter.save_pretrained(root / "drafter")
    paths["drafter"] = root / "drafter"
    alien = char_tokenizer(string.ascii_letters + string.digits + " \n")
    tiny_llama(len(alien), hidden=16, layers=1, seed=2).save_pretrained(paths["alien_draft"])
    alien.save_pretrained(paths["alien_draft"])
    paths["spec"] = write_jsonl(root / "question.jsonl", SPEC_BENCH)
    paths["plain"] = write_jsonl(root / "plain.jsonl", PLAIN)
    return paths
