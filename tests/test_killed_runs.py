"""Runs killed with SIGKILL: ``ptp pregenerate``, ``ptp distill`` and ``ptp train`` are killed mid-run (as an out-of-
memory killer or a lost machine would: no handler runs), then rerun with the same command (``--resume`` for the two
training commands). The result equals an uninterrupted run's, at most one shard / checkpoint interval of work is
redone, and no partial or temporary file is left behind.

Each command runs in a subprocess, the uninterrupted one too, so that all three runs compute with the same threads.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bench_support import save_tiny_model
from ptp.data import load_dataset
from ptp.train.checkpoint import list_checkpoints

pytestmark = pytest.mark.slow

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _ptp(arguments: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ptp.cli", *arguments], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def _finish(arguments: list[str]) -> None:
    process = _ptp(arguments)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]


def _kill_when(arguments: list[str], ready, timeout: float = 300) -> None:
    """Start the command, and SIGKILL it as soon as ``ready()`` holds, while it still runs."""
    process = _ptp(arguments)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert process.poll() is None, f"the command ended before it could be killed:\n{process.stderr.read()}"
            assert time.monotonic() < deadline, "the command made no progress"
            time.sleep(0.005)
        assert process.poll() is None, "the command ended before it could be killed: make its run longer"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == -signal.SIGKILL


def _no_temporary_files(directory: Path) -> None:
    """What an atomic write leaves while it runs (dot-files and ``.tmp`` names) must not survive a resumed run."""
    leftovers = [p for p in directory.rglob("*") if p.name.startswith(".") or ".tmp" in p.name or "partial" in p.name]
    assert leftovers == []


def _tensors(directory: Path) -> dict:
    files = directory.rglob("*.safetensors")
    return {f"{f.relative_to(directory)}:{k}": v for f in files for k, v in load_file(f).items()}


def _assert_same_tensors(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys() and got
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"def f{i}(x):"}) + "\n" for i in range(40)))
    return path


def _pregenerate(model_dir, prompts, out) -> list[str]:
    options = "--n-per-prompt 2 --max-new-tokens 24 --prompts-per-shard 2 --device cpu --no-progress"
    return f"pregenerate --model {model_dir} --prompts {prompts} --out {out} {options}".split()


def test_a_killed_pregeneration_resumes_to_the_data_of_an_uninterrupted_one(model_dir, prompts, tmp_path):
    _finish(_pregenerate(model_dir, prompts, tmp_path / "whole"))
    killed = tmp_path / "killed"

    def shards_written() -> list:
        try:
            return json.loads((killed / "metadata.json").read_text())["shards"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            return []

    _kill_when(_pregenerate(model_dir, prompts, killed), lambda: len(shards_written()) >= 3)
    recorded = len(shards_written())
    assert 3 <= recorded < 20  # killed mid-run, with its finished shards recorded
    _finish(_pregenerate(model_dir, prompts, killed))

    expected, got = load_dataset(tmp_path / "whole"), load_dataset(killed)
    assert [d.tokens.tolist() for d in got.documents] == [d.tokens.tolist() for d in expected.documents]
    assert json.loads((killed / "metadata.json").read_text())["complete"]
    _no_temporary_files(tmp_path)


@pytest.fixture(scope="module")
def data_dir(model_dir, prompts, tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "data"
    _finish(_pregenerate(model_dir, prompts, out))
    return out


def _distill(model_dir, data_dir, out, *extra) -> list[str]:
    settings = ("window_length=4 lora_rank=4 windows_per_row=6 batch_size=2 row_length=64 warmup_steps=1 "
                "log_interval=1 eval_rows=4 checkpoint_interval=2 eval_interval=0 lora_dropout=0.1")  # fmt: skip
    flags = [a for s in settings.split() for a in ("--set", s)]
    command = f"distill --model {model_dir} --data {data_dir} --out {out} --max-steps 60 --device cpu --no-progress"
    return command.split() + flags + list(extra)


def test_a_killed_distillation_resumes_to_the_adapter_of_an_uninterrupted_one(model_dir, data_dir, tmp_path):
    _finish(_distill(model_dir, data_dir, tmp_path / "whole"))
    killed = tmp_path / "killed"
    run_dir = tmp_path / "killed.run"
    _kill_when(_distill(model_dir, data_dir, killed), lambda: len(list_checkpoints(run_dir)) >= 2)
    assert not (killed / "adapter_model.safetensors").exists()  # killed before the end
    steps = [int(p.name.split("-")[-1]) for p in list_checkpoints(run_dir)]
    assert 4 <= steps[-1] < 60  # the newest intact checkpoint: at most one interval of work is redone
    _finish(_distill(model_dir, data_dir, killed, "--resume"))

    _assert_same_tensors(_tensors(killed), _tensors(tmp_path / "whole"))
    whole_log = (tmp_path / "whole.run" / "metrics.jsonl").read_text().splitlines()
    strip = lambda line: {k: v for k, v in json.loads(line).items() if k != "tokens_per_s"}  # noqa: E731
    killed_log = [strip(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [strip(line) for line in whole_log] == killed_log  # each step logged once, with the same numbers
    _no_temporary_files(tmp_path)  # the run directory, the adapter and the staging folders beside it


def _train(corpus, out, *extra) -> list[str]:
    shape = (
        "--vocab-size 300 --hidden-size 32 --num-layers 1 --num-heads 2 --num-kv-heads 1 "
        "--intermediate-size 64 --row-length 64 --context 128 --batch-size 4 --learning-rate 0.01 "
        "--warmup-steps 2 --device cpu"
    )
    command = f"train --objective ar --data {corpus} --out {out} --steps 60 --checkpoint-interval 2 --no-progress"
    return command.split() + shape.split() + list(extra)


def test_a_killed_training_resumes_to_the_model_of_an_uninterrupted_one(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(6):
        (corpus / f"m{i}.py").write_text("".join(f"def f{j}(x):\n    return x * {i} + {j}\n" for j in range(40)))
    _finish(_train(corpus, tmp_path / "whole"))
    killed = tmp_path / "killed"
    run_dir = tmp_path / "killed.run"
    _kill_when(_train(corpus, killed), lambda: len(list_checkpoints(run_dir)) >= 2)
    steps = [int(p.name.split("-")[-1]) for p in list_checkpoints(run_dir)]
    assert 4 <= steps[-1] < 60
    _finish(_train(corpus, killed, "--resume"))

    _assert_same_tensors(_tensors(killed), _tensors(tmp_path / "whole"))
    _no_temporary_files(tmp_path)  # the run directory, the adapter and the staging folders beside it
