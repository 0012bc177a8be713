"""``ptp.science``: every experiment end to end on a tiny random teacher (a few distillation steps, two Spec-Bench
questions), its tables and plot; a stopped experiment resumes and skips what is finished; a run whose engine output
differs from one-token decoding is reported as a failure."""

from __future__ import annotations

import json

import pytest

import ptp.science.runs as runs
from bench_support import SPEC_BENCH, char_tokenizer, tiny_llama, write_jsonl
from ptp.cli import main
from ptp.science import EXPERIMENTS, ExperimentConfig, run_experiment
from ptp.science.experiments import experiment, select
from ptp.science.report import stats
from train_support import make_data

PNG = b"\x89PNG"
#: A distillation of a few CPU steps on tiny rows (train_support.quick_config's settings).
DISTILL = dict(window_length=4, lora_rank=4, windows_per_row=6, batch_size=2, row_length=48, warmup_steps=0,
               learning_rate=1e-2, eval_interval=0, eval_fraction=0.2, eval_rows=4, log_interval=1,
               checkpoint_interval=1)  # fmt: skip
TRAIN = dict(batch_size=2, row_length=32, warmup_steps=0, learning_rate=1e-2, window_length=4, windows_per_row=2,
             lora_rank=4, held_out_fraction=0.3)  # fmt: skip


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A teacher with a tokenizer, its completions, a Spec-Bench-like file, text files and the base settings."""
    root = tmp_path_factory.mktemp("science")
    tokenizer = char_tokenizer()
    teacher = tiny_llama(len(tokenizer))
    teacher.save_pretrained(root / "teacher")
    tokenizer.save_pretrained(root / "teacher")
    data = make_data(root / "data", teacher, prompts=6, n_per_prompt=2, max_new_tokens=12)
    (root / "text").mkdir()
    for i in range(4):
        (root / "text" / f"m{i}.py").write_text("".join(f"def f{j}(x):\n    return x + {j}\n" for j in range(12)))
    (root / "distill.json").write_text(json.dumps(DISTILL))
    (root / "train.json").write_text(json.dumps(TRAIN))
    return {
        "model": str(root / "teacher"),
        "data": str(data),
        "prompts": str(write_jsonl(root / "question.jsonl", SPEC_BENCH)),
        "distill_config": str(root / "distill.json"),
        "train_config": str(root / "train.json"),
        "text": str(root / "text"),
    }


def _config(inputs, out, **overrides) -> ExperimentConfig:
    options = dict(out=str(out), **inputs, steps=2, seeds=(0,), questions=2, eval_rows=4, max_new_tokens=6, warmup=0,
                   drafter_sizes=("16x1", "32x1"), device="cpu", precision="float32", progress=False)  # fmt: skip
    options.update(overrides)
    return ExperimentConfig(**options)


def _check_outputs(results: dict, out, name: str) -> None:
    assert results["complete"] and not results["failures"]
    assert json.loads((out / "results.json").read_text())["variants"].keys() == results["variants"].keys()
    assert (out / "results.md").read_text().startswith(f"# Experiment `{name}`")
    assert (out / f"{name}.png").read_bytes().startswith(PNG)


def test_stats_are_the_mean_and_sample_deviation_of_the_numbers_given():
    assert stats([1.0, 2.0, 3.0]) == {"mean": 2.0, "std": 1.0, "n": 3}
    assert stats([4.0, None]) == {"mean": 4.0, "std": 0.0, "n": 1}
    assert stats([None]) is None


def test_the_registry_has_one_experiment_per_claim_and_refuses_unknown_names(inputs, tmp_path):
    assert set(EXPERIMENTS) == {"dependence", "window", "embedding", "beta", "size", "reads_u", "teacher_free"}
    config = _config(inputs, tmp_path)
    dependence = [v.name for v in select(experiment("dependence"), config)]
    assert len(dependence) == 16 and "one_hot-T0" in dependence and "mode_chain-T1.5" in dependence
    embedding = [v.name for v in select(experiment("embedding"), config)]
    # six embeddings in two bin orders, and the four feature codes of u in every layer in both orders
    assert len(embedding) == 20 and "thermometer-probability-every-layer" in embedding
    assert [v.name for v in select(experiment("size"), config)][-2:] == ["drafter-16x1", "drafter-32x1"]
    with pytest.raises(ValueError, match="unknown experiment 'speed'"):
        run_experiment("speed", config)
    with pytest.raises(ValueError, match="has no variant"):
        run_experiment("beta", _config(inputs, tmp_path, variants=("beta7",)))
    with pytest.raises(ValueError, match="pass prompts"):
        run_experiment("beta", _config(inputs, tmp_path, prompts=None))
    with pytest.raises(ValueError, match="seeds must be distinct"):
        _config(inputs, tmp_path, seeds=(1, 1))


def test_the_experiment_command_names_every_experiment(capsys):
    with pytest.raises(SystemExit):
        main(["experiment", "--help"])
    usage = " ".join(capsys.readouterr().out.split())
    assert all(name in usage for name in EXPERIMENTS)


@pytest.mark.slow
def test_dependence_compares_the_modes_per_temperature_over_seeds(inputs, tmp_path):
    variants = ("one_hot-T0", "independent-T0", "one_hot-T1.5", "independent-T1.5", "categorical-T1.5")
    results = run_experiment("dependence", _config(inputs, tmp_path, seeds=(0, 1), variants=variants))
    _check_outputs({**results, "complete": True}, tmp_path, "dependence")
    hot = results["variants"]["categorical-T1.5"]
    assert hot["seeds"] == [0, 1] and hot["tokens_per_call"]["n"] == 2 and hot["tokens_per_call"]["mean"] >= 1
    assert set(hot["categories"]) == {"writing", "coding"} and len(hot["accuracy"]) == 4
    assert hot["runs"][0]["settings"]["sampling"]["temperature"] == 1.5
    assert hot["runs"][0]["bench"]["sampling"].startswith("T=1.5")
    greedy = results["variants"]["one_hot-T0"]["runs"][0]
    assert greedy["settings"]["sampling"]["do_sample"] is False and greedy["settings"]["allow_foreign_data"]
    assert not results["complete"]  # the temperatures 0.7 and 1.0 were not run
    report = (tmp_path / "results.md").read_text()
    assert "| categorical-T1.5 | 2 |" in report and "Fewer seeds than the claim needs" in report


@pytest.mark.slow
@pytest.mark.parametrize("name", ["window", "embedding", "beta"])
def test_each_variant_is_distilled_evaluated_and_benchmarked(inputs, tmp_path, name):
    results = run_experiment(name, _config(inputs, tmp_path, steps=1))
    _check_outputs(results, tmp_path, name)
    for variant in results["variants"].values():
        (run,) = variant["runs"]
        assert run["bench"]["matches_ar"] and run["bench"]["tokens_per_call"] >= 1
        for key, value in variant["settings"].items():
            assert run["settings"][key] == value
    if name == "window":
        assert len(results["variants"]["N32"]["accuracy"]) == 32


def test_reads_u_trains_a_first_slot_alone_and_measures_it_on_held_out_windows_only(inputs, tmp_path):
    results = run_experiment("reads_u", _config(inputs, tmp_path, prompts=None))
    _check_outputs(results, tmp_path, "reads_u")
    variants = results["variants"]
    assert list(variants) == ["independent", "input", "every-layer", "input-fast-u", "every-layer-fast-u"]
    for name, variant in variants.items():
        (run,) = variant["runs"]
        assert run["settings"]["window_length"] == 1 and run["settings"]["first_slot_token"]
        assert run["bench"] is None and not (tmp_path / name / "seed-0" / "bench").exists()
        assert [p["step"] for p in run["curve"]] == [2] and variant["first_slot_curve"][0]["step"] == 2
        assert len(variant["accuracy"]) == 1 and variant["tokens_per_call"] is None
    assert variants["every-layer-fast-u"]["runs"][0]["settings"]["u_learning_rate"] == 4 * DISTILL["learning_rate"]
    assert variants["every-layer"]["runs"][0]["settings"]["u_every_layer"]
    assert variants["independent"]["runs"][0]["settings"]["mode"] == "independent"
    report = (tmp_path / "results.md").read_text()
    assert "| every-layer-fast-u | 1 |" in report and "Slot 1 right on held-out windows during training" in report


@pytest.mark.slow
def test_size_counts_the_parameters_of_lora_ranks_and_separate_drafters(inputs, tmp_path):
    results = run_experiment("size", _config(inputs, tmp_path, steps=1))
    _check_outputs(results, tmp_path, "size")
    variants = results["variants"]
    ranks = [variants[f"lora-r{r}"]["trained_parameters"] for r in (8, 32, 128)]
    assert ranks[0] < ranks[1] < ranks[2]
    assert variants["lora-r8"]["runs"][0]["settings"]["lora_alpha"] == 8 * 64 / 4  # the base settings' alpha / rank
    small, large = variants["drafter-16x1"], variants["drafter-32x1"]
    assert small["drafting_parameters"] < large["drafting_parameters"] < variants["lora-r8"]["drafting_parameters"]
    assert small["runs"][0]["bench"]["method"] == "drafter" and small["call_cost"]["mean"] > 0
    assert (tmp_path / "drafters" / "16x1" / "config.json").is_file()


@pytest.mark.slow
def test_teacher_free_trains_ar_and_ptp_from_the_same_model_and_compares_them(inputs, tmp_path):
    results = run_experiment("teacher_free", _config(inputs, tmp_path))
    _check_outputs(results, tmp_path, "teacher_free")
    ar, ours = results["variants"]["ar"], results["variants"]["ptp"]
    assert ar["next_token_perplexity"]["mean"] > 1 and ar["perplexity_by_position"] is None
    assert len(ours["perplexity_by_position"]) == 4 and ours["agreement_with_ar"]["mean"] >= 0
    assert ours["ar_perplexity"]["mean"] == pytest.approx(ar["next_token_perplexity"]["mean"], rel=1e-4)
    assert ours["runs"][0]["settings"]["init_from"] == inputs["model"]
    with pytest.raises(ValueError, match="run the ar variant first"):
        run_experiment("teacher_free", _config(inputs, tmp_path / "alone", variants=("ptp",)))


@pytest.mark.slow
def test_a_stopped_experiment_resumes_and_skips_what_is_finished(inputs, tmp_path, monkeypatch):
    real, calls = runs.distill, []

    def distill(config):
        calls.append((config.seed, config.beta, config.resume))
        stop = len(calls) == 1  # the first run stops after one step, as a killed or time-limited run would
        return real(config if not stop else type(config).from_dict({**config.to_dict(), "max_time": 1e-9}))

    monkeypatch.setattr(runs, "distill", distill)
    config = _config(inputs, tmp_path, variants=("beta0.3", "beta1"))
    first = run_experiment("beta", config)
    assert not first["complete"] and first["variants"]["beta0.3"]["seeds"] == [] and first["variants"]["beta1"]["seeds"]
    assert calls == [(0, 0.3, False), (0, 1.0, False)]
    assert "| beta0.3 | 0 |" in (tmp_path / "results.md").read_text()

    benches = []
    monkeypatch.setattr(runs, "run_bench", lambda bench, real=runs.run_bench: benches.append(bench) or real(bench))
    second = run_experiment("beta", config)
    assert calls[2:] == [(0, 0.3, True)]  # resumed from its checkpoint; beta1 was not run again
    assert [b.adapter for b in benches] == [str(tmp_path / "beta0.3" / "seed-0" / "adapter")]
    assert second["variants"]["beta0.3"]["seeds"] == [0]
    assert second["variants"]["beta1"]["runs"] == first["variants"]["beta1"]["runs"]
    assert not second["complete"]  # beta3 is not run yet

    assert run_experiment("beta", config)["variants"] == second["variants"] and len(calls) == 3 and len(benches) == 1
    with pytest.raises(ValueError, match="other settings"):
        run_experiment("beta", _config(inputs, tmp_path, variants=("beta1",), steps=3))


@pytest.mark.slow
def test_an_engine_output_that_differs_from_ar_is_reported_as_a_failure(inputs, tmp_path, monkeypatch, capsys):
    real = runs.run_bench

    def differing(bench):
        summary = real(bench)
        entry = summary["methods"]["ptp"]
        entry["all"]["matches_ar"] = False
        entry["ar_mismatches"] = [{"question_id": 81, "turn": 0, "first_difference": 3, "tokens": 6, "ar_tokens": 6}]
        return summary

    monkeypatch.setattr(runs, "run_bench", differing)
    args = ["experiment", "beta", "--out", str(tmp_path), "--variants", "beta1", "--seeds", "0", "--steps", "1",
            "--questions", "1", "--max-new-tokens", "4", "--warmup", "0", "--device", "cpu", "--precision", "float32",
            "--no-progress", "--set", "windows_per_row=4"]  # fmt: skip
    args += [item for key in ("model", "data", "prompts", "distill_config") for item in (f"--{key.replace('_', '-')}",
             inputs[key])]  # fmt: skip
    assert main(args) == 1
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["failures"][0]["variant"] == "beta1" and last["failures"][0]["mismatches"][0]["first_difference"] == 3
    report = (tmp_path / "results.md").read_text()
    assert "FAILURES" in report and "| beta1 | 1 |" in report and "| NO |" in report
    settings = json.loads((tmp_path / "beta1" / "seed-0" / "result.json").read_text())["settings"]
    assert settings["windows_per_row"] == 4
