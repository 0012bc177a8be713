"""ptp.model: PTPModel (teacher = frozen base, drafter = gated LoRA + u embedding), save and load."""

from __future__ import annotations

import copy
import gc
import json
import weakref

import pytest
import torch
from transformers import LlamaModel

import ptp
from conftest import (
    ARCHITECTURES,
    VOCAB,
    Operators,
    left_padded,
    randomize_adapter,
    tiny_base,
    wrap,
    zero_adapter,
)
from ptp.model.config import PTPConfig
from ptp.model.lora import Gate, GatedLoRA
from ptp.sampling import SamplingConfig

PTP_FILES = ("adapter_config.json", "adapter_model.safetensors", "auxiliary_embedding.safetensors", "ptp_config.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def _block(model: ptp.PTPModel, slots: int = 4, seed: int = 0):
    """Left-padded teacher tokens followed by a chain of auxiliary slots, with the inputs PTPModel.forward takes."""
    ids, mask = left_padded([6, 4], seed=seed)
    batch, width = ids.shape
    length = width + slots
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    slot_positions = positions[:, -1:] + torch.arange(slots)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    valid = torch.cat([mask.bool(), torch.ones(batch, slots, dtype=torch.bool)], dim=1)
    allowed = (causal.unsqueeze(0) & valid.unsqueeze(1)) | torch.eye(length, dtype=torch.bool)
    u = torch.rand(batch, slots, generator=torch.Generator().manual_seed(seed))
    return dict(
        input_ids=torch.cat([ids, torch.zeros(batch, slots, dtype=torch.long)], dim=1),
        position_ids=torch.cat([positions, slot_positions], dim=1),
        attention_mask=allowed.unsqueeze(1),
        auxiliaries=u,
        slots_from=width,
    ), width


def _reference_logits(model: ptp.PTPModel, reference, inputs: dict) -> torch.Tensor:
    """The base model (the copy taken before wrapping) on exactly the inputs PTPModel feeds it."""
    embeds = reference.get_input_embeddings()(inputs["input_ids"])
    slots = model.auxiliary_embedding(inputs["auxiliaries"]).to(embeds.dtype)
    embeds = torch.cat([embeds[:, : inputs["slots_from"]], slots], dim=1)
    return reference(
        inputs_embeds=embeds,
        position_ids=inputs["position_ids"],
        attention_mask=model.attention_bias(inputs["attention_mask"]),
    ).logits


# --------------------------------------------------------------------------------- teacher exactness
@pytest.mark.parametrize("arch", ARCHITECTURES)
@torch.no_grad()
def test_teacher_positions_are_the_base_models_logits_whatever_the_adapter(arch):
    model, reference = wrap(tiny_base(arch), window_length=4, lora_rank=4)
    inputs, width = _block(model)
    randomize_adapter(model, seed=1)
    random_logits = model(**inputs)
    assert torch.equal(random_logits[:, :width], _reference_logits(model, reference, inputs)[:, :width])

    randomize_adapter(model, seed=2)
    other_logits = model(**inputs)
    assert torch.equal(other_logits[:, :width], random_logits[:, :width])
    assert not torch.allclose(other_logits[:, width:], random_logits[:, width:]), "slots must see the adapter"

    zero_adapter(model)
    zero_logits = model(**inputs)
    assert torch.equal(zero_logits[:, :width], random_logits[:, :width])
    # With a zero adapter the slots, too, are the plain base model applied to embed(u).
    assert torch.equal(zero_logits, _reference_logits(model, reference, inputs))


@pytest.mark.parametrize(("attn_implementation", "used"), [("eager", "eager"), ("sdpa", "ptp_sdpa")])
@torch.no_grad()
def test_teacher_exactness_holds_for_eager_and_sdpa_attention(attn_implementation, used):
    model, reference = wrap(tiny_base("llama", attn_implementation=attn_implementation), window_length=4)
    assert model.base_model.config._attn_implementation == used  # SDPA without copies of grouped keys and values
    inputs, width = _block(model, seed=3)
    randomize_adapter(model, seed=3)
    logits = model(**inputs)
    assert torch.isfinite(logits).all()
    assert torch.equal(logits[:, :width], _reference_logits(model, reference, inputs)[:, :width])


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@torch.no_grad()
def test_the_wrapped_base_model_called_directly_is_still_the_base_model(arch):
    model, reference = wrap(tiny_base(arch), window_length=4)
    randomize_adapter(model)
    ids, mask = left_padded([5, 3], seed=4)
    direct = model.base_model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(direct, reference(input_ids=ids, attention_mask=mask).logits)
    u = torch.rand(2, 6, generator=torch.Generator().manual_seed(4))
    common = dict(auxiliaries=u, max_new_tokens=6, temperature=0.8)
    expected = ptp.sample_autoregressive(reference, ids, mask, **common)
    for teacher in (model, model.base_model):
        assert torch.equal(ptp.sample_autoregressive(teacher, ids, mask, **common).sequences, expected.sequences)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_the_base_is_frozen_and_only_the_drafter_trains(arch):
    base = tiny_base(arch)
    linear_layers = sum(
        1 for m in base.modules() if type(m).__name__ in ("Linear", "Conv1D") and m is not base.get_output_embeddings()
    )
    model = ptp.PTPModel(base, lora_rank=4)
    gated = [m for m in model.modules() if isinstance(m, GatedLoRA)]
    assert len(gated) == linear_layers
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    assert names and all(".lora_A." in n or ".lora_B." in n or n.startswith("auxiliary_embedding.") for n in names)
    assert all(not p.requires_grad for n, p in model.base_model.named_parameters() if ".lora_" not in n)
    assert model.config.base_model["model_type"] == base.config.model_type
    assert model.config.base_model["vocab_size"] == VOCAB


@torch.no_grad()
def test_lora_dropout_in_train_mode_touches_only_the_slots():
    model, reference = wrap(tiny_base("gpt2"), lora_dropout=0.5, lora_rank=8)
    randomize_adapter(model)
    inputs, width = _block(model)
    model.eval()
    dropouts = [m for name, m in model.named_modules() if name.endswith(".lora_dropout")]
    assert len(dropouts) == sum(isinstance(m, GatedLoRA) for m in model.modules())
    for module in dropouts:  # LoRA dropout alone in train mode (PEFT's module name), the base stays in eval mode
        module.train()
    first, second = model(**inputs), model(**inputs)
    assert torch.equal(first[:, :width], second[:, :width])
    assert torch.equal(first[:, :width], _reference_logits(model, reference, inputs)[:, :width])
    assert not torch.equal(first[:, width:], second[:, width:])


def test_slot_inputs_follow_the_mode():
    u_target, u_previous = torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.7, 0.1, 0.2])
    first = torch.tensor([True, False, False])
    expected = {
        "one_hot": [0.1, 0.2, 0.3],
        "categorical": [0.5, 0.1, 0.2],  # C-PTP's slot sees the previous u; the first slot sees none
        "independent": [0.5, 0.5, 0.5],
        "mode_chain": [0.5, 0.5, 0.5],  # no u: it assumes the modes before it and reads u only to pick
    }
    for mode, values in expected.items():
        model = ptp.PTPModel(tiny_base("llama"), mode=mode, lora_rank=2)
        assert model.slot_auxiliaries(u_target, u_previous, first).tolist() == pytest.approx(values)


