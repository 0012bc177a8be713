"""The forward-cost sweep on the tiny Llama preset (the 1.1B and 7B presets run on the GPU)."""

from __future__ import annotations

import json

import pytest
import torch

from ptp.bench.forward_cost import PRESETS, build_model, forward_cost, streamed_bytes, write_forward_cost
from ptp.cli import main


def test_forward_cost_on_the_tiny_preset(tmp_path):
    result = forward_cost(
        "tiny",
        device="cpu",
        dtype="bfloat16",
        context=32,
        new_tokens=(1, 2, 4),
        repeats=2,
        warmup=1,
        copy_bytes=1 << 20,
        engine_budgets=((2, 2), (6, 3)),
        static_tokens=4,
    )
    assert [p["new_tokens"] for p in result["points"]] == [1, 2, 4]
    static, engine = result["hf_static"], result["engine"]
    assert static["tokens"] == 4 and static["compile_s"] > 0
    assert static["vs_floor"] == pytest.approx(static["ms_per_token"] / result["floor_ms"])
    assert engine["ar_vs_floor"] == pytest.approx(engine["ar_ms"] / result["floor_ms"])
    assert engine["ar_vs_hf_static"] == pytest.approx(engine["ar_ms"] / static["ms_per_token"])
    assert engine["ar_ms"] > 0 and [(c["slots"], c["group"], c["positions"]) for c in engine["ptp"]] == [
        (2, 2, 4),
        (6, 3, 9),
    ]
    assert all(c["ms"] > 0 and c["vs_ar"] == pytest.approx(c["ms"] / engine["ar_ms"]) for c in engine["ptp"])
    # What a call is made of: a PTP call dispatches more operators than a one-token call (its adapter, its slots).
    assert engine["ar_kernels"]["kernels"] > 0
    assert all(c["kernels"] > engine["ar_kernels"]["kernels"] for c in engine["ptp"])
    for point in result["points"]:
        assert point["causal_ms"] > 0 and point["bool_mask_ms"] > 0
    assert result["points"][0]["causal_relative"] == 1.0
    assert result["dtype"] == "bfloat16" and result["context"] == 32
    assert result["floor_ms"] > 0 and result["copy_bandwidth_gb_s"] > 0
    assert result["environment"]["torch"]
    files = write_forward_cost([result], tmp_path)
    assert json.loads((tmp_path / "forward_cost.json").read_text())[0]["preset"] == "tiny"
    assert (tmp_path / "forward_cost.png").read_bytes().startswith(b"\x89PNG")
    assert files["png"].endswith("forward_cost.png")


def test_presets_have_the_published_shapes():
    model = build_model("tiny", "cpu", torch.float32)
    embedding = model.get_input_embeddings().weight
    assert streamed_bytes(model) == sum(p.numel() * 4 for p in model.parameters()) - embedding.numel() * 4
    # TinyLlama-1.1B and Llama-2-7B, counted from their shapes: about 1.1e9 and 6.7e9 parameters.
    for name, expected in (("1.1b", 1.10e9), ("7b", 6.74e9)):
        s = PRESETS[name]
        attention = s["hidden_size"] * s["hidden_size"] * (2 + 2 * s["num_key_value_heads"] / s["num_attention_heads"])
        mlp = 3 * s["hidden_size"] * s["intermediate_size"]
        total = s["num_hidden_layers"] * (attention + mlp) + 2 * s["vocab_size"] * s["hidden_size"]
        assert total == pytest.approx(expected, rel=0.01)


def test_bad_forward_cost_input():
    with pytest.raises(ValueError, match="unknown model preset"):
        forward_cost("13b", device="cpu")
    with pytest.raises(ValueError, match="exceeds the 1024 positions"):
        forward_cost("tiny", device="cpu", context=1000, new_tokens=(64,))
    with pytest.raises(ValueError, match="exceeds the 1024 positions"):
        forward_cost("tiny", device="cpu", context=1000, new_tokens=(1,), static_tokens=32)
    with pytest.raises(ValueError, match="static_tokens >= 0"):
        forward_cost("tiny", device="cpu", static_tokens=-1)


def test_cli_bench_forward(tmp_path, capsys):
    argv = [
        "bench-forward",
        "--presets",
        "tiny",
        "--context",
        "16",
        "--new-tokens",
        "1,2",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--device",
        "cpu",
        "--engine-budgets",
        "2:2",
        "--static-tokens",
        "2",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["results"][0]["preset"] == "tiny" and len(out["results"][0]["points"]) == 2
    assert [c["positions"] for c in out["results"][0]["engine"]["ptp"]] == [4]
    assert out["results"][0]["hf_static"]["tokens"] == 2
    assert (tmp_path / "forward_cost.png").is_file()
    assert main(argv[:-6] + ["--engine-budgets", "", "--static-tokens", "0", "--out", str(tmp_path)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"][0]
    assert "engine" not in result and "hf_static" not in result


@pytest.mark.parametrize("budgets", ["2", "2:0", "a:b", "2:2:2"])
def test_cli_bench_forward_refuses_bad_engine_budgets(tmp_path, budgets):
    with pytest.raises(SystemExit):
        main(["bench-forward", "--presets", "tiny", "--engine-budgets", budgets, "--out", str(tmp_path)])
