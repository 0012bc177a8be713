"""Pregeneration: the completions are the project's exact samples, shards are atomic and a killed run resumes."""

from __future__ import annotations

import json

import pytest
import torch

import ptp
import ptp.data.pregeneration as pregeneration
from bench_support import save_tiny_model, write_jsonl
from conftest import EOS, tiny_base
from ptp.data import PregenerateConfig, load_dataset, pregenerate, write_text_dataset
from ptp.data.dataset import METADATA, Document
from ptp.decode import flow
from ptp.decode.inputs import left_pad
from train_support import SAMPLING, make_data, random_prompts, reference


def _documents(path):
    return [(d.tokens.tolist(), d.prompt_length, d.prompt_index) for d in load_dataset(path).documents]


def test_completions_are_sample_autoregressive_with_the_shards_auxiliaries(tmp_path):
    model = tiny_base("llama")
    prompts = random_prompts(4)
    config = PregenerateConfig(n_per_prompt=2, max_new_tokens=10, sampling=SAMPLING, prompts_per_shard=3, seed=5)
    data = load_dataset(pregenerate(model, prompts, tmp_path / "d", config, progress=False))
    assert data.sampling == SAMPLING and data.kind == "pregenerated"
    assert len(data.documents) == 8 and [d.prompt_index for d in data.documents] == [0, 0, 1, 1, 2, 2, 3, 3]
    # Shard 1 holds prompt 3; its u's come from the generator of (seed 5, shard 1), row by row.
    u = torch.rand((2, 10), generator=torch.Generator().manual_seed(5 * 1_000_003 + 1))
    ids, mask = left_pad([prompts[3], prompts[3]])
    expected = reference(model, ids, mask, auxiliaries=u, eos_token_id=EOS)
    for document, row in zip(data.documents[6:], expected.rows(), strict=True):
        assert document.tokens.tolist() == prompts[3] + row
        assert document.prompt_length == len(prompts[3])


@pytest.mark.slow
def test_a_compiled_sampling_step_writes_the_same_data_and_takes_over_an_eager_run(tmp_path):
    model = tiny_base("llama", seed=3)
    prompts = random_prompts(4, seed=3)
    options = dict(n_per_prompt=2, max_new_tokens=10, sampling=SAMPLING, prompts_per_shard=2, eos_token_id=[])
    eager = pregenerate(model, prompts, tmp_path / "eager", PregenerateConfig(**options), progress=False)
    compiled = PregenerateConfig(**options, compile=True)
    both = [_documents(eager), _documents(pregenerate(model, prompts, tmp_path / "c", compiled, progress=False))]
    assert both[0] == both[1]
    # Compiling is not part of the run's identity: a compiled rerun takes over the eager run's directory.
    assert _documents(pregenerate(model, prompts, tmp_path / "eager", compiled, progress=False)) == both[0]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("sampling", [SAMPLING, ptp.SamplingConfig.greedy()], ids=["T-k-p", "greedy"])
def test_the_shards_are_those_that_sample_autoregressive_writes(tmp_path, monkeypatch, arch, sampling):
    model = tiny_base(arch, seed=2)
    options = dict(prompts=7, n_per_prompt=5, max_new_tokens=20, batch_size=6, prompts_per_shard=3, sampling=sampling)
    free = load_dataset(make_data(tmp_path / "free", model, **options)).documents
    # A common token as EOS: completions of many lengths, some full length.
    eos = torch.cat([d.tokens[d.prompt_length + 1 :] for d in free]).mode().values.item()
    calls = []
    monkeypatch.setattr(flow, "generate", lambda *args, **kw: calls.append(1) or ptp.generate(*args, **kw))
    fast = make_data(tmp_path / "fast", model, eos_token_id=eos, **options)
    assert len(calls) == 3  # one call a shard: its 15 rows pass through a batch of 6 as rows finish

    def slow(model, prompts, chunk, config, eos, seed):
        """Each row alone, with its row of the shard's u's."""
        rows = [(i, r) for i in chunk for r in range(config.n_per_prompt)]
        generator = torch.Generator().manual_seed(seed[0] * 1_000_003 + seed[1])
        u = torch.rand((len(rows), config.max_new_tokens), generator=generator)
        documents = []
        for k, (i, _) in enumerate(rows):
            ids, mask = left_pad([prompts[i]])
            row = reference(model, ids, mask, auxiliaries=u[k : k + 1], sampling=config.sampling, eos_token_id=eos)
            documents.append(Document(torch.tensor(prompts[i] + row.rows()[0]), len(prompts[i]), i))
        return documents

    monkeypatch.setattr(pregeneration, "_generate_shard", slow)
    slow_path = make_data(tmp_path / "slow", model, eos_token_id=eos, **options)
    lengths = {len(d.tokens) - d.prompt_length for d in load_dataset(fast).documents}
    assert len(lengths) > 2 and 20 in lengths
    assert _documents(fast) == _documents(slow_path)
    untimed = lambda path: [{k: v for k, v in e.items() if k != "seconds"}  # noqa: E731
                            for e in json.loads((path / METADATA).read_text())["shards"]]  # fmt: skip
    assert untimed(fast) == untimed(slow_path)  # the same bytes (sha256) in every shard