@pytest.mark.parametrize("kind", ["binary", "float_bits", "thermometer", "cosine", "interpolation", "mlp"])
@torch.no_grad()
def test_every_embedding_kind_runs_in_the_model(kind):
    model, _ = wrap(tiny_base("qwen2"), embedding=kind, embedding_size=8, lora_rank=2)
    for parameter in model.auxiliary_embedding.parameters():  # as trained: a fresh one starts at zero
        parameter.normal_(generator=torch.Generator().manual_seed(8))
    inputs, width = _block(model)
    logits = model(**inputs)
    assert logits.shape == (2, inputs["input_ids"].shape[1], VOCAB) and torch.isfinite(logits).all()
    inputs["auxiliaries"] = torch.rand(inputs["auxiliaries"].shape, generator=torch.Generator().manual_seed(9))
    assert not torch.equal(model(**inputs)[:, width:], logits[:, width:]), "slot outputs must depend on u"


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_u_in_every_layer_reaches_the_slots_of_each_layer_alone_and_trains(arch):
    """u_every_layer: one map of u's features per decoder layer, added to the slots' hidden states before the layer.
    Fresh (zero maps) the drafter computes what the same drafter without them computes; with maps the slots change,
    the teacher positions do not, and every layer's map gets a gradient."""
    plain, _ = wrap(tiny_base(arch, seed=3), embedding="thermometer", embedding_size=8, lora_rank=2)
    model, reference = wrap(tiny_base(arch, seed=3), embedding="thermometer", embedding_size=8, lora_rank=2,
                            u_every_layer=True)  # fmt: skip
    maps = model.auxiliary_embedding.layer_maps
    assert maps.shape == (reference.config.num_hidden_layers, 8, reference.get_input_embeddings().weight.shape[1])
    randomize_adapter(plain, seed=4)
    randomize_adapter(model, seed=4)
    with torch.no_grad():
        plain.auxiliary_embedding.proj.weight.copy_(model.auxiliary_embedding.proj.weight)
        plain.auxiliary_embedding.proj.bias.copy_(model.auxiliary_embedding.proj.bias)
        maps.zero_()
    inputs, width = _block(model)
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs), plain(**inputs), rtol=0, atol=0)
        maps.normal_(generator=torch.Generator().manual_seed(5))
        logits = model(**inputs)
    torch.testing.assert_close(logits[:, :width], _reference_logits(model, reference, inputs)[:, :width], rtol=1e-5,
                               atol=1e-5)  # fmt: skip
    assert not torch.allclose(logits[:, width:], plain(**inputs)[:, width:]), "the maps must reach the slots"
    model(**inputs)[:, width:].square().mean().backward()
    assert all(maps.grad[layer].abs().sum() > 0 for layer in range(maps.shape[0])), "every layer's map trains"


