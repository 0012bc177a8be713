"""``ptp bench`` end to end on tiny random models: every method, both prompt formats, output files, exactness
against ``ar``, and the bad inputs that must fail before any timing starts."""

from __future__ import annotations

import json

import pytest

import ptp.bench.harness as harness
from bench_support import build_bench_files
from ptp.bench import BenchConfig, run_bench
from ptp.bench.methods import METHODS
from ptp.bench.report import BASELINES
from ptp.cli import main
from ptp.sampling import SamplingConfig

PNG = b"\x89PNG"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return build_bench_files(tmp_path_factory.mktemp("bench"))


def _config(files, out, **overrides) -> BenchConfig:
    options = dict(
        prompts=str(files["spec"]),
        out=str(out),
        model=str(files["model"]),
        adapter=str(files["adapter"]),
        independent_adapter=str(files["independent"]),
        draft_model=str(files["draft"]),
        drafter_adapter=str(files["drafter"]),
        drafter_model=str(files["draft"]),
        max_new_tokens=12,
        repeats=2,
        warmup=1,
        device="cpu",
        progress=False,
        sampling=SamplingConfig.greedy(),
    )
    options.update(overrides)
    return BenchConfig(**options)


def test_greedy_every_method_equals_ar_and_writes_every_output(files, tmp_path):
    summary = run_bench(_config(files, tmp_path))
    assert list(summary["methods"]) == list(METHODS)
    for method, entry in summary["methods"].items():
        assert entry["all"]["matches_ar"] is True, method
        assert entry["all"]["compared_turns"] == 3
        assert entry["expected_to_match_ar"] is True
        assert entry["all"]["tau"] >= 1.0
    ar = summary["methods"]["ar"]
    assert ar["all"]["tau"] == 1.0 and ar["all"]["speedup_over_ar"] == 1.0
    assert set(ar["categories"]) == {"writing", "coding"}
    assert summary["methods"]["hf"]["all"]["speedup_over_hf"] == 1.0
    assert summary["methods"]["hf-static"]["all"]["speedup_over_hf-static"] == 1.0
    assert set(summary["warmup_s"]) == set(METHODS) and all(s > 0 for s in summary["warmup_s"].values())
    assert summary["environment"]["torch"] and summary["environment"]["transformers"]

    for method in METHODS:
        lines = [json.loads(line) for line in (tmp_path / "answers" / f"{method}.jsonl").read_text().splitlines()]
        assert [line["question_id"] for line in lines] == [81, 82]
        for line in lines:
            choice = line["choices"][0]
            assert line["model_id"] == f"model-{method}" and line["category"] in ("writing", "coding")
            assert len(choice["turns"]) == len(choice["new_tokens"]) == len(choice["wall_time"])
            assert sum(choice["accept_lengths"]) == sum(choice["new_tokens"])
            assert all(t > 0 for t in choice["wall_time"]) and len(choice["wall_time_repeats"][0]) == 2
        assert len(lines[0]["choices"][0]["turns"]) == 2
    assert json.loads((tmp_path / "summary.json").read_text())["methods"].keys() == summary["methods"].keys()
    assert "| ptp | all |" in (tmp_path / "summary.md").read_text()
    for name in ("accept_histogram", "speedup_by_category", "draft_accuracy"):
        assert (tmp_path / f"{name}.png").read_bytes().startswith(PNG)


def test_engine_methods_equal_ar_under_sampling_with_shared_auxiliaries(files, tmp_path):
    sampling = SamplingConfig(temperature=0.8, top_k=20, top_p=0.9)
    config = _config(
        files,
        tmp_path,
        prompts=str(files["plain"]),
        methods="ar,ptp,independent,drafter,hf,pld",
        sampling=sampling,
        max_new_tokens=16,
        repeats=1,
    )
    summary = run_bench(config)
    assert summary["sampling_greedy"] is False
    for method in ("ptp", "independent", "drafter"):
        entry = summary["methods"][method]
        assert entry["all"]["matches_ar"] is True and entry["expected_to_match_ar"] is True
    for method in ("hf", "pld"):
        assert summary["methods"][method]["expected_to_match_ar"] is False
    assert summary["config"]["sampling"] == sampling.describe()
    assert summary["methods"]["ptp"]["draft_acceptance"]["calls"] > 0


def _cli_argv(files, tmp_path, prompts: str, methods: str, extra: str = "") -> list[str]:
    options = f"--model {files['model']} --prompts {files[prompts]} --methods {methods} --out {tmp_path} {extra}"
    return ["bench", "--sampling", "greedy", "--device", "cpu", *options.split()]


