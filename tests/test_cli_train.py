"""``ptp pregenerate`` and ``ptp distill`` end to end, in-process and as DDP over two CPU processes (gloo)."""

from __future__ import annotations

import json
import os
import shutil
import string
import subprocess
import sys

import pytest

import ptp
from bench_support import char_tokenizer, save_tiny_model
from ptp.cli import main
from ptp.data import load_dataset

SETTINGS = "window_length=4 lora_rank=4 windows_per_row=6 batch_size=2 row_length=64 warmup_steps=1 log_interval=1"
SETTINGS += " eval_rows=4 checkpoint_interval=2 eval_interval=2"
TRAIN = [a for s in SETTINGS.split() for a in ("--set", s)] + ["--max-steps", "4", "--device", "cpu", "--no-progress"]


def _distill(model_dir, data_dir, out, *extra):
    """``ptp distill`` arguments (temporary paths hold no spaces)."""
    return f"distill --model {model_dir} --data {data_dir} --out {out}".split() + TRAIN + list(extra)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def data_dir(model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    prompts = root / "prompts.jsonl"
    rows = [{"prompt": f"def f{i}(x):"} for i in range(6)] + [{"turns": ["Write a poem.", "Shorter."]}]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    options = "--n-per-prompt 2 --max-new-tokens 16 --prompts-per-shard 3 --device cpu --no-progress"
    main(f"pregenerate --model {model_dir} --prompts {prompts} --out {root / 'data'} {options}".split())
    return root / "data"


def test_pregenerate_records_the_tokenizer_and_the_sampling_configuration(data_dir):
    data = load_dataset(data_dir)
    assert len(data.documents) == 14 and data.sampling == ptp.SamplingConfig(temperature=0.7, top_k=50, top_p=0.95)
    assert data.metadata["tokenizer"]["fingerprint"] and len(data.metadata["shards"]) == 3


def test_distill_writes_an_adapter_and_prints_its_evaluation(model_dir, data_dir, tmp_path, capsys):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"lora_alpha": 8.0, "seed": 3}))
    main(_distill(model_dir, data_dir, tmp_path / "adapter", "--config", str(config)))
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["adapter"] == str(tmp_path / "adapter") and len(printed["histogram"]) == 5
    model = ptp.PTPModel.from_pretrained(str(model_dir), tmp_path / "adapter")
    assert model.config.lora_alpha == 8.0 and model.config.acceptance_histogram == pytest.approx(printed["histogram"])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--data", "{tmp}/none"], "does not exist"),
        (["--set", "eval_interval=99"], "beyond the run"),
        (["--set", "nonsense=1"], "expected key=value"),
    ],
)
def test_distill_errors_are_one_line_messages(model_dir, data_dir, tmp_path, extra, message):
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    with pytest.raises(SystemExit, match=message):
        main(_distill(model_dir, data_dir, tmp_path / "a", *extra))


def test_pregenerate_errors_are_one_line_messages(model_dir, tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(SystemExit, match="ptp pregenerate: .* holds no prompts"):
        main(f"pregenerate --model {model_dir} --prompts {tmp_path / 'empty.jsonl'} --out {tmp_path / 'd'}".split())


def test_pregenerate_prints_its_sampling_speed(model_dir, tmp_path, capsys):
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "def f(x):"}) + "\n")
    options = "--n-per-prompt 2 --max-new-tokens 8 --device cpu --no-progress"
    main(f"pregenerate --model {model_dir} --prompts {tmp_path / 'p.jsonl'} --out {tmp_path / 'd'} {options}".split())
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 2 <= printed["new_tokens"] <= 16 and printed["new_tokens_per_s"] > 0


def test_raw_text_through_the_command(model_dir, tmp_path):
    (tmp_path / "corpus.txt").write_text("first document\n\nsecond one\n")
    corpus, out = tmp_path / "corpus.txt", tmp_path / "raw"
    main(f"pregenerate --model {model_dir} --prompts {corpus} --out {out} --raw --split paragraph".split())
    tokenizer = char_tokenizer()
    assert [tokenizer.decode(d.tokens) for d in load_dataset(out).documents] == ["first document</s>", "second one</s>"]