def test_a_drafter_with_u_in_every_layer_is_freed_as_soon_as_it_is_dropped():
    """The base's layer hooks must not hold the drafter in a reference cycle: the engine keeps captured steps per model
    only while the model lives, and a cycle would keep their caches until a garbage collection."""
    model, _ = wrap(tiny_base("llama"), embedding="thermometer", embedding_size=8, u_every_layer=True)
    dropped = weakref.ref(model)
    enabled = gc.isenabled()
    gc.disable()
    try:
        del model
        assert dropped() is None
    finally:
        if enabled:
            gc.enable()


def test_under_autocast_u_in_every_layer_is_cast_once_per_call_and_added_to_a_slot_pass_without_concatenation():
    """Training's slot pass (slots alone) under autocast: u's features and the layer maps are cast to 16 bits once for
    all layers (autocast would cast the features and a map, and the map's gradient back, in every layer), the maps'
    gradients are stacked once (indexing one map per layer pads each layer's gradient to all maps and sums them), and
    each layer adds its map to the hidden states without concatenating them. The logits and every gradient are those
    of the maps taken and cast layer by layer, bit for bit."""
    model, _ = wrap(tiny_base("llama", dtype=torch.bfloat16, layers=3), embedding="binary", embedding_size=5,
                    lora_rank=2, u_every_layer=True)  # fmt: skip
    randomize_adapter(model, seed=1)
    maps = model.auxiliary_embedding.layer_maps
    batch, slots = 2, 6
    inputs = dict(
        input_ids=torch.zeros(batch, slots, dtype=torch.long),
        position_ids=torch.arange(slots).expand(batch, -1),
        attention_mask=torch.ones(slots, slots, dtype=torch.bool).tril().expand(batch, 1, -1, -1),
        auxiliaries=torch.rand(batch, slots, generator=torch.Generator().manual_seed(2)),
        slots_from=0,
    )

    def run():
        with Operators() as ops, torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(**inputs)
            grads = torch.autograd.grad(logits.float().square().mean(), model.trainable_parameters())
        return logits, grads, ops.ran

    logits, grads, ran = run()
    features, one_map, hidden = (batch, slots, 5), tuple(maps.shape[1:]), (batch, slots, maps.shape[2])
    casts = [shapes[0] for name, shapes, _ in ran if name == "_to_copy"]
    assert casts.count(features) == 2, "the binary code's float64 to float32, then to 16 bits once"
    assert casts.count(tuple(maps.shape)) == 2 and one_map not in casts, "the maps and their gradient once"
    assert not any(name == "cat" and made == hidden for name, _, made in ran), "no concatenation of hidden states"
    assert not any(name == "select_backward" for name, _, _ in ran)

    def layer_by_layer(u):
        return model.auxiliary_embedding.features(u), tuple(maps[i] for i in range(maps.shape[0]))

    model._features_and_maps = layer_by_layer
    try:
        want_logits, want_grads, ran = run()
    finally:
        del model._features_and_maps
    casts = [shapes[0] for name, shapes, _ in ran if name == "_to_copy"]
    assert casts.count(features) == 2 + maps.shape[0] and casts.count(one_map) == 2 * maps.shape[0]
    assert torch.equal(logits, want_logits)
    assert all(torch.equal(g, w) for g, w in zip(grads, want_grads, strict=True))


def test_u_in_every_layer_needs_a_feature_code_of_u():
    with pytest.raises(ValueError, match="u_every_layer needs a feature code of u"):
        PTPConfig(embedding="interpolation", u_every_layer=True)


# --------------------------------------------------------------------------------------- save and load
def _save(tmp_path, arch="llama", **options):
    model, _ = wrap(tiny_base(arch), lora_rank=4, **options)
    randomize_adapter(model, seed=5)
    directory = tmp_path / "adapter"
    model.save_pretrained(directory)
    return model, directory


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_save_and_load_round_trip_gives_identical_generation(tmp_path, arch):
    options = dict(
        mode="categorical",
        embedding="cosine",
        embedding_size=6,
        window_length=5,
        sampling=SamplingConfig(temperature=0.9, top_k=40),
        acceptance_histogram=[0.3, 0.3, 0.2, 0.1, 0.05, 0.05],
        first_slot_token=True,
        u_every_layer=True,
    )
    model, directory = _save(tmp_path, arch, **options)
    files = sorted(p.name for p in directory.iterdir())
    assert set(PTP_FILES) <= set(files)
    assert not [f for f in files if f.endswith(PICKLE_SUFFIXES)], f"pickles in the adapter: {files}"
    assert not [p.name for p in tmp_path.iterdir() if p.name != "adapter"], "the save left staging files"
    saved = json.loads((directory / "ptp_config.json").read_text())
    assert saved["mode"] == "categorical" and saved["embedding"] == "cosine" and saved["window_length"] == 5
    assert saved["sampling"] == {
        "do_sample": True,
        "temperature": 0.9,
        "top_k": 40,
        "top_p": None,
        "order": "vocabulary",
    }
    assert saved["acceptance_histogram"] == options["acceptance_histogram"] and saved["first_slot_token"] is True

    loaded = ptp.PTPModel.from_pretrained(tiny_base(arch), directory)
    assert loaded.config.to_dict() == model.config.to_dict()
    ids, mask = left_padded([5, 2, 4], seed=6)
    a = model.generate(ids, mask, max_new_tokens=16, seed=11, temperature=1.2)
    b = loaded.generate(ids, mask, max_new_tokens=16, seed=11, temperature=1.2)
    assert torch.equal(a.sequences, b.sequences) and torch.equal(a.lengths, b.lengths)
    assert (a.num_calls, a.accept_lengths) == (b.num_calls, b.accept_lengths)
    inputs, _ = _block(model)
    with torch.no_grad():
        assert torch.equal(model(**inputs), loaded(**inputs)), "the drafter's slot outputs must survive the trip"