def test_cli_prints_the_summary_json_last(files, tmp_path, capsys):
    argv = _cli_argv(files, tmp_path, "plain", "ar,hf", "--max-new-tokens 6 --repeats 1 --warmup 0 --no-progress")
    assert main(argv) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads(last)
    assert list(summary["methods"]) == ["ar", "hf"] and summary["methods"]["hf"]["all"]["matches_ar"] is True


def _untimed(value):
    """A summary without what depends on the clock."""
    if isinstance(value, dict):
        clock = ("wall_time", "tokens_per_s", "ms_per_call", *(f"speedup_over_{b}" for b in BASELINES))
        return {k: _untimed(v) for k, v in value.items() if k not in clock}
    return value


def test_a_killed_run_resumes_from_its_answers_and_ends_as_an_uninterrupted_one(files, tmp_path, monkeypatch):
    whole = run_bench(_config(files, tmp_path / "whole", repeats=1))
    answer, ran, armed = harness._run_question, [], [True]

    def killed_during_the_second_question(runner, question, index, *args):
        if armed and index == 1 and ran.count(1) == 2:  # two methods answered it, the third is killed
            armed.clear()
            raise KeyboardInterrupt
        ran.append(index)
        return answer(runner, question, index, *args)

    monkeypatch.setattr(harness, "_run_question", killed_during_the_second_question)
    with pytest.raises(KeyboardInterrupt):
        run_bench(_config(files, tmp_path / "killed", repeats=1))
    ran.clear()
    resumed = run_bench(_config(files, tmp_path / "killed", repeats=1, resume=True))
    assert ran == [1] * len(METHODS)  # only the unfinished question ran again, for every method
    assert _untimed(resumed["methods"]) == _untimed(whole["methods"])
    read = lambda run, m: [json.loads(x)["choices"][0]["token_ids"] for x in (run / "answers" / f"{m}.jsonl").open()]  # noqa: E731
    assert all(read(tmp_path / "killed", m) == read(tmp_path / "whole", m) for m in METHODS)

    ran.clear()
    again = run_bench(_config(files, tmp_path / "killed", repeats=1, resume=True))  # complete: only the summary
    assert ran == [] and _untimed(again["methods"]) == _untimed(whole["methods"])
    with pytest.raises(ValueError, match=r"other settings \(max_new_tokens: 12 then, 8 now\)"):
        run_bench(_config(files, tmp_path / "killed", repeats=1, max_new_tokens=8, resume=True))
    with pytest.raises(ValueError, match="nothing to resume"):
        run_bench(_config(files, tmp_path / "empty", resume=True))


@pytest.fixture
def no_timing(monkeypatch):
    """Bad input must be refused before the first timed generation."""

    def refuse(*args, **kwargs):
        raise AssertionError("timing started before the input was checked")

    monkeypatch.setattr(harness, "timed", refuse)


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"methods": "ar,eagle"}, ValueError, "unknown benchmark methods"),
        ({"prompts": "plain-text"}, ValueError, "expected either Spec-Bench"),
        ({"draft_model": "alien_draft"}, ValueError, "uses another tokenizer"),
        ({"adapter": "missing"}, FileNotFoundError, "--adapter .* does not exist"),
        ({"adapter": None, "methods": "ar,ptp"}, ValueError, "method 'ptp' needs --adapter"),
        ({"drafter_adapter": None, "methods": "ar,drafter"}, ValueError, "method 'drafter' needs --drafter-adapter"),
        ({"independent_adapter": "adapter"}, ValueError, "trained in mode 'one_hot', not 'independent'"),
        ({"adapter": "independent"}, ValueError, "is an independent-baseline adapter"),
        ({"categories": ("math",)}, ValueError, "categories \\['math'\\] are not in"),
        ({"max_new_tokens": 600}, ValueError, "exceeds the model's 512 positions"),
        ({"max_new_tokens": 0}, ValueError, "max_new_tokens must be an integer >= 1, got 0"),
    ],
)
def test_bad_input_fails_before_timing(files, tmp_path, no_timing, overrides, error, message):
    overrides = dict(overrides)
    for key in ("adapter", "independent_adapter", "draft_model", "prompts"):
        value = overrides.get(key)
        if value == "plain-text":
            (tmp_path / "prompts.txt").write_text("just a line of text\n")
            overrides[key] = str(tmp_path / "prompts.txt")
        elif isinstance(value, str):
            overrides[key] = str(files[value]) if value in files else str(tmp_path / value)
    with pytest.raises(error, match=message):
        run_bench(_config(files, tmp_path / "out", **overrides))
    assert not (tmp_path / "out").exists()


def test_cli_reports_bad_input_as_a_message(files, tmp_path):
    argv = _cli_argv(files, tmp_path, "spec", "ar,nope")
    with pytest.raises(SystemExit, match="ptp bench: unknown benchmark methods"):
        main(argv)
