"""The distillation loop: a loadable adapter with its histogram, exact resumption, and clear errors for bad input."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import ptp
import ptp.train.checkpoint as checkpoint
import ptp.train.loop as loop
from conftest import assert_same_tokens, tiny_base
from ptp.data import write_text_dataset
from ptp.data.dataset import METADATA
from ptp.train import distill
from ptp.train.checkpoint import list_checkpoints
from train_support import SAMPLING, make_data, quick_config, reference


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("data") / "d", prompts=8)


def _weights(adapter):
    return {
        **load_file(str(adapter / "adapter_model.safetensors")),
        **load_file(str(adapter / "auxiliary_embedding.safetensors")),
    }


def _log(result):
    return [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]


def test_distill_writes_an_adapter_that_loads_with_its_histogram_and_decodes_exactly(data, tmp_path):
    result = distill(quick_config(data, tmp_path / "adapter", eval_interval=2), base_model=tiny_base("llama"))
    config = json.loads((tmp_path / "adapter" / "ptp_config.json").read_text())
    assert config["sampling"] == SAMPLING.to_dict() and config["window_length"] == 4
    assert len(config["acceptance_histogram"]) == 5 and sum(config["acceptance_histogram"]) == pytest.approx(1.0)
    assert config["acceptance_histogram"] == pytest.approx(result.evaluation["histogram"])
    log = _log(result)
    assert [r["step"] for r in log if r["split"] == "train"] == [1, 2, 3, 4]
    assert [r["step"] for r in log if r["split"] == "eval"] == [2, 4]
    assert all(r["loss"] > 0 and r["tokens_per_s"] > 0 for r in log if r["split"] == "train")
    assert [p.name for p in list_checkpoints(result.run_dir)] == ["step-0000002", "step-0000004"]

    model = ptp.PTPModel.from_pretrained(tiny_base("llama"), tmp_path / "adapter")
    prompt, u = torch.tensor([[5, 6, 7]]), torch.rand(1, 12, generator=torch.Generator().manual_seed(0))
    s = model.config.sampling
    expected = reference(tiny_base("llama"), prompt, auxiliaries=u, sampling=s, eos_token_id=[])
    assert_same_tokens(model.generate(prompt, max_new_tokens=12, auxiliaries=u, sampling=s, eos_token_id=[]), expected)


def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(data, tmp_path, monkeypatch):
    options = dict(max_steps=6, checkpoint_interval=2, eval_interval=3, lora_dropout=0.1, gradient_accumulation=2)
    whole = distill(quick_config(data, tmp_path / "whole", **options), base_model=tiny_base("llama"))

    save = checkpoint.save_checkpoint

    def killed_after_step_four(run_dir, step, *args, **kwargs):
        path = save(run_dir, step, *args, **kwargs)
        if step == 4:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(loop, "save_checkpoint", killed_after_step_four)
    with pytest.raises(KeyboardInterrupt):
        distill(quick_config(data, tmp_path / "killed", **options), base_model=tiny_base("llama"))
    monkeypatch.setattr(loop, "save_checkpoint", save)
    resumed = distill(quick_config(data, tmp_path / "killed", resume=True, **options), base_model=tiny_base("llama"))

    expected, got = _weights(whole.adapter), _weights(resumed.adapter)
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    strip = lambda log: [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in log]  # noqa: E731
    assert strip(_log(resumed)) == strip(_log(whole))
    assert resumed.evaluation == whole.evaluation


def test_a_killed_checkpoint_save_leaves_no_partial_checkpoint(data, tmp_path, monkeypatch):
    result = distill(quick_config(data, tmp_path / "a", max_steps=2), base_model=tiny_base("llama"))
    before = list_checkpoints(result.run_dir)

    def dies(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.torch, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_checkpoint(result.run_dir, 3, result.model, {"config": {}}, keep=5)
    assert list_checkpoints(result.run_dir) == before
    assert not [p for p in (result.run_dir / "checkpoints").iterdir() if p.name.startswith(".")]
    assert checkpoint.load_checkpoint(before[-1])["step"] == 2


def test_c_ptp_trains_with_either_divergence(data, tmp_path):
    for loss in ("forward_kl", "reverse_kl"):
        config = quick_config(data, tmp_path / loss, mode="categorical", loss=loss, max_steps=2, checkpoint_interval=0)
        result = distill(config, base_model=tiny_base("llama"))
        assert all(r["loss"] >= 0 for r in _log(result))
        assert ptp.PTPModel.from_pretrained(tiny_base("llama"), result.adapter).config.mode == "categorical"


def test_raw_text_trains_under_a_given_s_and_counts_tokens_outside_its_kept_set(tmp_path):
    texts = torch.randint(3, 96, (12, 20), generator=torch.Generator().manual_seed(0)).tolist()
    raw = write_text_dataset(texts, tmp_path / "raw")
    with pytest.raises(ValueError, match="raw text without a sampling configuration"):
        distill(quick_config(raw, tmp_path / "a"), base_model=tiny_base("llama"))
    narrow = {"temperature": 1.0, "top_k": 3, "top_p": None, "do_sample": True}
    result = distill(quick_config(raw, tmp_path / "b", sampling=narrow, max_steps=2), base_model=tiny_base("llama"))
    assert sum(r["out_of_set"] for r in _log(result) if r["split"] == "train") > 0


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "does not exist"),
        ("another model", "generated by another model"),
        ("another sampling", "was sampled with"),
        ("corrupt shard", "is corrupt"),
        ("unwritable output", "cannot write the adapter"),
        ("resume without a checkpoint", "nothing to resume"),
        ("existing run", "already holds checkpoints"),
        ("row longer than the context", "exceeds the base model's context"),
        ("no base model", "no base model"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(data, tmp_path, case, message):
    base, options, target, out = tiny_base("llama"), {}, data, tmp_path / "adapter"
    if case == "missing":
        target = tmp_path / "nothing"
    elif case == "another model":
        base = tiny_base("llama", seed=7)
    elif case == "another sampling":
        options["sampling"] = {"temperature": 1.0}
    elif case == "corrupt shard":
        target = make_data(tmp_path / "copy", prompts=4)
        (target / json.loads((target / METADATA).read_text())["shards"][0]["file"]).write_bytes(b"garbage")
    elif case == "unwritable output":
        (tmp_path / "file").write_text("")
        out = tmp_path / "file" / "adapter"
    elif case == "resume without a checkpoint":
        options["resume"] = True
    elif case == "existing run":
        distill(quick_config(data, tmp_path / "adapter", max_steps=2), base_model=tiny_base("llama"))
    elif case == "row longer than the context":
        options["row_length"] = 1000
    elif case == "no base model":
        base = None
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        distill(quick_config(target, out, **options), base_model=base)
    if case in ("another model", "another sampling"):  # accepted on request, as raw text would be
        options.update(allow_foreign_data=True, max_steps=1, checkpoint_interval=0)
        distill(quick_config(target, tmp_path / "foreign", **options), base_model=tiny_base("llama", seed=7))
