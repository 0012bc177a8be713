"""`ptp train` checkpoints: a killed run resumes to the very weights and losses of an uninterrupted one, a changed
config is refused, a killed save leaves nothing behind, and two DDP processes train as one process does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ptp.train.checkpoint as checkpoint
import ptp.train.loop as loop
from ptp.cli import main
from ptp.train.checkpoint import list_checkpoints, load_checkpoint
from ptp.train.pretrain import PretrainConfig, pretrain

SHAPE = dict(vocab_size=300, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64,
             row_length=64, context=128, batch_size=4, learning_rate=0.01, warmup_steps=2, device="cpu",
             progress=False, window_length=4, windows_per_row=4, lora_rank=4)  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus")
    for i in range(6):
        (path / f"m{i}.py").write_text("".join(f"def f{j}(x):\n    return x * {i} + {j}\n" for j in range(40)))
    return path


def _config(corpus, out, **options) -> PretrainConfig:
    return PretrainConfig(data=str(corpus), out=str(out), **{**SHAPE, "steps": 6, "checkpoint_interval": 2, **options})


def _weights(directory: Path) -> dict:
    """Every tensor of the model directory (a ``ptp`` model keeps its base in ``base/``), by file and name."""
    return {
        f"{f.relative_to(directory)}:{k}": v for f in directory.rglob("*.safetensors") for k, v in load_file(f).items()
    }


def _losses(out: Path) -> list[float]:
    """The loss of every step, as the final checkpoint recorded it."""
    return load_checkpoint(list_checkpoints(out.with_name(out.name + ".run"))[-1])["losses"]


def _killed_after(step: int, monkeypatch):
    save = checkpoint.save_checkpoint

    def killed(run_dir, done, *args, **kwargs):
        path = save(run_dir, done, *args, **kwargs)
        if done == step:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(loop, "save_checkpoint", killed)


@pytest.mark.parametrize("objective", ["ar", "ptp"])
def test_a_killed_run_resumes_to_the_weights_and_losses_of_an_uninterrupted_one(corpus, tmp_path, objective,
                                                                                   monkeypatch):  # fmt: skip
    whole = pretrain(_config(corpus, tmp_path / "whole", objective=objective))
    _killed_after(4, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        pretrain(_config(corpus, tmp_path / "cut", objective=objective))
    monkeypatch.undo()
    assert [p.name for p in list_checkpoints(tmp_path / "cut.run")] == ["step-0000002", "step-0000004"]
    resumed = pretrain(_config(corpus, tmp_path / "cut", objective=objective, resume=True, progress=True))

    expected, got = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    assert len(_losses(tmp_path / "cut")) == 6 and _losses(tmp_path / "cut") == _losses(tmp_path / "whole")
    same = ("final_train_loss", "loss_curve", "held_out_loss", "ptp_evaluation", "train_tokens_seen")
    assert {k: resumed[k] for k in same} == {k: whole[k] for k in same}


def test_resuming_with_a_changed_config_is_refused_with_the_fields_named(corpus, tmp_path, monkeypatch):
    out = tmp_path / "model"
    flags = ["train", "--data", str(corpus), "--out", str(out), "--steps", "4", "--checkpoint-interval", "2",
             "--vocab-size", "300", "--hidden-size", "32", "--num-layers", "1", "--num-heads", "2", "--num-kv-heads",
             "1", "--intermediate-size", "64", "--row-length", "64", "--context", "128", "--batch-size", "4",
             "--device", "cpu", "--no-progress"]  # fmt: skip
    _killed_after(2, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        main(flags)
    monkeypatch.undo()
    with pytest.raises(SystemExit, match="ptp train: cannot resume: .* learning_rate: 0.003 -> 0.01"):
        main([*flags, "--resume", "--learning-rate", "0.01"])
    with pytest.raises(SystemExit, match="ptp train: .*already holds checkpoints"):
        main(flags)
    assert main([*flags, "--resume", "--keep-checkpoints", "1"]) == 0  # how often and how many may change
    assert [p.name for p in list_checkpoints(tmp_path / "model.run")] == ["step-0000004"]


def test_a_run_stopped_by_its_time_limit_resumes_with_another_limit_to_the_uninterrupted_run(corpus, tmp_path,
                                                                                            monkeypatch):  # fmt: skip
    """A multi-call recipe trains a teacher over several device calls: each ends by --max-time, the next resumes."""
    whole = pretrain(_config(corpus, tmp_path / "whole", checkpoint_interval=None))
    checks = []
    monkeypatch.setattr(loop, "_past", lambda deadline, accelerator: checks.append(1) or len(checks) == 3)
    stopped = pretrain(_config(corpus, tmp_path / "cut", checkpoint_interval=None, max_time=100.0))
    monkeypatch.undo()
    assert stopped["steps"] == 3 and [p.name for p in list_checkpoints(tmp_path / "cut.run")] == ["step-0000003"]
    resumed = pretrain(_config(corpus, tmp_path / "cut", checkpoint_interval=None, max_time=500.0, resume=True))
    expected, got = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert resumed["steps"] == 6 and resumed["final_train_loss"] == whole["final_train_loss"]


def test_a_save_killed_midway_leaves_no_temporary_files_and_the_run_resumes_from_the_checkpoint_before(
    corpus, tmp_path, monkeypatch
):
    real = torch.save

    def dies_at_step_four(state, *args, **kwargs):
        if state.get("step") == 4:
            raise KeyboardInterrupt
        return real(state, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", dies_at_step_four)
    with pytest.raises(KeyboardInterrupt):
        pretrain(_config(corpus, tmp_path / "model"))
    monkeypatch.undo()
    root = tmp_path / "model.run" / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step-0000002"]  # nothing hidden, nothing half-written
    pretrain(_config(corpus, tmp_path / "model", resume=True))
    assert sorted(p.name for p in root.iterdir()) == ["step-0000004", "step-0000006"]


def test_two_ddp_processes_train_as_one_process_with_the_same_global_batch(corpus, tmp_path):
    flags = ["train", "--data", str(corpus), "--steps", "4", "--vocab-size", "300", "--hidden-size", "32",
             "--num-layers", "1", "--num-heads", "2", "--num-kv-heads", "1", "--intermediate-size", "64",
             "--row-length", "64", "--context", "128", "--learning-rate", "0.01", "--warmup-steps", "2",
             "--device", "cpu", "--no-progress"]  # fmt: skip
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "ptp.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(launcher + flags + ["--out", str(tmp_path / "ddp"), "--batch-size", "2"],
                          capture_output=True, text=True, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    printed = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1 and printed[0]["processes"] == 2  # the main process reports
    assert main(flags + ["--out", str(tmp_path / "one"), "--batch-size", "4"]) == 0

    expected, got = _weights(tmp_path / "one"), _weights(tmp_path / "ddp")
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(_losses(tmp_path / "ddp"), _losses(tmp_path / "one"), rtol=1e-5, atol=1e-6)
