"""`ptp train --objective ar`: a tiny model trained on text files is saved as a normal model directory."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ptp.cli import main
from ptp.train.inverse import parallel_sample, sequential_sample, window_starts
from ptp.train.pretrain import PretrainConfig, text_rows


def test_text_rows_cut_the_stream_into_full_rows():
    rows = text_rows([[1, 2, 3], [4, 5]], row_length=3, eos=0)
    assert rows.tokens.tolist() == [[1, 2, 3], [0, 4, 5]]
    assert rows.positions.tolist() == [[0, 1, 2], [0, 1, 2]]
    with pytest.raises(ValueError, match="fewer than one row"):
        text_rows([[1]], row_length=8, eos=None)


def test_held_out_loss_is_the_mean_over_every_counted_target_whatever_the_batches():
    from ptp.data.packing import PackedRows
    from ptp.train.pretrain import build_model, held_out_loss

    config = PretrainConfig(out="x", hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1,
                            intermediate_size=32, context=64, row_length=16)  # fmt: skip
    model = build_model(config, vocab_size=50, special={})
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 50, (5, 16), generator=g)
    document = torch.zeros(5, 16, dtype=torch.long)
    document[4, 6:] = -1  # the last row is mostly padding: few targets
    document[2, 8:] = 1  # two documents in a row
    positions = torch.arange(16).expand(5, 16).clone()
    positions[2, 8:] -= 8
    rows = PackedRows(tokens=tokens, positions=positions, document=document, targets=document >= 0)
    whole = held_out_loss(model, rows, batch_size=5, bf16=False)
    assert held_out_loss(model, rows, batch_size=2, bf16=False) == pytest.approx(whole, rel=1e-5)  # ragged last batch


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="architecture"):
        PretrainConfig(out="x", architecture="bert")
    with pytest.raises(ValueError, match="row_length"):
        PretrainConfig(out="x", row_length=4096, context=1024)
    with pytest.raises(ValueError, match="objective"):
        PretrainConfig(out="x", objective="mtp")


def _train(corpus_dir, out, *extra: str) -> int:
    corpus_dir.mkdir(exist_ok=True)
    for i in range(6):
        (corpus_dir / f"m{i}.py").write_text("".join(f"def f{j}(x):\n    return x + {j}\n" for j in range(40)))
    return main(
        ["train", "--objective", "ar", "--data", str(corpus_dir), "--out", str(out), "--vocab-size", "300",
         "--hidden-size", "32", "--num-layers", "1", "--num-heads", "2", "--num-kv-heads", "1",
         "--intermediate-size", "64", "--row-length", "64", "--context", "128", "--batch-size", "4",
         "--steps", "30", "--learning-rate", "0.01", "--warmup-steps", "2", "--device", "cpu", "--no-progress", *extra]
    )  # fmt: skip


def test_train_command_writes_a_loadable_model(tmp_path, capsys):
    out = tmp_path / "model"
    assert _train(tmp_path / "corpus", out) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 30
    # Uniform over 300 tokens is ln 300 = 5.7 nats; the repetitive corpus is learned far below that.
    assert summary["final_train_loss"] < 4.0 and summary["held_out_loss"] < 4.0
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.vocab_size == len(tokenizer) and model.config.model_type == "llama"
    ids = tokenizer("def f1(x):\n", return_tensors="pt").input_ids
    assert torch.isfinite(model(ids).logits).all()


def test_a_time_limit_ends_training_early_and_still_writes_the_model_and_its_summary(tmp_path, capsys):
    assert _train(tmp_path / "corpus", tmp_path / "model", "--max-time", "1e-6") == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 1 and summary["train_tokens_seen"] == 4 * 64
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "model").config.model_type == "llama"


def test_train_ptp_objective_writes_a_c_ptp_model_that_decodes_itself_exactly_and_reports_its_evaluation(
    tmp_path, capsys
):
    import ptp

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(6):
        (corpus / f"m{i}.py").write_text("".join(f"def f{j}(x):\n    return x + {j}\n" for j in range(40)))
    shape = ["--vocab-size", "300", "--hidden-size", "32", "--num-layers", "1", "--num-heads", "2",
             "--num-kv-heads", "1", "--intermediate-size", "64", "--row-length", "64", "--context", "128",
             "--batch-size", "4", "--learning-rate", "0.01", "--warmup-steps", "2", "--device", "cpu",
             "--no-progress", "--data", str(corpus)]  # fmt: skip
    assert main(["train", "--objective", "ar", "--out", str(tmp_path / "ar"), "--steps", "30", *shape]) == 0
    capsys.readouterr()
    code = main(["train", "--objective", "ptp", "--out", str(tmp_path / "ptp"), "--steps", "15", "--window-length",
                 "4", "--windows-per-row", "4", "--lora-rank", "4", "--tokenizer", str(tmp_path / "ar"),
                 "--compare-to", str(tmp_path / "ar"), *shape])  # fmt: skip
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    evaluation = summary["ptp_evaluation"]
    # Slot cross-entropy plus next-token loss: both start near ln 300 = 5.7 nats.
    assert summary["final_train_loss"] < 2 * 5.0
    assert len(evaluation["perplexity_by_position"]) == 4 and evaluation["windows"] > 0
    assert all(1.0 < p < 300.0 for p in evaluation["perplexity_by_position"])
    assert 1.0 < evaluation["teacher_perplexity"] < 300.0 and 0.0 <= evaluation["teacher_agreement"] <= 4.0

    model = ptp.PTPModel.from_pretrained(None, tmp_path / "ptp")
    assert model.config.mode == "categorical" and model.config.train_base
    ids = AutoTokenizer.from_pretrained(tmp_path / "ptp")("def f1(x):\n", return_tensors="pt").input_ids
    u = torch.rand(1, 16, generator=torch.Generator().manual_seed(0))
    got = model.generate(ids, max_new_tokens=16, auxiliaries=u, eos_token_id=[])
    expected = ptp.sample_autoregressive(model, ids, auxiliaries=u, max_new_tokens=16, eos_token_id=[])
    assert torch.equal(got.sequences, expected.sequences)
    # Its parallel C-PTP sample (one pass per window) is its own sequential C-PTP sampling with the same u's.
    rows = text_rows([ids[0].tolist() * 3], row_length=ids.shape[1] * 3, eos=None)
    starts = window_starts(rows, 3, torch.Generator().manual_seed(1))
    u = torch.rand(1, 12, generator=torch.Generator().manual_seed(2))
    assert torch.equal(parallel_sample(model, rows, starts, u), sequential_sample(model, rows, starts, u))

    # A ptp model continues as a ptp model (its own base and adapter), never as a plain ar one.
    resumed = tmp_path / "ptp2"
    assert main(["train", "--objective", "ptp", "--init-from", str(tmp_path / "ptp"), "--out", str(resumed),
                 "--steps", "2", "--window-length", "4", "--windows-per-row", "2", *shape]) == 0  # fmt: skip
    assert ptp.PTPModel.from_pretrained(None, resumed).config.window_length == 4
    # ptp generate: the ptp model on its own (it verifies itself), and as a separate drafter of the ar model.
    capsys.readouterr()
    for extra in (["--adapter", str(tmp_path / "ptp")], ["--model", str(tmp_path / "ar"), "--drafter-adapter",
                                                        str(tmp_path / "ptp")]):  # fmt: skip
        generate = ["generate", "--prompt", "def f1(x):", "--max-new-tokens", "12", "--device", "cpu", "--seed", "3"]
        assert main([*generate, "--sampling", "1.0,-,-", *extra]) == 0
        assert "tokens per call]" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="pass base_model"):
        main([*generate, "--adapter", str(tmp_path / "ptp"), "--model", str(tmp_path / "ar")])
    with pytest.raises(SystemExit, match="ptp train: .*objective 'ptp'"):
        main(["train", "--objective", "ar", "--init-from", str(tmp_path / "ptp"), "--out", str(tmp_path / "ar2"),
              *shape])  # fmt: skip