def test_metadata_records_sampling_model_and_generation(tmp_path):
    path = make_data(tmp_path / "d", prompts=3)
    metadata = json.loads((path / METADATA).read_text())
    assert metadata["complete"] and metadata["sampling"] == SAMPLING.to_dict()
    assert metadata["model"]["model_type"] == "llama" and metadata["model"]["fingerprint"]["probe"]
    assert metadata["generation"]["n_per_prompt"] == 3 and metadata["generation"]["num_prompts"] == 3
    assert [s["file"] for s in metadata["shards"]] == ["shard-00000.safetensors", "shard-00001.safetensors"]


def test_a_killed_run_resumes_to_the_same_data_losing_at_most_one_shard(tmp_path, monkeypatch):
    model = tiny_base("llama")
    whole = make_data(tmp_path / "whole", model)
    written = []
    original = pregeneration.write_shard

    def dies_on_the_third_shard(directory, index, docs):
        if len(written) == 2:
            raise KeyboardInterrupt  # killed while generating the third shard
        written.append(index)
        return original(directory, index, docs)

    monkeypatch.setattr(pregeneration, "write_shard", dies_on_the_third_shard)
    with pytest.raises(KeyboardInterrupt):
        make_data(tmp_path / "killed", model)
    metadata = json.loads((tmp_path / "killed" / METADATA).read_text())
    assert not metadata["complete"] and len(metadata["shards"]) == 2
    with pytest.raises(ValueError, match="stopped after 4 of 6 prompts"):
        load_dataset(tmp_path / "killed")

    monkeypatch.setattr(pregeneration, "write_shard", original)
    calls = []
    generate = pregeneration._generate_shard
    monkeypatch.setattr(pregeneration, "_generate_shard", lambda *a, **k: calls.append(1) or generate(*a, **k))
    make_data(tmp_path / "killed", model)
    assert len(calls) == 1  # only the missing shard was generated again
    assert _documents(tmp_path / "killed") == _documents(whole)


def test_a_corrupt_shard_is_refused_and_regenerated_by_a_rerun(tmp_path):
    model = tiny_base("llama")
    path = make_data(tmp_path / "d", model)
    before = _documents(path)
    shard = path / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="shard-00001.safetensors is corrupt"):
        load_dataset(path)
    metadata = json.loads((path / METADATA).read_text())
    metadata["complete"] = False  # a rerun of a finished directory checks it too; mark it unfinished to resume
    (path / METADATA).write_text(json.dumps(metadata))
    make_data(path, model)
    assert _documents(path) == before


def test_another_run_in_the_same_directory_is_refused(tmp_path):
    model = tiny_base("llama")
    make_data(tmp_path / "d", model)
    with pytest.raises(ValueError, match="differs in: generation"):
        make_data(tmp_path / "d", model, max_new_tokens=7)
    with pytest.raises(ValueError, match="differs in: model"):
        make_data(tmp_path / "d", tiny_base("llama", seed=1))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        make_data(tmp_path / "other", model)


