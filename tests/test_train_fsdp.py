"""``distill`` with ``fsdp``: two CPU processes (gloo) agree with DDP, save a loadable adapter and resume exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import ptp
from conftest import assert_same_tokens, tiny_base
from ptp.train import DistillConfig, distill
from ptp.train.checkpoint import list_checkpoints
from ptp.train.sharding import decoder_layers
from train_support import make_data, quick_config, reference

SCRIPT = """
import json
import os
import sys
import torch
import ptp.train.distillation as distillation
from ptp.train import distill
from train_support import quick_config

data, out, base, options = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
killed_at = options.pop("killed_at_checkpoint", None)
if killed_at:  # every process stops while gathering the state of that checkpoint (after the earlier ones are saved)
    gather, calls = distillation.full_optimizer_state, []

    def killed(*args):
        calls.append(1)
        if len(calls) == killed_at:
            torch.distributed.barrier()
            os._exit(0)  # at once, as a kill does (a normal exit can abort in gloo's teardown)
        return gather(*args)

    distillation.full_optimizer_state = killed
distill(quick_config(data, out, **options), base_model=torch.load(base, weights_only=False))
# Everything is written and the process group destroyed; the interpreter's own teardown is not what these tests
# check, and after a resumed run gloo's threads have aborted it now and then (exit code -6, outputs complete).
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
"""
#: Odd evaluation batches (5 rows of 2), so that one process runs a repeated batch; accumulation, dropout, clipping.
OPTIONS = dict(max_steps=4, eval_interval=2, eval_fraction=0.0, eval_rows=5, lora_dropout=0.1,
               gradient_accumulation=2, max_grad_norm=0.5, learning_rate=1e-3)  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    data = make_data(root / "data", prompts=8)
    torch.save(tiny_base("llama"), root / "base.pt")
    (root / "run.py").write_text(SCRIPT)
    return root, data


def _launch(setup, out, **options):
    root, data = setup
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(root / "run.py")]
    tests = os.path.dirname(__file__)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [tests, env.get("PYTHONPATH")]))
    arguments = [str(data), str(out), str(root / "base.pt"), json.dumps({**OPTIONS, **options})]
    done = subprocess.run(launcher + arguments, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in (out.parent / f"{out.name}.run" / "metrics.jsonl").read_text().splitlines()]


def _weights(adapter):
    return {
        **load_file(str(adapter / "adapter_model.safetensors")),
        **load_file(str(adapter / "auxiliary_embedding.safetensors")),
    }


def _close(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-5, msg=key)


def test_fsdp_trains_as_ddp_does_and_saves_an_adapter_that_decodes_exactly(setup, tmp_path):
    ddp = _launch(setup, tmp_path / "ddp")
    fsdp = _launch(setup, tmp_path / "fsdp", fsdp=True)
    assert [r["step"] for r in fsdp] == [r["step"] for r in ddp] and len(fsdp) == 6  # 4 train + 2 eval records
    for ours, theirs in zip(fsdp, ddp, strict=True):
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-4)
        assert ours["correct_prefix"] == pytest.approx(theirs["correct_prefix"], abs=1e-6)
    assert [r["windows"] for r in fsdp if r["split"] == "eval"] == [r["windows"] for r in ddp if r["split"] == "eval"]
    _close(_weights(tmp_path / "fsdp"), _weights(tmp_path / "ddp"))
    saved = json.loads((tmp_path / "fsdp" / "ptp_config.json").read_text())
    assert saved["acceptance_histogram"] == pytest.approx(fsdp[-1]["histogram"])
    for checkpoint in list_checkpoints(tmp_path / "fsdp.run"):  # checkpoints hold the same full adapter format
        assert set(_weights(checkpoint / "adapter")) == set(_weights(tmp_path / "fsdp"))

    model = ptp.PTPModel.from_pretrained(tiny_base("llama"), tmp_path / "fsdp")
    prompt, u = torch.tensor([[5, 6, 7]]), torch.rand(1, 12, generator=torch.Generator().manual_seed(0))
    s = model.config.sampling
    expected = reference(tiny_base("llama"), prompt, auxiliaries=u, sampling=s, eos_token_id=[])
    assert_same_tokens(model.generate(prompt, max_new_tokens=12, auxiliaries=u, sampling=s, eos_token_id=[]), expected)


@pytest.mark.slow
def test_a_resumed_fsdp_run_ends_exactly_where_an_uninterrupted_one_does(setup, tmp_path):
    options = dict(fsdp=True, max_steps=6, checkpoint_interval=2, eval_interval=3)
    whole = _launch(setup, tmp_path / "whole", **options)
    _launch(setup, tmp_path / "killed", killed_at_checkpoint=3, **options)  # killed after the checkpoint of step 4
    assert [p.name for p in list_checkpoints(tmp_path / "killed.run")] == ["step-0000002", "step-0000004"]
    resumed = _launch(setup, tmp_path / "killed", resume=True, **options)
    strip = lambda log: [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in log]  # noqa: E731
    assert strip(resumed) == strip(whole)
    expected, got = _weights(tmp_path / "whole"), _weights(tmp_path / "killed")
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)


def test_fsdp_is_refused_in_one_process_and_with_a_separate_drafter(setup, tmp_path):
    root, data = setup
    with pytest.raises(ValueError, match="fsdp shards the model across processes and needs more than one"):
        distill(quick_config(data, tmp_path / "a", fsdp=True), base_model=tiny_base("llama"))
    with pytest.raises(ValueError, match="fsdp .* does not support a separate drafter_model"):
        DistillConfig(data=str(data), out=str(tmp_path / "b"), fsdp=True, drafter_model="small")
    with pytest.raises(ValueError, match="fsdp .* does not support a separate drafter_model"):
        distill(quick_config(data, tmp_path / "c", fsdp=True), base_model=tiny_base("llama"), drafter_model=object())


def test_the_decoder_layers_are_found_generically():
    for arch in ("llama", "gpt2"):
        base = tiny_base(arch)
        layers = decoder_layers(base)
        assert layers and all(type(m).__name__ in base._no_split_modules for m in layers)
    assert len(decoder_layers(tiny_base("llama"))) == tiny_base("llama").config.num_hidden_layers
