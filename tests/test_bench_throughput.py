"""ptp.bench.throughput: both methods sample the same number of sequences from the same prompts and report it."""

from __future__ import annotations

import json

import pytest

from bench_support import save_tiny_model, write_jsonl
from ptp.bench.throughput import ThroughputConfig, describe, run_throughput
from ptp.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("throughput")
    prompts = write_jsonl(root / "prompts.jsonl", [{"prompt": f"def f{i}(x):" + " " * i} for i in range(6)])
    return save_tiny_model(root / "model"), prompts


@pytest.mark.parametrize("random_weights", [False, True])
def test_both_methods_sample_every_sequence_and_report_tokens_per_second(files, tmp_path, random_weights):
    model, prompts = files
    config = ThroughputConfig(prompts=str(prompts), out=str(tmp_path), model=str(model), n_per_prompt=2,
                              batch_size=4, max_new_tokens=8, device="cpu", random_weights=random_weights,
                              profile=True)  # fmt: skip
    report = run_throughput(config)
    assert report["sequences"] == 12
    for method in ("engine", "hf"):
        result = report["results"][method]
        assert 12 <= result["new_tokens"] <= 12 * 8 and result["tokens_per_s"] > 0
        assert (tmp_path / f"profile-{method}.txt").read_text().strip()
    assert json.loads((tmp_path / "throughput.json").read_text())["results"] == report["results"]
    assert "engine / hf" in describe(report)


@pytest.mark.parametrize("options, message", [(dict(methods="engine,vllm"), "methods must be"),
                                              (dict(batch_size=0), "batch_size must be")])  # fmt: skip
def test_bad_settings_are_one_line_errors(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        ThroughputConfig(prompts="p.jsonl", out=str(tmp_path), **options)


def test_a_missing_model_directory_is_named(files, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_throughput(ThroughputConfig(prompts=str(files[1]), out=str(tmp_path), model=str(tmp_path / "none")))


def test_the_command_measures_with_the_sampling_flags(files, tmp_path, capsys):
    model, prompts = files
    assert main(["bench-throughput", "--prompts", str(prompts), "--out", str(tmp_path), "--model", str(model),
                 "--batch-size", "3", "--max-new-tokens", "4", "--device", "cpu", "--greedy"]) == 0  # fmt: skip
    assert "engine / hf" in capsys.readouterr().out
    report = json.loads((tmp_path / "throughput.json").read_text())
    assert report["config"]["sampling"]["do_sample"] is False and set(report["results"]) == {"engine", "hf"}
