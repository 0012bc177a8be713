"""The ``ptp`` command's surface: fast help, flags generated from the config dataclasses, the sampling flags, one-line
errors, and ``ptp generate`` over :func:`ptp.load`."""

from __future__ import annotations

import argparse
import dataclasses
import re
import subprocess
import sys

import pytest
import torch

import ptp
from bench_support import save_tiny_model
from ptp.cli import COMMANDS, build_parser, main
from ptp.flags import COMPUTED, config_fields

CONFIGS = [
    "ptp.train.config:DistillConfig",
    "ptp.train.pretrain:PretrainConfig",
    "ptp.bench.harness:BenchConfig",
    "ptp.data.pregeneration:PregenerateConfig",
    "ptp.serve.config:ServeConfig",
    "ptp.bench.serve_load:LoadConfig",
]


def test_help_imports_neither_torch_nor_transformers():
    script = f"""
import sys
import ptp, ptp.cli
ptp.cli.build_parser()
for command in [[]] + [[name] for name in {list(COMMANDS)!r}]:
    try:
        ptp.cli.main([*command, "--help"])
    except SystemExit as done:
        assert done.code == 0, command
heavy = sorted(name for name in ("torch", "transformers") if name in sys.modules)
assert not heavy, heavy
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage: ptp distill" in done.stdout and "--lora-rank" in done.stdout
    module = subprocess.run([sys.executable, "-m", "ptp.cli", "--help"], capture_output=True, text=True)
    assert module.returncode == 0 and "generate" in module.stdout


def test_the_package_exports_its_names_lazily():
    assert sorted(ptp.__all__) == ptp.__all__ and "load" in ptp.__all__
    for name in ptp.__all__:
        assert getattr(ptp, name) is not None
    from ptp import PTPModel, SamplingConfig

    assert PTPModel is ptp.model.ptp.PTPModel and SamplingConfig is ptp.sampling.SamplingConfig
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ptp.nope  # noqa: B018


def _options():
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        for action in sub._actions:
            if action.option_strings and action.help != argparse.SUPPRESS and "-h" not in action.option_strings:
                yield name, action


def test_every_option_says_its_default():
    missing = [f"{name} {action.option_strings[0]}" for name, action in _options()
               if "default" not in action.help and "(required)" not in action.help and not action.required]  # fmt: skip
    assert not missing


@pytest.mark.parametrize("target", CONFIGS)
def test_the_flags_read_the_dataclasses_as_python_declares_them(target):
    module, name = target.split(":")
    cls = getattr(__import__(module, fromlist=[name]), name)
    read = {f.name: f for f in config_fields(target)}
    assert list(read) == [f.name for f in dataclasses.fields(cls)]
    for f in dataclasses.fields(cls):
        assert read[f.name].annotation == f.type
        if read[f.name].default is dataclasses.MISSING:
            assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        elif read[f.name].default is not COMPUTED:
            assert read[f.name].default == f.default, f.name


def test_generated_flags_take_typed_values_and_leave_the_rest_to_the_dataclass():
    args = build_parser().parse_args(
        ["distill", "--max-steps", "5", "--no-progress", "--lora-alpha", "8", "--sampling", '{"temperature": 1.0}',
         "--target-modules", "q_proj", "--loss", "forward_kl"]
    )  # fmt: skip
    from ptp.flags import given

    assert given(args, args.fields) == {"max_steps": 5, "progress": False, "lora_alpha": 8.0, "loss": "forward_kl",
                                        "sampling": {"temperature": 1.0}, "target_modules": "q_proj"}  # fmt: skip
    bench = build_parser().parse_args(["bench", "--prompts", "p", "--out", "o", "--category", "a", "--category", "b",
                                       "--pld-tokens", "3", "--no-cuda-graph"])  # fmt: skip
    assert given(bench, bench.fields) == {"prompts": "p", "out": "o", "categories": ["a", "b"],
                                          "prompt_lookup_num_tokens": 3, "cuda_graph": False}  # fmt: skip
    serve = build_parser().parse_args(["serve", "--no-ptp", "--max-body-bytes", "10"])
    assert given(serve, serve.fields) == {"use_drafter": False, "max_body_bytes": 10}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--out", "o"])  # --prompts is required: BenchConfig has no default


def test_distill_rejects_an_unknown_key_in_one_line(tmp_path):
    with pytest.raises(SystemExit, match="ptp distill: override 'nonsense=1': expected key=value"):
        main(["distill", "--set", "nonsense=1"])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model"))


GENERATE = ["generate", "--prompt", "def f(x):", "--max-new-tokens", "8", "--device", "cpu", "--seed", "2"]


def test_generate_decodes_a_model_without_adapter_plainly(model_dir, capsys):
    assert main([*GENERATE, "--model", str(model_dir), "--no-drafter", "--temperature", "0.9", "--top-k", "0"]) == 0
    assert "tokens in" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="ptp generate: a model without a PTP adapter has no trained drafter"):
        main([*GENERATE, "--model", str(model_dir)])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--sampling", "0.7,5.5,0.9"], r"top_k must be a whole number >= 0 \(0: off\), got '5.5'"),
        (["--top-p", "1.5"], "top_p must be in"),
        (["--temperature", "-1"], "temperature must be a finite number >= 0"),
        (["--temperature", "nan"], "temperature must be a finite number >= 0"),
        (["--sampling", "greedy", "--top-k", "3"], "--sampling is the short form"),
        (["--adapter", "{tmp}/none"], "adapter .*none does not exist"),
        (["--drafter-adapter", "{tmp}/none"], "drafter .*none does not exist"),
    ],
)
def test_generate_errors_are_one_line_messages(model_dir, tmp_path, capsys, extra, message):
    """Values out of range are refused as the arguments are read (argparse's error line), the others as the command
    runs (``ptp generate: ...``); either way one line, no traceback."""
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    with pytest.raises(SystemExit) as done:
        main([*GENERATE, "--model", str(model_dir), "--no-drafter", *extra])
    shown = f"{done.value.code}\n{capsys.readouterr().err}"
    assert re.search(f"ptp generate: .*{message}", shown), shown
    assert "Traceback" not in shown


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_asking_for_cuda_without_a_gpu_is_a_one_line_error(model_dir):
    with pytest.raises(SystemExit, match="ptp generate: device 'cuda' was asked for but torch sees no CUDA GPU"):
        main([*GENERATE, "--model", str(model_dir), "--device", "cuda", "--no-drafter"])


def test_pregenerate_rejects_sampling_values_out_of_range(model_dir, tmp_path, capsys):
    (tmp_path / "p.jsonl").write_text('{"prompt": "x"}\n')
    command = ["pregenerate", "--model", str(model_dir), "--prompts", str(tmp_path / "p.jsonl"), "--out",
               str(tmp_path / "d")]  # fmt: skip
    with pytest.raises(SystemExit):
        main([*command, "--top-p", "1.5"])
    assert "ptp pregenerate: error: argument --top-p: top_p must be in (0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("command", ["pregenerate", "bench"])
@pytest.mark.parametrize(
    "content, message",
    [('{"prompt": "café"}\n'.encode("latin-1"), "is not UTF-8"), (b"", "no prompts"), (b"\n\n", "no prompts")],
)
def test_a_bad_prompt_file_is_a_one_line_error_that_names_it(model_dir, tmp_path, capsys, command, content, message):
    prompts, out = tmp_path / "p.jsonl", tmp_path / "out"
    prompts.write_bytes(content)
    extra = ["--methods", "ar"] if command == "bench" else []
    with pytest.raises(SystemExit) as done:
        main([command, "--model", str(model_dir), "--prompts", str(prompts), "--out", str(out), *extra])
    shown = f"{done.value.code}\n{capsys.readouterr().err}"
    assert f"ptp {command}: " in shown and str(prompts) in shown and message in shown, shown
    assert "Traceback" not in shown and not out.exists()


def test_a_missing_model_is_named_before_anything_loads(tmp_path, capsys):
    missing = tmp_path / "no-model"
    for extra in ([], ["--no-drafter"], ["--adapter", str(tmp_path)]):
        with pytest.raises(SystemExit, match=f"ptp generate: model {missing} does not exist"):
            main(["generate", "--prompt", "x", "--model", str(missing), *extra])


def test_threads_apply_to_the_command_and_are_restored(monkeypatch):
    import ptp.cli

    seen = []
    monkeypatch.setitem(ptp.cli.COMMANDS, "prompts", (ptp.cli._add_prompts, lambda args: seen.append(1) or 0))
    before = torch.get_num_threads()
    assert main(["prompts", "--split", "train", "--count", "1", "--out", "x"]) == 0 and seen
    # A command that computes takes --threads; the count holds while it runs and is restored after.
    monkeypatch.setitem(ptp.cli.COMMANDS, "demo", (ptp.cli._add_demo, lambda args: seen.append(torch.get_num_threads())
                                                   or 0))  # fmt: skip
    assert main(["demo", "--threads", "1"]) == 0 and seen[-1] == 1 and torch.get_num_threads() == before


def test_generate_without_a_model_decodes_the_default_teacher_plainly_while_no_drafter_ships(
    model_dir, tmp_path, monkeypatch, capsys
):
    import ptp.default_model as default_model
    from ptp.chat import NO_SHIPPED_DRAFTER

    monkeypatch.setattr(default_model, "adapter_paths", lambda: {"adapter": tmp_path / "none"})
    monkeypatch.setattr(default_model, "teacher_dir", lambda: model_dir)
    assert main(GENERATE) == 0
    captured = capsys.readouterr()
    assert NO_SHIPPED_DRAFTER in captured.err and "1.00 tokens per call" in captured.out
    assert main([*GENERATE, "--no-drafter"]) == 0
    assert NO_SHIPPED_DRAFTER not in capsys.readouterr().err


def test_generate_decodes_with_the_threads_chosen_for_its_model(model_dir, monkeypatch):
    import ptp.runtime

    chosen = []
    monkeypatch.setattr(ptp.runtime, "decoding_threads", lambda model=None: chosen.append(model) or 1)
    assert main([*GENERATE, "--model", str(model_dir), "--no-drafter"]) == 0
    assert len(chosen) == 1 and isinstance(chosen[0], ptp.PTPModel)
    assert main([*GENERATE, "--model", str(model_dir), "--no-drafter", "--threads", "1"]) == 0
    assert len(chosen) == 1


def test_generate_compiles_its_step_when_asked_and_says_so(model_dir, monkeypatch, capsys):
    import ptp.decode.engine as engine

    asked = []
    original = engine.generate
    monkeypatch.setattr(engine, "generate", lambda *a, **k: asked.append(k["compile"]) or original(*a, **k))
    assert main([*GENERATE, "--model", str(model_dir), "--no-drafter", "--compile"]) == 0
    assert asked == [True] and "compiling the decoding step" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["generate", "--prompt", "x"], ["demo"], ["chat"]])
@pytest.mark.parametrize(
    "extra, message",
    [
        (["--max-new-tokens", "0"], "argument --max-new-tokens: a whole number >= 1, not '0'"),
        (["--max-new-tokens", "-5"], "argument --max-new-tokens: a whole number >= 1, not '-5'"),
        (["--sampling", "0.7,5.5,0.9"], "top_k must be a whole number >= 0 (0: off), got '5.5'"),
        (["--top-p", "1.5"], "top_p must be in"),
    ],
)
def test_a_bad_value_is_refused_before_any_model_loads(monkeypatch, capsys, command, extra, message):
    import ptp.chat
    import ptp.default_model
    import ptp.loading

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    for module, name in ((ptp.loading, "load"), (ptp.default_model, "load_default"), (ptp.chat, "load_chat_model")):
        monkeypatch.setattr(module, name, refuse)
    with pytest.raises(SystemExit) as done:
        main([*command, *extra])
    assert message in f"{done.value.code}{capsys.readouterr().err}"