def test_load_from_a_base_model_path_and_into_another_dtype(tmp_path):
    base = tiny_base("gpt2")
    base.save_pretrained(tmp_path / "base")
    model, directory = _save(tmp_path, "gpt2")
    loaded = ptp.PTPModel.from_pretrained(tmp_path / "base", directory)
    inputs, _ = _block(model)
    with torch.no_grad():
        assert torch.equal(model(**inputs), loaded(**inputs))
    half = ptp.PTPModel.from_pretrained(tiny_base("gpt2"), directory, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    with torch.no_grad():
        assert torch.isfinite(half(**inputs)).all()


def test_saving_over_an_existing_adapter_replaces_it(tmp_path):
    model, directory = _save(tmp_path, window_length=3)
    (directory / "stale.txt").write_text("from an older save")
    model.config.window_length = 7
    model.save_pretrained(directory)
    assert not (directory / "stale.txt").exists()
    assert PTPConfig.load(directory).window_length == 7
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@torch.no_grad()
def test_the_adapter_loads_in_peft_as_an_ordinary_lora(tmp_path, arch):
    from peft import PeftModel

    model, directory = _save(tmp_path, arch)
    targets = json.loads((directory / "adapter_config.json").read_text())["target_modules"]
    assert targets == sorted(targets)  # the same file for the same adapter, whatever the process's hash seed
    peft_model = PeftModel.from_pretrained(tiny_base(arch), str(directory)).eval()
    ids, mask = left_padded([5, 3], seed=7)
    model._gate.start = 0  # the adapter on at every position
    try:
        ours = model.base_model(input_ids=ids, attention_mask=mask).logits
    finally:
        model._gate.start = None
    theirs = peft_model(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(ours, theirs, atol=1e-5)


# ----------------------------------------------------------------------------------- errors on load
@pytest.mark.parametrize(
    "other, message",
    [
        (dict(arch="llama", hidden=48), "hidden_size"),
        (dict(arch="llama", vocab=128), "vocab_size"),
        (dict(arch="qwen2"), "model_type"),
        (dict(arch="mistral"), "model_type"),
    ],
)
def test_an_adapter_for_another_base_is_refused(tmp_path, other, message):
    _, directory = _save(tmp_path, "llama")
    with pytest.raises(ValueError, match=message):
        ptp.PTPModel.from_pretrained(tiny_base(**other), directory)


@pytest.mark.parametrize(
    "other, message",
    [(dict(arch="gpt2"), "does not fit"), (dict(arch="llama", hidden=48), "shape")],
)
def test_without_the_recorded_base_facts_the_weights_still_refuse_a_wrong_base(tmp_path, other, message):
    _, directory = _save(tmp_path, "llama")
    config = json.loads((directory / "ptp_config.json").read_text())
    config["base_model"] = {}
    (directory / "ptp_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        ptp.PTPModel.from_pretrained(tiny_base(**other), directory)


@pytest.mark.parametrize("name", PTP_FILES)
def test_a_missing_file_is_an_error(tmp_path, name):
    _, directory = _save(tmp_path)
    (directory / name).unlink()
    with pytest.raises(FileNotFoundError, match=name):
        ptp.PTPModel.from_pretrained(tiny_base("llama"), directory)


def test_a_missing_directory_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ptp.PTPModel.from_pretrained(tiny_base("llama"), tmp_path / "nowhere")


@pytest.mark.parametrize("name", ["adapter_model.safetensors", "auxiliary_embedding.safetensors"])
@pytest.mark.parametrize("keep", [0.5, 0.0, 8 / 10**9])
def test_a_truncated_weights_file_is_an_error(tmp_path, name, keep):
    _, directory = _save(tmp_path)
    path = directory / name
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)] if keep > 1e-6 else data[:8])
    with pytest.raises(ValueError, match="corrupt"):
        ptp.PTPModel.from_pretrained(tiny_base("llama"), directory)


@pytest.mark.parametrize("name", ["ptp_config.json", "adapter_config.json"])
@pytest.mark.parametrize("text", ["{not json", "\x00\xff\xfe", "[1, 2, 3]", ""])
def test_a_garbage_json_file_is_an_error(tmp_path, name, text):
    _, directory = _save(tmp_path)
    (directory / name).write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError, match=name):
        ptp.PTPModel.from_pretrained(tiny_base("llama"), directory)


