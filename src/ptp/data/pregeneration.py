"""Pregeneration: teacher completions sampled with the configuration S that inference will use (METHOD.md 4.1).

Prompts are split into shards of ``prompts_per_shard``; each shard's completions come from a generator seeded by
``(seed, shard)``, so a shard's content does not depend on which shards were generated before it. A shard is written
atomically and then recorded in ``metadata.json``; rerunning the same command after a kill verifies the recorded
shards, regenerates any that are missing or corrupt, and continues with the next one: at most one shard of work is
lost, and the result is the same as an uninterrupted run. Sampling goes through the decoding engine in plain mode
(:func:`ptp.decode.engine.generate` with ``use_drafter=False``: a fixed-size cache, on a GPU a captured step, and
the shard's next rows taking the places of rows that finish), whose tokens are those of
:func:`ptp.sample_autoregressive`: ``Pick(u, S(logits))`` of the project's one sampling module.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ptp.data.dataset import (
    FORMAT_VERSION,
    METADATA,
    Document,
    describe_model,
    describe_tokenizer,
    fingerprints_match,
    read_metadata,
    read_shard,
    write_metadata,
    write_shard,
)
from ptp.decode.flow import decode_rows
from ptp.decode.inputs import context_length, stop_tokens
from ptp.loading import check_exists
from ptp.runtime import resolve_device, resolve_dtype
from ptp.sampling import DEFAULT_SAMPLING, SamplingConfig

#: Settings that do not change which tokens are sampled (or that the metadata records elsewhere), so a run may resume
#: with others.
NOT_RECORDED = ("sampling", "batch_size", "eos_token_id", "compile")


@dataclass
class PregenerateConfig:
    """How completions are sampled and stored."""

    n_per_prompt: int = 32
    """Completions sampled per prompt (the paper: 32)."""
    max_new_tokens: int = 512
    """Length limit of each completion; a completion also ends at EOS (included)."""
    sampling: SamplingConfig = field(default_factory=lambda: DEFAULT_SAMPLING)
    """S: the sampling configuration inference will use; recorded in the metadata and used for the training bins."""
    batch_size: int = 64
    """Sequences decoded together; as they finish, the shard's next ones take their places."""
    prompts_per_shard: int = 64
    """Prompts per shard: the unit of work a killed run may lose."""
    seed: int = 0
    """Seed of the auxiliaries; shard s draws from a generator seeded by (seed, s)."""
    skip_long_prompts: bool = False
    """Skip prompts with prompt + max_new_tokens beyond the model's context (default: refuse them)."""
    eos_token_id: int | list[int] | None = None
    """Where completions stop (default: the EOS ids of the model's generation config and of the tokenizer)."""
    compile: bool = False
    """Compile the sampling step with ``torch.compile`` (:func:`ptp.decode.engine.generate`): once per batch shape
    (a batch moves to half its size as its rows finish), paid once per process; the tokens are the same."""

    def __post_init__(self) -> None:
        if isinstance(self.sampling, dict):
            self.sampling = SamplingConfig.from_dict(self.sampling)
        for name in ("n_per_prompt", "max_new_tokens", "batch_size", "prompts_per_shard"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def pregenerate(
    model,
    prompts: list[list[int]],
    out: str | Path,
    config: PregenerateConfig | None = None,
    *,
    tokenizer=None,
    progress: bool = True,
) -> Path:
    """Sample ``n_per_prompt`` completions of every prompt with the teacher and write them to ``out``.

    Args:
        model: the teacher, a Hugging Face causal LM (or a :class:`ptp.PTPModel`, sampled with its adapter off).
        prompts: token ids per prompt (:func:`ptp.data.encode_prompts`).
        out: the data directory; created, or resumed if it holds an unfinished run with the same arguments.
        tokenizer: recorded in the metadata (so that training can check it); its EOS id stops completions too.
    Returns:
        ``out`` as a Path.
    """
    config = config or PregenerateConfig()
    out = Path(out)
    if not prompts:
        raise ValueError("no prompts to pregenerate from")
    limit = context_length(model)
    kept = list(range(len(prompts)))
    if limit is not None:
        long = [i for i, p in enumerate(prompts) if len(p) + config.max_new_tokens > limit]
        if long and not config.skip_long_prompts:
            first = long[0]
            raise ValueError(
                f"{len(long)} prompt(s) do not fit the model's context of {limit} tokens with max_new_tokens="
                f"{config.max_new_tokens} (prompt {first} has {len(prompts[first])} tokens); shorten them, lower "
                "max_new_tokens, or skip them (--skip-long-prompts)"
            )
        skipped = set(long)
        kept = [i for i in kept if i not in skipped]
        if not kept:
            raise ValueError(f"every prompt is longer than the model's context of {limit} tokens allows")
    eos = config.eos_token_id
    if eos is None:
        eos = stop_tokens(model, tokenizer)[0] or None

    identity = {
        "format_version": FORMAT_VERSION,
        "kind": "pregenerated",
        "sampling": config.sampling.to_dict(),
        "model": describe_model(model),
        "tokenizer": describe_tokenizer(tokenizer),
        "generation": {
            **{k: v for k, v in asdict(config).items() if k not in NOT_RECORDED},
            "eos_token_id": eos,
            "num_prompts": len(kept),
            "skipped_prompts": len(prompts) - len(kept),
            "prompts_sha256": hashlib.sha256(json.dumps([prompts[i] for i in kept]).encode()).hexdigest(),
        },
    }
    shards = _prepare_directory(out, identity)
    per_shard = config.prompts_per_shard
    num_shards = -(-len(kept) // per_shard)
    done = {e["index"] for e in shards}
    bar = _progress(num_shards, len(done), progress)
    for index in range(num_shards):
        if index in done:
            continue
        chunk = kept[index * per_shard : (index + 1) * per_shard]
        start = time.perf_counter()
        documents = _generate_shard(model, prompts, chunk, config, eos, seed=(config.seed, index))
        seconds = time.perf_counter() - start
        new_tokens = sum(len(d.tokens) - d.prompt_length for d in documents)
        entry = write_shard(out, index, documents)
        entry.update(new_tokens=new_tokens, seconds=round(seconds, 3))  # the sampling speed, for the record
        shards.append({"index": index, "prompts": [index * per_shard, index * per_shard + len(chunk)], **entry})
        bar.set_postfix_str(f"{new_tokens / max(seconds, 1e-9):,.0f} new tokens/s")
        shards.sort(key=lambda e: e["index"])
        write_metadata(out, {**identity, "shards": shards, "complete": False})
        bar.update(1)
    bar.close()
    write_metadata(out, {**identity, "shards": shards, "complete": True})
    return out


def pregenerate_from_paths(
    model: str | None,
    prompts: str | Path,
    out: str | Path,
    config: PregenerateConfig | None = None,
    *,
    tokenizer: str | None = None,
    split: str = "line",
    raw: bool = False,
    device: str | None = None,
    dtype: torch.dtype | str = torch.float32,
    progress: bool = True,
) -> Path:
    """What ``ptp pregenerate`` does: load the teacher (``model``; None: the default model's teacher) and the
    tokenizer, read and encode the prompts, sample.

    With ``raw``, the prompt files are stored as raw-text documents instead (:func:`write_text_dataset`), with
    the tokenizer's EOS appended; no model is run.
    """
    from transformers import AutoModelForCausalLM

    from ptp.data.prompts import encode_prompts, load_tokenizer, read_prompts

    device = resolve_device(device)  # "auto" or None: CUDA when available
    records = read_prompts(prompts, split=split)
    if model is None:
        from ptp.default_model import teacher_dir

        model = str(teacher_dir())
    check_exists("model", model)
    needs_tokenizer = any(p.input_ids is None for p in records)
    loaded = load_tokenizer(tokenizer or model, required=needs_tokenizer or tokenizer is not None)
    if raw:
        eos = [] if loaded is None or loaded.eos_token_id is None else [loaded.eos_token_id]
        return write_text_dataset([ids + eos for ids in encode_prompts(records, loaded)], out, tokenizer=loaded)
    try:
        teacher = AutoModelForCausalLM.from_pretrained(model, dtype=resolve_dtype(dtype, device))
    except OSError as error:
        raise ValueError(f"cannot load the model {model!r}: {error}") from error
    teacher = teacher.to(device).eval()
    encoded = encode_prompts(records, loaded, vocab_size=teacher.get_output_embeddings().weight.shape[0])
    return pregenerate(teacher, encoded, out, config, tokenizer=loaded, progress=progress)


def sampling_speed(out: str | Path) -> dict:
    """New tokens sampled and their rate over the shards of a data directory that recorded them (each shard records
    its new tokens and the seconds its sampling took)."""
    shards = [e for e in read_metadata(Path(out))["shards"] if "seconds" in e]
    new_tokens, seconds = sum(e["new_tokens"] for e in shards), sum(e["seconds"] for e in shards)
    return {"new_tokens": new_tokens, "seconds": round(seconds, 1),
            "new_tokens_per_s": round(new_tokens / seconds, 1) if seconds else None}  # fmt: skip


def write_text_dataset(
    documents: list[list[int]], out: str | Path, *, tokenizer=None, documents_per_shard: int = 1024
) -> Path:
    """Store raw-text documents (token ids) as a data directory of kind ``text``.

    Raw text has no sampling configuration: training must be given one, and targets outside its kept set are
    handled by the trainer's ``out_of_set`` rule. The first token of each document is its context ("prompt").
    """
    out = Path(out)
    documents = [d for d in documents if len(d) >= 2]
    if not documents:
        raise ValueError("no document with at least two tokens")
    identity = {
        "format_version": FORMAT_VERSION,
        "kind": "text",
        "sampling": None,
        "model": None,
        "tokenizer": describe_tokenizer(tokenizer),
        "generation": {"num_documents": len(documents)},
    }
    shards = _prepare_directory(out, identity)
    done = {e["index"] for e in shards}
    for index, start in enumerate(range(0, len(documents), documents_per_shard)):
        if index in done:
            continue
        chunk = documents[start : start + documents_per_shard]
        docs = [Document(torch.tensor(d, dtype=torch.int64), 1, start + i) for i, d in enumerate(chunk)]
        shards.append({"index": index, **write_shard(out, index, docs)})
        write_metadata(out, {**identity, "shards": shards, "complete": False})
    write_metadata(out, {**identity, "shards": shards, "complete": True})
    return out


def _prepare_directory(out: Path, identity: dict) -> list[dict]:
    """Create ``out`` or reopen an unfinished run with the same identity; returns the intact recorded shards."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cannot create the data directory {out}: {error}") from error
    if not os.access(out, os.W_OK):
        raise ValueError(f"the data directory {out} is not writable")
    if not (out / METADATA).is_file():
        if any(not p.name.startswith(".") for p in out.iterdir()):
            raise ValueError(f"{out} is not empty and holds no {METADATA}; choose a new output directory")
        return []
    metadata = read_metadata(out)
    differs = [k for k in identity if k != "model" and metadata.get(k) != identity[k]]
    recorded = (metadata.get("model") or {}).get("fingerprint")
    if identity["model"] and not fingerprints_match(recorded, identity["model"]["fingerprint"]):
        differs.append("model")
    if differs:
        raise ValueError(
            f"{out} holds data from another run (it differs in: {', '.join(differs)}); resume with the same "
            "arguments or choose a new output directory"
        )
    intact = []
    for entry in metadata["shards"]:
        try:
            read_shard(out, entry)
            intact.append(entry)
        except ValueError:
            continue  # regenerated below: shards are deterministic given (seed, index)
    for stale in out.glob(".shard-*"):
        stale.unlink(missing_ok=True)
    return intact


def _generate_shard(model, prompts, chunk, config: PregenerateConfig, eos, seed) -> list[Document]:
    """The completions of a shard's rows, which flow through one batch of ``batch_size`` (:func:`ptp.decode.flow.
    decode_rows`); a row's tokens depend on its prompt and its u's alone, so the shard does not depend on that."""
    rows = [(i, r) for i in chunk for r in range(config.n_per_prompt)]
    generator = torch.Generator().manual_seed(seed[0] * 1_000_003 + seed[1])
    u = torch.rand((len(rows), config.max_new_tokens), generator=generator)
    # Rows start in order of prompt length, so that the rows decoding together have similar lengths.
    order = sorted(range(len(rows)), key=lambda r: len(prompts[rows[r][0]]))
    completions: dict[int, list[int]] = {}

    def finished(k: int, tokens: list[int]) -> None:
        completions[order[k]] = tokens

    decode_rows(model, ((prompts[rows[r][0]], u[r]) for r in order), config.batch_size, finished,
                max_new_tokens=config.max_new_tokens, sampling=config.sampling, eos_token_id=eos,
                compile=config.compile)  # fmt: skip
    return [
        Document(torch.tensor(prompts[i] + completions[r], dtype=torch.int64), len(prompts[i]), i)
        for r, (i, _) in enumerate(rows)
    ]


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="pregenerate", unit="shard", disable=not enabled)