def test_prompts_longer_than_the_context_are_refused_or_skipped(tmp_path):
    model = tiny_base("llama", max_positions=32)
    prompts = [[5, 6, 7], list(range(3, 30)), [8, 9]]
    config = PregenerateConfig(n_per_prompt=1, max_new_tokens=8, sampling=SAMPLING)
    with pytest.raises(ValueError, match=r"1 prompt\(s\) do not fit the model's context of 32 tokens"):
        pregenerate(model, prompts, tmp_path / "a", config, progress=False)
    config.skip_long_prompts = True
    data = load_dataset(pregenerate(model, prompts, tmp_path / "b", config, progress=False))
    assert [d.prompt_index for d in data.documents] == [0, 2]
    assert data.metadata["generation"]["skipped_prompts"] == 1


def test_completions_stop_after_eos(tmp_path):
    model = tiny_base("llama")
    # An EOS logit far above the rest: every completion is the single token EOS.
    model.lm_head.register_forward_hook(lambda module, inputs, out: out.index_fill(-1, torch.tensor([EOS]), 100.0))
    path = make_data(tmp_path / "d", model, eos_token_id=EOS)
    assert all(d.tokens[d.prompt_length :].tolist() == [EOS] for d in load_dataset(path).documents)


def test_bad_outputs_and_inputs(tmp_path):
    model = tiny_base("llama")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="cannot create the data directory"):
        make_data(tmp_path / "file" / "sub", model)
    with pytest.raises(ValueError, match="no prompts"):
        pregenerate(model, [], tmp_path / "e", PregenerateConfig(), progress=False)
    with pytest.raises(ValueError, match="n_per_prompt must be"):
        PregenerateConfig(n_per_prompt=0)


def test_missing_or_empty_data_directories_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a ptp data directory"):
        load_dataset(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / METADATA).write_text("{nope")
    with pytest.raises(ValueError, match="corrupt"):
        load_dataset(tmp_path / "bad")
    (tmp_path / "bad" / METADATA).write_text(
        json.dumps({"format_version": 1, "kind": "text", "shards": [], "complete": True})
    )
    with pytest.raises(ValueError, match="holds no documents"):
        load_dataset(tmp_path / "bad")


def test_raw_text_documents(tmp_path):
    path = write_text_dataset([[1, 5, 6], [7], [1, 8, 9, 10]], tmp_path / "raw", documents_per_shard=1)
    data = load_dataset(path)
    assert data.kind == "text" and data.sampling is None
    assert [d.tokens.tolist() for d in data.documents] == [[1, 5, 6], [1, 8, 9, 10]]  # one-token texts dropped
    assert all(d.prompt_length == 1 for d in data.documents)


def test_each_shard_records_its_new_tokens_and_sampling_time(tmp_path):
    out = make_data(tmp_path / "data", tiny_base("llama"))
    shards = json.loads((out / METADATA).read_text())["shards"]
    documents = load_dataset(out).documents
    assert sum(e["new_tokens"] for e in shards) == sum(len(d.tokens) - d.prompt_length for d in documents)
    speed = pregeneration.sampling_speed(out)
    assert speed["new_tokens"] == sum(e["new_tokens"] for e in shards) and speed["new_tokens_per_s"] > 0


def test_without_a_model_the_default_teacher_samples_and_a_missing_model_is_named(tmp_path, monkeypatch):
    import ptp.default_model as default_model

    model = save_tiny_model(tmp_path / "model")
    monkeypatch.setattr(default_model, "teacher_dir", lambda: model)
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "abc"}, {"prompt": "de"}])
    config = PregenerateConfig(n_per_prompt=2, max_new_tokens=4, seed=1)

    def run(model, out):
        return pregeneration.pregenerate_from_paths(model, prompts, tmp_path / out, config, progress=False)

    assert _documents(run(None, "default")) == _documents(run(str(model), "named"))
    with pytest.raises(FileNotFoundError, match="model .*nowhere does not exist"):
        run(str(tmp_path / "nowhere"), "missing")
    assert not (tmp_path / "missing").exists()