@pytest.mark.parametrize(
    "edit, message",
    [
        (dict(format_version=99), "format_version"),
        (dict(unexpected_key=1), "unknown keys"),
        (dict(mode="telepathic"), "mode"),
        (dict(lora_rank=2), "r=4"),
        (dict(lora_alpha=1.0), "lora_alpha"),
        (dict(embedding="interpolation"), "does not fit"),
        (dict(acceptance_histogram=[1.0]), "acceptance_histogram"),
    ],
)
def test_an_inconsistent_ptp_config_is_an_error(tmp_path, edit, message):
    _, directory = _save(tmp_path)
    config = json.loads((directory / "ptp_config.json").read_text())
    config.update(edit)
    (directory / "ptp_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        ptp.PTPModel.from_pretrained(tiny_base("llama"), directory)


def test_weights_of_another_rank_are_an_error(tmp_path):
    _, directory = _save(tmp_path)
    for name, key in (("ptp_config.json", "lora_rank"), ("adapter_config.json", "r")):
        config = json.loads((directory / name).read_text())
        config[key] = 2
        (directory / name).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="shape"):
        ptp.PTPModel.from_pretrained(tiny_base("llama"), directory)


# ---------------------------------------------------------------------------------- construction errors
def test_bad_construction_is_an_error():
    with pytest.raises(TypeError, match="PreTrainedModel"):
        ptp.PTPModel(torch.nn.Linear(3, 3))
    with pytest.raises(TypeError, match="language-model head"):
        ptp.PTPModel(LlamaModel(tiny_base("llama").config))
    with pytest.raises(TypeError, match="unknown PTP option"):
        ptp.PTPModel(tiny_base("llama"), windows=3)
    with pytest.raises(ValueError, match="mode"):
        ptp.PTPModel(tiny_base("llama"), mode="joint")
    with pytest.raises(ValueError, match="matched no layer"):
        ptp.PTPModel(tiny_base("llama"), target_modules=["no_such_proj"])
    for name in ("window_length", "lora_rank", "embedding_size"):
        with pytest.raises(ValueError, match=name):
            PTPConfig(**{name: 0})


def test_the_base_state_of_a_wrapped_model_loads_strictly_into_an_unwrapped_one():
    """``lora.base_state`` undoes the module swap: what a drafter with trained base weights saves in ``base/``."""
    from ptp.model import lora

    model, _ = wrap(tiny_base("gpt2", seed=3), lora_rank=4, train_base=True)
    assert all(p.requires_grad for p in model.base_model.parameters())
    with torch.no_grad():
        for name, parameter in model.base_model.named_parameters():
            if "lora_" not in name:
                parameter.add_(0.01)
    fresh = tiny_base("gpt2", seed=4)
    fresh.load_state_dict(lora.base_state(model.base_model), strict=True)
    ids, mask = left_padded([6, 4], seed=3)
    torch.testing.assert_close(
        fresh(ids, attention_mask=mask).logits, model.base_model(ids, attention_mask=mask).logits
    )


@pytest.mark.parametrize("start, batch", [(0, 1), (0, 3), (2, 1), (2, 3)])
@pytest.mark.parametrize("autocast", [False, True])
def test_the_gated_update_reaches_the_slots_rows_alone_with_the_plain_formulas_gradients(start, batch, autocast):
    """Rows from ``start`` on get base + scaling * B A x (in place: one contiguous block, rows strided across a batch,
    or under autocast), teacher rows the base output exactly; gradients are those of the plain formula."""
    gate, base = Gate(), torch.nn.Linear(8, 6).requires_grad_(False)
    layer = GatedLoRA(base, rank=4, alpha=8.0, dropout=0.0, gate=gate)
    torch.nn.init.normal_(layer.lora_B.weight, generator=torch.Generator().manual_seed(1))
    x = torch.randn(batch, 5, 8, generator=torch.Generator().manual_seed(2), requires_grad=True)
    gate.start = start
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = layer(x).float()
    gate.start = None
    a, b = layer.lora_A.weight, layer.lora_B.weight
    slot = (torch.arange(5) >= start).view(1, 5, 1)
    expected = base(x) + torch.where(slot, x @ a.T @ b.T * layer.scaling, 0.0)
    weights = torch.randn(expected.shape, generator=torch.Generator().manual_seed(3))
    got = torch.autograd.grad((out * weights).sum(), [x, a, b])
    want = torch.autograd.grad((expected * weights).sum(), [x, a, b])
    tolerance = 2e-2 if autocast else 1e-5
    torch.testing.assert_close(out, expected, rtol=tolerance, atol=tolerance * 4)
    if not autocast:
        assert torch.equal(out[:, :start], base(x)[:, :start]), "teacher rows are the base output bit for bit"
    for g, w in zip(got, want, strict=True):
        assert (g - w).abs().max() <= tolerance * w.abs().max()