@pytest.mark.parametrize(
    "extra", [[], ["--set", "fsdp=true"], ["--max-time", "1e-6"]], ids=["ddp", "fsdp", "ddp with a time limit"]
)
def test_distill_runs_as_ddp_over_two_cpu_processes(model_dir, data_dir, tmp_path, extra):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "ptp.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        launcher + _distill(model_dir, data_dir, tmp_path / "adapter", *extra), capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert len([line for line in done.stdout.splitlines() if line.startswith("{")]) == 1  # the main process reports
    assert json.loads((tmp_path / "adapter.run" / "config.json").read_text())["processes"] == 2
    log = [json.loads(line) for line in (tmp_path / "adapter.run" / "metrics.jsonl").read_text().splitlines()]
    rows_seen = [4] if "--max-time" in extra else [4, 8, 12, 16]  # 2 processes x 2 rows a step; both stop together
    assert [r["rows_seen"] for r in log if r["split"] == "train"] == rows_seen
    assert ptp.PTPModel.from_pretrained(str(model_dir), tmp_path / "adapter").config.acceptance_histogram is not None


def test_evaluate_reproduces_distills_numbers_and_writes_the_histogram(model_dir, data_dir, tmp_path, capsys):
    adapter = tmp_path / "adapter"
    main(_distill(model_dir, data_dir, adapter))
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    settings = "--rows 4 --windows-per-row 6 --batch-size 2 --row-length 64 --device cpu"
    command = f"evaluate --model {model_dir} --adapter {adapter} --data {data_dir} {settings}".split()
    main(command + ["--out", str(tmp_path / "metrics.json")])
    lines = capsys.readouterr().out.strip().splitlines()
    printed = json.loads(lines[-1])
    assert any(line.startswith("histogram") for line in lines[:-1])
    assert json.loads((tmp_path / "metrics.json").read_text()) == printed
    for key in ("correct_prefix", "histogram", "accuracy", "loss", "windows"):
        assert printed[key] == pytest.approx(trained[key])

    main(command + ["--split", "all", "--write-histogram"])
    everything = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved = json.loads((adapter / "ptp_config.json").read_text())["acceptance_histogram"]
    assert saved == pytest.approx(everything["histogram"]) and everything["rows"] >= printed["rows"]


def test_evaluate_takes_its_settings_from_the_run_unless_told_otherwise(model_dir, data_dir, tmp_path, capsys):
    adapter = tmp_path / "adapter"
    main(_distill(model_dir, data_dir, adapter))
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    main(f"evaluate --model {model_dir} --adapter {adapter} --data {data_dir} --device cpu".split())
    lines = capsys.readouterr().out.strip().splitlines()
    assert "adapter.run" in lines[0]
    printed = json.loads(lines[-1])
    for key in ("correct_prefix", "histogram", "accuracy", "loss", "windows"):
        assert printed[key] == pytest.approx(trained[key])
    main(f"evaluate --model {model_dir} --adapter {adapter} --data {data_dir} --device cpu --seed 7".split())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["loss"] != pytest.approx(trained["loss"])
    with pytest.raises(SystemExit, match="no run configuration at"):
        main(f"evaluate --adapter {adapter} --data {data_dir} --run-config {tmp_path}/none.json".split())


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--adapter", "{tmp}/none"], "ptp evaluate: .*not a PTP adapter directory"),
        (["--data", "{tmp}/none"], "ptp evaluate: .*does not exist"),
        (["--eval-fraction", "0"], "ptp evaluate: .*eval split .* is empty"),
        (["--model", "{tmp}/retokenized"], "ptp evaluate: .*tokenized by another tokenizer"),
    ],
)
def test_evaluate_errors_are_one_line_messages(model_dir, data_dir, tmp_path, extra, message):
    shutil.copytree(model_dir, tmp_path / "retokenized")  # the same model, its characters numbered backwards
    char_tokenizer(string.printable[::-1]).save_pretrained(tmp_path / "retokenized")
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    main(_distill(model_dir, data_dir, tmp_path / "adapter"))
    command = f"evaluate --model {model_dir} --adapter {tmp_path / 'adapter'} --data {data_dir} --device cpu"
    with pytest.raises(SystemExit, match=message):
        main(command.split() + extra)


def test_prompts_come_from_the_split_that_ptp_train_holds_out(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(20):
        (corpus / f"m{i:02d}.py").write_text("".join(f"x{i}_{k} = {k}\n" for k in range(6)))
    out = {}
    for split in ("train", "held-out"):
        path = tmp_path / f"{split}.jsonl"
        main(f"prompts --data {corpus} --held-out-fraction 0.1 --split {split} --count 30 --out {path}".split())
        out[split] = [json.loads(line)["prompt"] for line in path.read_text().splitlines()]
        assert len(out[split]) == 30
    modules = {split: {p.split("_")[0] for p in prompts} for split, prompts in out.items()}
    assert modules["held-out"] == {"x0", "x1"} and not modules["held-out"] & modules["train"]
    with pytest.raises(SystemExit, match="ptp prompts: .*does not exist"):
        main(f"prompts --data {tmp_path / 'none'} --split train --count 1 --out {tmp_path / 'p.jsonl'}".split())
    with pytest.raises(SystemExit, match="ptp prompts: the held-out split .* is empty"):
        main(f"prompts --data {corpus} --held-out-fraction 0 --split held-out --count 1 --out {tmp_path / 'p'}".split())