@torch.no_grad()
def test_a_16_bit_model_in_eval_mode_runs_its_lora_update_in_its_dtype_and_follows_weight_changes():
    model = ptp.PTPModel(tiny_base("llama", dtype=torch.bfloat16), window_length=4, lora_rank=4).eval()
    randomize_adapter(model, seed=1)
    layer = next(m for m in model.modules() if isinstance(m, GatedLoRA))
    assert layer.lora_A.weight.dtype == torch.float32  # the trained factors stay float32
    x = torch.randn(1, 3, layer.lora_A.in_features, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    model._gate.start = 1  # position 0 is a teacher token, 1 and 2 are slots
    try:
        for _ in range(2):  # the second pass sees the weights changed in place by the first
            out = layer(x)
            base = layer.base_layer(x)
            assert out.dtype == torch.bfloat16 and torch.equal(out[:, 0], base[:, 0]), "teacher positions exact"
            update = x.float() @ layer.lora_A.weight.T @ layer.lora_B.weight.T * layer.scaling
            error = (out[:, 1:].float() - base[:, 1:].float() - update[:, 1:]).abs().max()
            assert update[:, 1:].abs().max() > 1.0 and error < 0.02 * update[:, 1:].abs().max(), "16-bit round-off only"
            layer.lora_B.weight.mul_(2.0)
    finally:
        model._gate.start = None


def test_a_16_bit_base_in_eval_mode_still_trains_its_float32_factors_when_gradients_are_on():
    """Distillation keeps the base in eval mode (only LoRA dropout trains); with a bf16 base the update must still run
    on the float32 factors themselves, not on the cached 16-bit copies of inference, or no gradient reaches them."""
    gate, base = Gate(), torch.nn.Linear(8, 6).to(torch.bfloat16).requires_grad_(False)
    layer = GatedLoRA(base, rank=4, alpha=8.0, dropout=0.0, gate=gate).eval()
    torch.nn.init.normal_(layer.lora_B.weight, generator=torch.Generator().manual_seed(1))
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    gate.start = 2
    layer(x).float().square().sum().backward()
    for weight in (layer.lora_A.weight, layer.lora_B.weight):
        assert weight.grad is not None and weight.grad.abs().sum() > 0
    with torch.no_grad():  # inference on a CPU: the float32 factors (cheaper there), the output in the model's dtype
        assert layer(x).dtype == torch.bfloat16 and layer._cast is None
    gate.start = None


def test_under_autocast_a_16_bit_base_trains_without_float32_copies_of_the_slots_activations():
    """Distillation in bf16 runs its step under autocast, which computes the update in 16 bits whatever its inputs'
    dtype: casting the slots' activations to float32 first would only add two copies of them (and their gradients')
    in every adapted layer, and change nothing: the outputs and gradients are those of the cast, bit for bit."""
    gate, base = Gate(), torch.nn.Linear(8, 6).to(torch.bfloat16).requires_grad_(False)
    layer = GatedLoRA(base, rank=4, alpha=8.0, dropout=0.0, gate=gate).eval()
    torch.nn.init.normal_(layer.lora_B.weight, generator=torch.Generator().manual_seed(1))
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16).requires_grad_(True)
    weights = torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(3))
    gate.start = 2
    try:
        with Operators() as ops, torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(x)
            grads = torch.autograd.grad((out.float() * weights).sum(), [x, layer.lora_A.weight, layer.lora_B.weight])
        casts = [shapes[0] for name, shapes, _ in ops.ran if name == "_to_copy"]
        assert (2, 3, 8) not in casts, "the slots' activations stay in 16 bits"
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the same update computed from a float32 copy of them
            update = torch.nn.functional.linear(
                torch.nn.functional.linear(x[:, 2:].float(), layer.lora_A.weight), layer.lora_B.weight
            )
            plain = torch.cat([base(x)[:, :2], base(x)[:, 2:] + (update * layer.scaling).to(torch.bfloat16)], dim=1)
            want = torch.autograd.grad((plain.float() * weights).sum(), [x, layer.lora_A.weight, layer.lora_B.weight])
    finally:
        gate.start = None
    assert torch.equal(out, plain)
    assert all(torch.equal(g, w) for g, w in zip(grads, want, strict=True))


@pytest.mark.parametrize("autocast", [False, True])
def test_where_every_row_is_a_slot_the_update_goes_into_the_output_without_copying_it_or_its_gradient(autocast):
    """Training's slot pass has slots alone (start 0). The update then goes into the base output itself: added in place
    to a view of it (even of all of it), autograd would clone the output's whole gradient and copy it twice in the
    backward pass of every adapted layer; and alpha = rank, whose scaling is one, multiplies by nothing (a copy of the
    update and of its gradient). The outputs and gradients are the plain formula's, bit for bit."""
    gate, base = Gate(), torch.nn.Linear(8, 6).requires_grad_(False)
    layer = GatedLoRA(base, rank=4, alpha=4.0, dropout=0.0, gate=gate)
    torch.nn.init.normal_(layer.lora_B.weight, generator=torch.Generator().manual_seed(1))
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(2), requires_grad=True)
    weights = torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(3))
    parameters = [x, layer.lora_A.weight, layer.lora_B.weight]
    gate.start = 0
    try:
        with Operators() as ops, torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = layer(x)
            grads = torch.autograd.grad(out, parameters, weights.to(out.dtype))
    finally:
        gate.start = None
    sizes = (out.shape, (out.shape[0] * out.shape[1], out.shape[2]))
    copies = [name for name, _, made in ops.ran if made in sizes and name in ("clone", "copy_", "mul")]
    assert copies == [], "neither the output nor its gradient is copied, nor multiplied by one"
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):  # the update added in place to a view of all
        plain = base(x)
        h = torch.nn.functional.linear(x[:, 0:], parameters[1])
        if autocast:
            plain[:, 0:] += (torch.nn.functional.linear(h, parameters[2]) * layer.scaling).to(plain.dtype)
        else:
            plain[:, 0:].view(-1, 6).addmm_(h.view(-1, 4), parameters[2].t(), alpha=layer.scaling)
        want = torch.autograd.grad(plain, parameters, weights.to(plain.dtype))
    assert torch.equal(out, plain)
    assert all(torch.equal(g, w) for g, w in zip(grads, want, strict=True))


@pytest.mark.gpu
def test_a_16_bit_layer_on_a_gpu_decodes_with_copies_of_its_factors_in_its_dtype():
    gate, base = Gate(), torch.nn.Linear(8, 6).to("cuda", torch.bfloat16)
    layer = GatedLoRA(base, rank=4, alpha=8.0, dropout=0.0, gate=gate).eval()
    x = torch.randn(2, 5, 8, device="cuda", dtype=torch.bfloat16)
    gate.start = 2
    with torch.no_grad():
        assert layer(x).dtype == torch.bfloat16 and layer._cast is not None
    assert layer._cast[1].dtype == torch.bfloat16 and layer.lora_A.weight.dtype == torch.float32


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_a_fresh_drafter_with_the_first_slots_token_starts_as_the_teacher(arch):
    """u's embedding starts at zero and the LoRA update too, so a first slot that gets its token computes the
    teacher's next-token logits exactly: a drafter learns to read u from the teacher's own prediction."""
    model, reference = wrap(tiny_base(arch, seed=5), first_slot_token=True)
    ids = torch.randint(3, VOCAB, (2, 7), generator=torch.Generator().manual_seed(5))
    width = ids.shape[1]
    with torch.no_grad():
        teacher = reference(ids).logits[:, -1]
        allowed = torch.ones(width, width, dtype=torch.bool).tril().expand(2, 1, width, width)
        slot = model(ids, position_ids=torch.arange(width).expand(2, -1), attention_mask=allowed,
                     auxiliaries=torch.rand(2, 1), slots_from=width - 1)[:, -1]  # fmt: skip
    torch.testing.assert_close(slot, teacher, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------ dtypes and devices
def _adapter_state(model: ptp.PTPModel) -> dict[str, torch.Tensor]:
    """The drafter's own weights (LoRA factors and u embedding), copied."""
    return {
        name: p.detach().clone()
        for name, p in model.named_parameters()
        if "lora_" in name or name.startswith("auxiliary_embedding")
    }


def _assert_dtypes(model: ptp.PTPModel, dtype: torch.dtype) -> None:
    """The base in ``dtype``, the drafter's own weights in float32 (by design: training keeps float32 factors)."""
    assert model.dtype == dtype
    for name, p in model.named_parameters():
        own = "lora_" in name or name.startswith("auxiliary_embedding")
        assert p.dtype == (torch.float32 if own else dtype), f"{name} is {p.dtype}"


CASTS = {
    "to(dtype)": lambda m, dtype: m.to(dtype),
    "to(dtype=)": lambda m, dtype: m.to(dtype=dtype),
    "to(device, dtype)": lambda m, dtype: m.to("cpu", dtype),
    "to(tensor)": lambda m, dtype: m.to(torch.zeros((), dtype=dtype)),
    "half/bfloat16": lambda m, dtype: m.half() if dtype == torch.float16 else m.bfloat16(),
}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cast", CASTS)
def test_a_cast_model_follows_its_dtype_decodes_and_casts_back_to_exact_float32(cast, dtype):
    """A PTPModel cast to 16 bits casts its base; the LoRA factors and the u embedding stay float32 and untouched, so
    it decodes (16-bit round-off may flip a token: mostly the engine's plain decoding in that dtype) and ``.float()``
    gives back a float32 model that decodes exactly like its base rounded to 16 bits."""
    arch = "gpt2" if dtype == torch.float16 else "llama"
    model, reference = wrap(tiny_base(arch, seed=20), window_length=4, lora_rank=4)
    randomize_adapter(model, seed=20)
    drafter = _adapter_state(model)
    assert CASTS[cast](model, dtype) is model
    _assert_dtypes(model, dtype)
    ids, mask = left_padded([5, 2, 4], seed=20)
    u = torch.rand(3, 16, generator=torch.Generator().manual_seed(20))
    options = dict(auxiliaries=u, max_new_tokens=16, eos_token_id=[], temperature=0.9, top_k=20)
    got = model.generate(ids, mask, **options)
    plain = model.generate(ids, mask, use_drafter=False, **options)
    assert got.new_tokens.shape == plain.new_tokens.shape and (got.lengths == 16).all()
    assert (got.new_tokens == plain.new_tokens).float().mean() > 0.5
    model.float()
    _assert_dtypes(model, torch.float32)
    for name, value in _adapter_state(model).items():
        assert torch.equal(value, drafter[name]), f"{name} changed in the round trip"
    expected = ptp.sample_autoregressive(reference.to(dtype).float(), ids, mask, **options)
    back = model.generate(ids, mask, **options)
    assert torch.equal(back.sequences, expected.sequences) and torch.equal(back.lengths, expected.lengths)


@pytest.mark.parametrize("how", ["wrap", "from_pretrained"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_base_in_any_dtype_gets_a_float32_drafter_and_decodes(tmp_path, how, dtype):
    if how == "wrap":
        model = ptp.PTPModel(tiny_base("llama", seed=21, dtype=dtype), window_length=4, lora_rank=4).eval()
    else:
        _, directory = _save(tmp_path, "llama", window_length=4)
        model = ptp.PTPModel.from_pretrained(tiny_base("llama", seed=21), directory, dtype=dtype)
    randomize_adapter(model, seed=21)
    _assert_dtypes(model, dtype)
    ids, mask = left_padded([5, 2, 4], seed=21)
    options = dict(max_new_tokens=16, seed=21, eos_token_id=[], do_sample=False)
    got, plain = model.generate(ids, mask, **options), model.generate(ids, mask, use_drafter=False, **options)
    assert (got.new_tokens == plain.new_tokens).float().mean() > 0.5


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_model_cast_to_float64_is_exact(arch):
    """Exactness does not depend on float32: in float64 (factors and u embedding still float32) too."""
    model, reference = wrap(tiny_base(arch, seed=22), window_length=4, lora_rank=4)
    randomize_adapter(model, seed=22)
    model.double()
    _assert_dtypes(model, torch.float64)
    ids, mask = left_padded([5, 2, 4], seed=22)
    u = torch.rand(3, 16, generator=torch.Generator().manual_seed(22))
    options = dict(auxiliaries=u, max_new_tokens=16, eos_token_id=[], temperature=1.1, top_p=0.9)
    got = model.generate(ids, mask, **options)
    expected = ptp.sample_autoregressive(reference.double(), ids, mask, **options)
    assert torch.equal(got.sequences, expected.sequences)


def test_a_device_move_moves_the_drafter_too():
    model, _ = wrap(tiny_base("llama"), window_length=4, lora_rank=4)
    model.to("meta")
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    model.to_empty(device="cpu")
    assert {p.device.type for p in model.parameters()} == {"cpu"}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_model_moved_to_cuda_in_16_bits_decodes_and_comes_back_exact(dtype):
    model, reference = wrap(tiny_base("llama", seed=23), window_length=4, lora_rank=4)
    randomize_adapter(model, seed=23)
    drafter = _adapter_state(model)
    model.to("cuda", dtype)
    _assert_dtypes(model, dtype)
    assert {p.device.type for p in model.parameters()} == {"cuda"}
    ids, mask = left_padded([5, 2, 4], seed=23)
    u = torch.rand(3, 16, generator=torch.Generator().manual_seed(23))
    options = dict(auxiliaries=u, max_new_tokens=16, eos_token_id=[], temperature=0.9)
    assert model.generate(ids.cuda(), mask.cuda(), **options).sequences.is_cuda
    model.cpu().float()
    for name, value in _adapter_state(model).items():
        assert torch.equal(value, drafter[name])
    expected = ptp.sample_autoregressive(reference.to(dtype).float(), ids, mask, **options)
    assert torch.equal(model.generate(ids, mask, **options).sequences, expected.sequences)


# ---------------------------------------------------------------------------------- one adapter per base
def test_a_second_ptp_model_on_the_same_base_is_refused_and_the_first_keeps_working(tmp_path):
    base = tiny_base("llama", seed=24)
    fresh = copy.deepcopy(base)
    model, reference = wrap(base, window_length=4, lora_rank=4)
    randomize_adapter(model, seed=24)
    _, directory = _save(tmp_path, "llama", window_length=4)
    for second in (lambda: ptp.PTPModel(base), lambda: ptp.PTPModel.from_pretrained(base, directory)):
        with pytest.raises(ValueError, match="already carries a PTP adapter.*fresh copy"):
            second()
    with pytest.raises(TypeError, match="PTPModel already"):
        ptp.PTPModel(model)
    ids, mask = left_padded([5, 2, 4], seed=24)
    u = torch.rand(3, 12, generator=torch.Generator().manual_seed(24))
    options = dict(auxiliaries=u, max_new_tokens=12, eos_token_id=[], temperature=0.8)
    expected = ptp.sample_autoregressive(reference, ids, mask, **options)
    assert torch.equal(model.generate(ids, mask, **options).sequences, expected.sequences)
    other = ptp.PTPModel(fresh, window_length=4, lora_rank=4).eval()  # the advice: a fresh copy
    assert torch.equal(other.generate(ids, mask, **options).sequences, expected.sequences)
