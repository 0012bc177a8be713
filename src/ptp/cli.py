"""The ``ptp`` command: thin adapters over the Python API, one function per subcommand.

Each subcommand is a ``_cmd_<name>(args)`` function plus an ``_add_<name>(subparsers)`` that declares its arguments;
``COMMANDS`` lists them. Where a command has a config dataclass its flags are generated from the fields
(:mod:`ptp.flags`: type, default and help come from the declaration); the others declare a few flags by hand. No logic
lives only here: every command is one call into the API, and :func:`main` turns a ValueError or an OSError into a
one-line ``ptp <command>: message``.

Nothing heavy is imported at the top: ``ptp --help`` and ``ptp <command> --help`` load neither torch nor
transformers; each command imports what it runs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from contextlib import nullcontext
from pathlib import Path

from ptp.flags import add_config_flags, config_fields, given

ADAPTERS_SAMPLING = "the adapter's trained configuration"


# ------------------------------------------------------------------------------------------- shared options
def _thread_count(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a count or auto, not {text!r}") from None


def _add_threads(p, default: str = "torch's choice") -> None:
    p.add_argument(
        "--threads",
        type=_thread_count,
        help=f"CPU threads of torch: a count, or auto (one on a machine of few cores; see ptp.runtime) "
        f"(default: {default})",
    )


def _threads_asked(args) -> int | str:
    """``--threads`` of a command that decodes: the count given, else ``auto`` (chosen for its model)."""
    return "auto" if args.threads is None else args.threads


def _decoding_threads(args, model):
    """``--threads`` of a command that decodes, where ``auto`` (the default) is chosen for ``model``."""
    from ptp.runtime import cpu_threads

    return cpu_threads(_threads_asked(args), model)


def _new_tokens(text: str) -> int:
    """A count of new tokens, >= 1: checked as the arguments are read, before any model loads."""
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"a whole number >= 1, not {text!r}")
    return count


def _checked(name: str, kind, allowed, what: str):
    """An argparse type: ``kind(text)`` where ``allowed`` holds, else a one-line error saying what ``name`` must be
    (the sampling flags are checked as the arguments are read, before torch is imported)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not allowed(value):
            raise argparse.ArgumentTypeError(f"{name} must be {what}, got {text!r}")
        return value

    return parse


_TEMPERATURE = _checked("temperature", float, lambda t: t >= 0, "a finite number >= 0 (0: greedy)")
_TOP_K = _checked("top_k", int, lambda k: k >= 0, "a whole number >= 0 (0: off)")
_TOP_P = _checked("top_p", float, lambda p: 0 < p <= 1, "in (0, 1] (1: off)")


def _sampling_text(text: str) -> str:
    """``--sampling``: 'greedy' or 'T,k,p' with each part in its flag's range (``-`` for k or p: off)."""
    parts = [part.strip() for part in text.split(",")]
    if text.strip() != "greedy":
        if len(parts) != 3:
            raise argparse.ArgumentTypeError(f"'greedy' or 'T,k,p' (e.g. 0.7,50,0.95), not {text!r}")
        _TEMPERATURE(parts[0])
        for part, check in ((parts[1], _TOP_K), (parts[2], _TOP_P)):
            if part != "-":
                check(part)
    return text


def _add_sampling(p, default: str) -> None:
    """The sampling flags of every command that samples, spelled as in ``transformers``; those left out keep the
    values of ``default``."""
    g = p.add_argument_group("sampling", f"flags left out keep the values of {default}")
    g.add_argument("--temperature", type=_TEMPERATURE, help=f"> 0; 0: greedy (default: {default})")
    g.add_argument("--top-k", type=_TOP_K, help=f"keep the k most likely tokens; 0: off (default: {default})")
    g.add_argument("--top-p", type=_TOP_P, help=f"nucleus sampling, in (0, 1]; 1: off (default: {default})")
    g.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling (default: off)")
    g.add_argument(
        "--sampling",
        type=_sampling_text,
        help="the short form of the flags above: 'greedy' or 'T,k,p', e.g. 0.7,50,0.95 (k 0 and p 1: off) "
        f"(default: {default})",
    )


def _sampling_request(args):
    """What the sampling flags ask for: a SamplingConfig (``--sampling``, bins in vocabulary order), a dict of the
    ``transformers``-style values given (for :meth:`ptp.SamplingConfig.from_values`), or None (nothing given)."""
    from ptp.sampling import SamplingConfig

    values = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
              "do_sample": False if args.greedy else None}  # fmt: skip
    values = {name: value for name, value in values.items() if value is not None}
    if args.sampling is None:
        SamplingConfig.from_values(**values)  # a bad value is an error before any model loads
        return values or None
    if values:
        raise ValueError("--sampling is the short form of --temperature, --top-k, --top-p and --greedy: give one")
    return SamplingConfig.parse(args.sampling)


def _sampling(args, default):
    """The sampling configuration of the flags over ``default`` (its bins' order is kept: the adapter's)."""
    from dataclasses import replace

    from ptp.sampling import SamplingConfig

    request = _sampling_request(args)
    if isinstance(request, SamplingConfig):
        return replace(request, order=default.order)
    return SamplingConfig.from_values(**(request or {}), default=default)


# ------------------------------------------------------------------------------------------------ generate
_COMPILE_HELP = (
    "compile the decoding step with torch.compile: faster calls, after a compilation of up to a few "
    "minutes per call shape on a CPU (default: off)"
)


def _compile_note(asked: bool) -> None:
    """The progress line of ``--compile``: its first calls wait for the compiler."""
    if asked:
        print("compiling the decoding step with torch.compile (once per call shape: up to a few minutes on a CPU, "
              "seconds once torch's cache holds it)", file=sys.stderr, flush=True)  # fmt: skip


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="complete a prompt with a PTP model")
    p.add_argument("--prompt", required=True, help="the text to complete (required)")
    p.add_argument("--model", help="base model directory or name; alone: plain decoding, with --no-drafter "
                   "(default: the shipped model and adapter)")  # fmt: skip
    p.add_argument("--adapter", help="PTP adapter directory; alone: an adapter that holds its own base (default: none)")
    p.add_argument("--drafter-adapter", dest="drafter",
                   help="a separate drafter's adapter; --model is then its teacher (default: none)")  # fmt: skip
    p.add_argument("--drafter-model", help="the separate drafter's base (default: the one its adapter holds)")
    p.add_argument("--no-drafter", action="store_true", help="plain decoding, one token per call (default: off)")
    p.add_argument("--max-new-tokens", type=_new_tokens, default=128, help="tokens to write at most (default: 128)")
    p.add_argument("--seed", type=int, default=0, help="seed of the auxiliaries u (default: 0)")
    p.add_argument("--auxiliary-budget", type=int, help="auxiliary slots per call (default: the engine's)")
    p.add_argument("--max-draft-length", type=int, help="longest draft group (default: the engine's)")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto: CUDA when available (default: auto)")
    p.add_argument("--dtype", default="float32", help="float32 (exact), bfloat16, float16 (default: float32)")
    p.add_argument("--compile", action="store_true", help=_COMPILE_HELP)
    _add_sampling(p, ADAPTERS_SAMPLING)
    _add_threads(p, "auto")


def _cmd_generate(args) -> int:
    from transformers import TextStreamer

    from ptp.chat import NO_SHIPPED_DRAFTER
    from ptp.loading import NO_TRAINED_DRAFTER, check_exists, load

    _sampling_request(args)  # checked before the model loads
    if args.model is not None and args.adapter is None and args.drafter is None and not args.no_drafter:
        check_exists("model", args.model)  # a missing path is the first thing to say
        raise ValueError(NO_TRAINED_DRAFTER)
    loaded = load(args.model, args.adapter, drafter=args.drafter, drafter_model=args.drafter_model,
                  device=args.device, dtype=args.dtype)  # fmt: skip
    use_drafter = not args.no_drafter
    if args.model is None and args.adapter is None and args.drafter is None and not loaded.trained:
        if use_drafter:  # the default teacher, while no drafter ships
            print(NO_SHIPPED_DRAFTER, file=sys.stderr)
        use_drafter = False
    ids = loaded.tokenizer(args.prompt, return_tensors="pt").input_ids
    _compile_note(args.compile)
    with _decoding_threads(args, loaded.model):
        out = loaded.generate(
            ids,
            use_drafter=use_drafter,
            max_new_tokens=args.max_new_tokens,
            sampling=_sampling(args, loaded.sampling),
            seed=args.seed,
            streamer=TextStreamer(loaded.tokenizer, skip_prompt=False),
            auxiliary_budget=args.auxiliary_budget,
            max_draft_length=args.max_draft_length,
            compile=args.compile,
        )
    print(f"\n[{int(out.lengths[0])} tokens in {out.num_calls} calls, {out.tokens_per_call:.2f} tokens per call]")
    return 0


# ------------------------------------------------------------------------------------------------ demo
def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the shipped model: chat questions answered plainly and with PTP, side by side")
    p.add_argument("--max-new-tokens", type=_new_tokens, default=128, help="tokens per answer at most (default: 128)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first question's auxiliaries (default: 0)")
    p.add_argument("--auxiliary-budget", type=int,
                   help="auxiliary slots per call (default: the engine's; on a CPU chosen from a call cost measured "
                   "once on the machine)")  # fmt: skip
    p.add_argument("--max-draft-length", type=int, help="longest group of slots (default: the engine's)")
    _add_sampling(p, ADAPTERS_SAMPLING)
    _add_threads(p, "auto")


def _cmd_demo(args) -> int:
    from ptp.default_model import load_default
    from ptp.demo import run_demo

    _sampling_request(args)  # checked before the model loads
    model, tokenizer = load_default()
    # The demo decodes with the configuration its model carries: the adapter's, or the one the flags ask for.
    model.config.sampling = _sampling(args, model.config.sampling)
    with _decoding_threads(args, model):
        results = run_demo(model, tokenizer, max_new_tokens=args.max_new_tokens, seed=args.seed,
                           auxiliary_budget=args.auxiliary_budget, max_draft_length=args.max_draft_length)  # fmt: skip
    return 0 if all(r.identical for r in results) else 1


# ------------------------------------------------------------------------------------------------ chat
def _add_chat(sub) -> None:
    p = sub.add_parser("chat", help="talk to a model in the terminal; answers stream as they are decoded")
    p.add_argument("--model", help="base model directory (default: the shipped model)")
    p.add_argument("--adapter", help="PTP adapter for --model; alone: an adapter that holds its base (default: none)")
    p.add_argument("--no-drafter", action="store_true", help="plain decoding, one token per call (default: off)")
    p.add_argument("--max-new-tokens", type=_new_tokens, default=256, help="longest answer (default: 256)")
    p.add_argument("--seed", type=int, default=0, help="answer k of a conversation samples with seed + k (default: 0)")
    p.add_argument("--system", help="system prompt (default: the chat template's own)")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto: CUDA when available (default: auto)")
    p.add_argument("--compile", action="store_true", help=_COMPILE_HELP)
    _add_sampling(p, "the adapter's trained configuration; without an adapter 0.7,50,0.95")
    _add_threads(p, "auto")


def _cmd_chat(args) -> int:
    from ptp.chat import PLAIN_SAMPLING, Chat, load_chat_model, run_chat
    from ptp.model.ptp import PTPModel

    _sampling_request(args)  # checked before the model loads
    model, tokenizer, use_drafter, note = load_chat_model(args.model, args.adapter, use_drafter=not args.no_drafter,
                                                          device=args.device)  # fmt: skip
    trained = model.config.sampling if isinstance(model, PTPModel) else PLAIN_SAMPLING
    chat = Chat(model, tokenizer, sampling=_sampling(args, trained), system=args.system,
                max_new_tokens=args.max_new_tokens, seed=args.seed, use_drafter=use_drafter,
                threads=_threads_asked(args), compile=args.compile)  # fmt: skip
    if note:
        print(note)
    _compile_note(args.compile)
    run_chat(chat, sys.stdin, sys.stdout)
    return 0


# ------------------------------------------------------------------------------------------------ bench
BENCH = "ptp.bench.harness:BenchConfig"


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="compare the engine, its drafters and transformers' decoding on the same prompts")
    p.set_defaults(fields=add_config_flags(
        p, BENCH, exclude=("sampling", "threads"), renames={"categories": "category"},
        aliases={"prompt_lookup_num_tokens": ("--pld-tokens",), "num_assistant_tokens": ("--assistant-tokens",)},
    ))  # fmt: skip
    _add_sampling(p, f"{ADAPTERS_SAMPLING}, greedy without adapters")
    _add_threads(p, "auto")


def _cmd_bench(args) -> int:
    from ptp.bench import BenchConfig, run_bench
    from ptp.bench.report import markdown

    config = BenchConfig(**given(args, args.fields), sampling=_sampling_request(args), threads=_threads_asked(args))
    _compile_note(config.compile)
    summary = run_bench(config)
    print(markdown(summary))
    print(json.dumps(summary))
    return 0


# ------------------------------------------------------------------------------------------------ pregenerate
def _add_sampling_run(p, config: str, sampling: str) -> None:
    """The flags of a command that samples from a model it loads: device, dtype, progress bar, the fields of its
    ``config`` dataclass, the sampling flags (default ``sampling``) and threads."""
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto: CUDA when available (default: auto)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32", help="(default: float32)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="show a progress bar (default: on)")  # fmt: skip
    p.set_defaults(fields=add_config_flags(p, config, exclude=("sampling",)))
    _add_sampling(p, sampling)
    _add_threads(p)


def _add_pregenerate(sub) -> None:
    p = sub.add_parser("pregenerate", help="sample teacher completions of prompts: the data `ptp distill` trains on")
    p.add_argument("--model", help="teacher: a model directory or name (default: the shipped model's teacher)")
    p.add_argument("--prompts", required=True,
                   help="JSONL ({prompt|messages|turns|input_ids}) or text, file or directory (required)")  # fmt: skip
    p.add_argument("--out", required=True, help="data directory; rerun the same command to resume (required)")
    p.add_argument("--tokenizer", help="tokenizer directory (default: the model's)")
    p.add_argument("--split", choices=("line", "paragraph", "file"), default="line",
                   help="text files: one prompt per line, paragraph or file (default: line)")  # fmt: skip
    p.add_argument("--raw", action="store_true", help="store the texts as raw training documents; generate nothing "
                   "(default: off)")  # fmt: skip
    _add_sampling_run(p, "ptp.data.pregeneration:PregenerateConfig", "0.7,50,0.95")


def _cmd_pregenerate(args) -> int:
    from ptp.data.pregeneration import PregenerateConfig, pregenerate_from_paths, sampling_speed

    config = PregenerateConfig(**given(args, args.fields))
    config.sampling = _sampling(args, config.sampling)
    out = pregenerate_from_paths(args.model, args.prompts, args.out, config, tokenizer=args.tokenizer,
                                 split=args.split, raw=args.raw, device=args.device, dtype=args.dtype,
                                 progress=args.progress)  # fmt: skip
    print(json.dumps({"data": str(out), **({} if args.raw else sampling_speed(out))}))
    return 0


# ------------------------------------------------------------------------------------------------ distill
def _add_distill(sub) -> None:
    p = sub.add_parser("distill", help="train a PTP drafter on pregenerated data (also under `accelerate launch`)")
    p.add_argument("--config", help="JSON file of the fields below; flags and --set override it (default: none)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a field as key=value (the value as JSON); overrides the flags (default: none)")  # fmt: skip
    p.set_defaults(fields=add_config_flags(p, "ptp.train.config:DistillConfig"))
    _add_threads(p)


def _cmd_distill(args) -> int:
    from ptp.train import DistillConfig, distill
    from ptp.train.config import parse_overrides

    overrides = {**given(args, args.fields), **parse_overrides(args.set)}
    result = distill(DistillConfig.load(args.config, overrides))
    if result.main_process:
        print(json.dumps({"adapter": str(result.adapter), "run_dir": str(result.run_dir), **result.evaluation}))
    return 0


# ------------------------------------------------------------------------------------------------ evaluate
def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a saved adapter on held-out windows of a data directory")
    p.add_argument("--model", help="base model (teacher) (default: none, for an adapter that holds its base)")
    p.add_argument("--adapter", required=True, help="adapter directory from `ptp distill` (required)")
    p.add_argument("--drafter-model", help="a separate drafter's base (default: the one its adapter holds)")
    p.add_argument("--data", required=True, help="data directory from `ptp pregenerate` (required)")
    p.add_argument("--split", choices=("eval", "all"), default="eval",
                   help="eval: the prompts distill held out; all: every document (default: eval)")  # fmt: skip
    p.add_argument("--run-config", help="a distill run's config.json whose evaluation settings become the defaults, "
                   "so that the numbers equal the run's (default: <adapter>.run/config.json if it exists)")  # fmt: skip
    run = "the run's, else distill's"
    p.add_argument("--rows", type=int, help=f"packed rows to evaluate at most (default: {run} eval_rows, else 256)")
    p.add_argument("--windows-per-row", type=int, help=f"(default: {run})")
    p.add_argument("--eval-fraction", type=float, help=f"distill's eval_fraction for --split eval (default: {run})")
    p.add_argument("--row-length", type=int, help=f"tokens per packed row (default: {run} rule)")
    p.add_argument("--batch-size", type=int, help=f"rows per batch; the windows depend on it (default: {run})")
    p.add_argument("--loss", choices=("cross_entropy", "forward_kl", "reverse_kl"), help=f"(default: {run})")
    p.add_argument("--position-decay", type=float, help=f"loss weight gamma^j of slot j (default: {run})")
    p.add_argument("--chain-loss", action=argparse.BooleanOptionalAction,
                   help=f"score slots only on their windows' mode chains (default: {run})")  # fmt: skip
    p.add_argument("--seed", type=int, help=f"distill's seed: the split, the windows and the u's (default: {run})")
    p.add_argument("--device", choices=("cpu", "cuda"), help="(default: CUDA when available)")
    p.add_argument("--precision", choices=("auto", "float32", "bf16"), default="auto",
                   help="auto: bf16 on CUDA, else float32 (default: auto)")  # fmt: skip
    p.add_argument("--out", help="also write the metrics to this JSON file (default: none)")
    p.add_argument("--write-histogram", action="store_true",
                   help="store the histogram in the adapter's config (default: off)")  # fmt: skip
    _add_threads(p)


def _cmd_evaluate(args) -> int:
    from ptp.train import evaluate_adapter
    from ptp.train.evaluation import RUN_SETTINGS, run_settings

    # An explicit flag wins, then the run's own configuration, then evaluate_adapter's defaults (distill's).
    path, settings = run_settings(args.adapter, args.run_config)
    if path is not None:
        print(f"evaluation settings of {path}")
    settings.update({k: getattr(args, k) for k in RUN_SETTINGS if getattr(args, k) is not None})
    metrics = evaluate_adapter(
        args.model, args.adapter, args.data, drafter_model=args.drafter_model, split=args.split,
        device=args.device, precision=args.precision, write_histogram=args.write_histogram, **settings,
    )  # fmt: skip
    print(f"{metrics['split']} split: {metrics['rows']} rows, {metrics['windows']} windows")
    print(f"mean correct prefix {metrics['correct_prefix']:.3f}   loss {metrics['loss']:.4f}")
    print("position   " + " ".join(f"{n:>6}" for n in range(len(metrics["histogram"]))))
    print("histogram  " + " ".join(f"{v:6.3f}" for v in metrics["histogram"]))
    print("accuracy   " + " ".join(["     -"] + [f"{v:6.3f}" for v in metrics["accuracy"]]))
    if args.out:
        Path(args.out).write_text(json.dumps(metrics, indent=1) + "\n")
    print(json.dumps(metrics))
    return 0


# ------------------------------------------------------------------------------------------------ train
def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a causal LM on text (ar: next-token; ptp: C-PTP, no teacher; also DDP)")
    p.add_argument("--config", help="JSON file of the fields below; flags override it (default: none)")
    p.set_defaults(fields=add_config_flags(p, "ptp.train.pretrain:PretrainConfig"))
    _add_threads(p)


def _cmd_train(args) -> int:
    from ptp.train.pretrain import PretrainConfig, pretrain

    values = json.loads(Path(args.config).read_text()) if args.config else {}
    summary = pretrain(PretrainConfig(**{**values, **given(args, args.fields)}))
    if summary is not None:  # the main process reports
        print(json.dumps({k: v for k, v in summary.items() if k != "config"}))
    return 0


# ------------------------------------------------------------------------------------------------ serve
def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (chat, completions, streaming, batching)")
    fields = add_config_flags(p, "ptp.serve.config:ServeConfig", exclude=("threads",),
                              renames={"use_drafter": "drafter"})  # fmt: skip
    p.add_argument("--no-ptp", dest="use_drafter", action="store_false", help=argparse.SUPPRESS)  # older spelling
    p.set_defaults(fields=fields)
    _add_threads(p, "auto")


def _cmd_serve(args) -> int:
    from ptp.serve.config import ServeConfig
    from ptp.serve.server import serve

    serve(ServeConfig(**given(args, args.fields), threads=_threads_asked(args)))
    return 0


# ------------------------------------------------------------------------------------------------ bench-serve
def _add_bench_serve(sub) -> None:
    p = sub.add_parser("bench-serve", help="load-test a running `ptp serve` on this machine (bounded)")
    p.set_defaults(fields=add_config_flags(p, "ptp.bench.serve_load:LoadConfig", exclude=("prompts",),
                                           defaults={"url": "http://127.0.0.1:8000"}))  # fmt: skip
    p.add_argument("--out", help="also write the report to this JSON file (default: none)")


def _cmd_bench_serve(args) -> int:
    from ptp.bench.serve_load import LoadConfig, describe, load_test

    report = load_test(LoadConfig(**given(args, args.fields)))
    print(describe(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))
    return 0 if report["errors"] == 0 and report["seeded_all_identical"] else 1


# ------------------------------------------------------------------------------------------------ the rest
def _add_convert_gguf(sub) -> None:
    p = sub.add_parser("convert-gguf", help="dequantise a GGUF model into a Hugging Face model directory")
    p.add_argument("gguf", help="the GGUF file")
    p.add_argument("--out", help="model directory to write (default: in the cache, named after the file and its hash)")
    p.add_argument("--sha256", help="the file's expected sha256; a mismatch is an error (default: not checked)")
    _add_threads(p)


def _cmd_convert_gguf(args) -> int:
    from ptp.default_model import convert_gguf

    print(convert_gguf(args.gguf, args.out, sha256=args.sha256))
    return 0


def _add_bench_throughput(sub) -> None:
    p = sub.add_parser("bench-throughput", help="batched sampling speed: ptp pregenerate against transformers")
    fields = add_config_flags(p, "ptp.bench.throughput:ThroughputConfig", exclude=("sampling",))
    p.set_defaults(fields=fields)
    _add_sampling(p, "0.7,50,0.95")
    _add_threads(p)


def _cmd_bench_throughput(args) -> int:
    from ptp.bench.throughput import ThroughputConfig, describe, run_throughput

    config = ThroughputConfig(**given(args, args.fields))
    config.sampling = _sampling(args, config.sampling)
    report = run_throughput(config)
    print(describe(report))
    print(json.dumps(report["results"]))
    return 0


def _add_bench_forward(sub) -> None:
    p = sub.add_parser("bench-forward", help="time one forward call against its number of new tokens")
    p.add_argument("--presets", default="1.1b,7b", help="comma-separated Llama shapes: tiny, 135m, 1.1b, 7b (default: "
                   "1.1b,7b)")  # fmt: skip
    p.add_argument("--context", type=int, default=512, help="cached tokens before the call (default: 512)")
    p.add_argument("--new-tokens", default="1,2,4,8,16,32,64,128",
                   help="comma-separated counts (default: 1,2,4,8,16,32,64,128)")  # fmt: skip
    p.add_argument("--repeats", type=int, default=20, help="timed calls per count; the median counts (default: 20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls before timing (default: 5)")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto: CUDA when available (default: auto)")
    p.add_argument("--dtype", default="bfloat16", help="auto, float32, bfloat16, float16 (default: bfloat16)")
    p.add_argument("--engine-budgets", default="2:2,4:4,9:3,16:8,32:16",
                   help="the engine's PTP calls timed against its one-token calls, as comma-separated SLOTS:GROUP "
                   "(empty: none) (default: 2:2,4:4,9:3,16:8,32:16)")  # fmt: skip
    p.add_argument("--static-tokens", type=int, default=32,
                   help="tokens decoded by transformers' generate with a static cache and the compiled forward, "
                   "timed as the baseline to beat (0: not timed) (default: 32)")  # fmt: skip
    p.add_argument("--out", required=True, help="output directory (required)")
    _add_threads(p)


def _cmd_bench_forward(args) -> int:
    from ptp.bench import forward_cost, write_forward_cost

    try:
        counts = tuple(int(n) for n in args.new_tokens.split(","))
    except ValueError:
        raise ValueError(f"--new-tokens must be comma-separated whole numbers, got {args.new_tokens!r}") from None
    try:
        budgets = tuple(tuple(int(v) for v in pair.split(":")) for pair in args.engine_budgets.split(",") if pair)
        if any(len(pair) != 2 or min(pair) < 1 for pair in budgets):
            raise ValueError
    except ValueError:
        raise ValueError(f"--engine-budgets must be comma-separated SLOTS:GROUP pairs of whole numbers >= 1, got "
                         f"{args.engine_budgets!r}") from None  # fmt: skip
    results = [
        forward_cost(preset.strip(), device=args.device, dtype=args.dtype, context=args.context,
                     new_tokens=counts, repeats=args.repeats, warmup=args.warmup, engine_budgets=budgets,
                     static_tokens=args.static_tokens)
        for preset in args.presets.split(",")
    ]  # fmt: skip
    files = write_forward_cost(results, args.out)
    print(json.dumps({"results": results, "files": files}))
    return 0


# ------------------------------------------------------------------------------------------------ experiment
def _add_experiment(sub) -> None:
    p = sub.add_parser("experiment", help="one claim of the paper as an experiment (SCIENCE.md); resumable")
    p.add_argument("name", help="dependence, window, embedding, beta, size, reads_u or teacher_free")
    p.set_defaults(fields=add_config_flags(p, "ptp.science.config:ExperimentConfig", exclude=("overrides",)))
    targets = {"distill": "ptp.train.config:DistillConfig", "train": "ptp.train.pretrain:PretrainConfig"}
    keys = {kind: ", ".join(f.name for f in config_fields(target)) for kind, target in targets.items()}
    every = (f"a field for every variant, repeatable: of ptp distill ({keys['distill']}); for teacher_free of ptp "
             f"train ({keys['train']}) (default: none)")  # fmt: skip
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=every)
    _add_threads(p)


def _listed(value, parse) -> tuple:
    """A list option given as ``0,1,2``, repeated, or as a JSON list or number, as a tuple."""
    items = value if isinstance(value, list) else [value]
    return tuple(parse(part) for item in items for part in str(item).strip("[]").split(",") if part.strip())


def _cmd_experiment(args) -> int:
    from ptp.science import EXPERIMENTS, ExperimentConfig, run_experiment
    from ptp.train import DistillConfig
    from ptp.train.config import parse_overrides
    from ptp.train.pretrain import PretrainConfig

    if args.name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {args.name!r}; choose one of {', '.join(sorted(EXPERIMENTS))}")
    values = given(args, args.fields)
    for name, parse in (("seeds", int), ("variants", str), ("drafter_sizes", str)):
        if values.get(name) is not None:
            values[name] = _listed(values[name], parse)
    kind = PretrainConfig if EXPERIMENTS[args.name].kind == "train" else DistillConfig
    results = run_experiment(args.name, ExperimentConfig(**values, overrides=parse_overrides(args.set, kind)))
    print(Path(results["files"]["markdown"]).read_text(encoding="utf-8"))
    print(json.dumps({k: results[k] for k in ("experiment", "complete", "failures", "files")}))
    return 1 if results["failures"] else 0


def _add_prompts(sub) -> None:
    p = sub.add_parser("prompts", help="write JSONL prompts cut at random line boundaries of a text corpus")
    p.add_argument("--data", default="stdlib", help="the corpus as `ptp train --data` reads it (default: stdlib)")
    p.add_argument("--held-out-fraction", type=float, default=0.05,
                   help="as in `ptp train`: which texts are held out (default: 0.05)")  # fmt: skip
    p.add_argument("--split", choices=["train", "held-out"], required=True, help="the split to cut from (required)")
    p.add_argument("--count", type=int, required=True, help="prompts to write (required)")
    p.add_argument("--max-lines", type=int, default=40, help="lines per prompt at most (default: 40)")
    p.add_argument("--seed", type=int, default=0, help="(default: 0)")
    p.add_argument(
        "--final-newline",
        action="store_true",
        help="keep each prompt's last line ending (a bare newline token after which models tend to stop; the shipped "
        "model's prompt files were cut this way) (default: off)",
    )
    p.add_argument("--out", required=True, help="JSONL file to write (required)")


def _cmd_prompts(args) -> int:
    from ptp.data.stdlib import line_prompts
    from ptp.train.pretrain import read_text_corpus

    train, held_out = read_text_corpus(args.data, args.held_out_fraction)
    texts = train if args.split == "train" else held_out
    if not texts:
        raise ValueError(f"the {args.split} split of {args.data} is empty")
    prompts = line_prompts(texts, args.count, args.seed, args.max_lines, args.final_newline)
    Path(args.out).write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    print(f"wrote {len(prompts)} prompts to {args.out}")
    return 0


def _add_chat_prompts(sub) -> None:
    p = sub.add_parser("chat-prompts", help="write JSONL chat prompts of many task families, built offline")
    p.add_argument("--out", required=True,
                   help="JSONL file to write ({'messages': [...], 'category': ...} lines) (required)")  # fmt: skip
    p.add_argument("--count", type=int, required=True, help="prompts to write (required)")
    p.add_argument("--seed", type=int, default=0, help="(default: 0)")
    p.add_argument(
        "--exclude",
        action="extend",
        nargs="+",
        default=[],
        metavar="JSONL",
        help="evaluation files (e.g. Spec-Bench question.jsonl) whose exact and near duplicates are left out "
        "(default: none)",
    )
    p.add_argument(
        "--site-packages",
        action="store_true",
        help="also draw from the documentation of installed site-packages (the set then depends on them) "
        "(default: off)",
    )


def _cmd_chat_prompts(args) -> int:
    import time

    from ptp.data.chat_prompts import build_chat_prompts, write_jsonl

    start = time.perf_counter()
    built = build_chat_prompts(args.count, args.seed, args.exclude, args.site_packages)
    write_jsonl(built.records, args.out)
    report = built.report()
    report["seconds"] = round(time.perf_counter() - start, 2)
    report["out"] = str(args.out)
    print(f"wrote {report['size']} prompts to {args.out} in {report['seconds']} s")
    print("  " + ", ".join(f"{name} {n}" for name, n in report["categories"].items()))
    print(f"  mean {report['mean_words']} words ({report['mean_chars']} characters), {report['multi_turn']} multi-turn")
    dedup = report["dedup"]
    if args.exclude:
        print(f"  dropped as duplicates of the evaluation files: {dedup['exact_removed']} exact, "
              f"{dedup['near_removed']} near ({dedup['ngram']}-word runs); left after the check: "
              f"{dedup['exact_left']} exact, {dedup['near_left']} near")  # fmt: skip
    print(json.dumps(report))
    return 0


def _add_self_prompts(sub) -> None:
    p = sub.add_parser("self-prompts", help="write JSONL chat prompts that a chat model writes itself (its user turns)")
    p.add_argument("--model", help="a chat model: directory or name (default: the shipped model's teacher)")
    p.add_argument("--out", required=True,
                   help="JSONL file to write ({'messages': [...], 'category': 'self'} lines) (required)")  # fmt: skip
    p.add_argument("--exclude", action="extend", nargs="+", default=[], metavar="JSONL",
                   help="evaluation files (e.g. Spec-Bench question.jsonl) whose exact and near duplicates are left "
                   "out (default: none)")  # fmt: skip
    _add_sampling_run(p, "ptp.data.self_prompts:SelfPromptConfig", "1.0,-,0.95")


def _cmd_self_prompts(args) -> int:
    import time

    from ptp.data.self_prompts import SelfPromptConfig, write_self_prompts

    config = SelfPromptConfig(**given(args, args.fields))
    config.sampling = _sampling(args, config.sampling)
    start = time.perf_counter()
    built = write_self_prompts(args.model, args.out, config, exclude=args.exclude, device=args.device,
                               dtype=args.dtype, progress=args.progress)  # fmt: skip
    report = built.report()
    report["dropped"] = dict(sorted(built.dropped.items()))
    report["seconds"] = round(time.perf_counter() - start, 2)
    report["out"] = str(args.out)
    print(f"wrote {report['size']} prompts to {args.out} in {report['seconds']} s, mean {report['mean_words']} words")
    print("  dropped: " + (", ".join(f"{n} {why}" for why, n in report["dropped"].items()) or "none"))
    print(json.dumps(report))
    return 0


# ------------------------------------------------------------------------------------------------ ceiling
def _add_ceiling(sub) -> None:
    p = sub.add_parser("ceiling", help="the tokens per call a drafter that ignores u reaches at best on a teacher's "
                       "own samples (its runs of modes)")  # fmt: skip
    p.add_argument("--model", help="the teacher that sampled the data (default: the shipped model's teacher)")
    p.add_argument("--data", required=True, help="data directory from `ptp pregenerate` (required)")
    p.add_argument("--windows", default="4,8,16,32", help="window lengths, comma-separated (default: 4,8,16,32)")
    p.add_argument("--max-documents", type=int, help="measure the first this many documents (default: all)")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto: CUDA when available (default: auto)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32", help="(default: float32)")
    p.add_argument(
        "--bins-in",
        choices=("bfloat16", "float16"),
        help="also measure how often a u drawn in a token's bin computed under autocast in this dtype (a "
        "distillation's teacher pass in 16 bits) picks the same token in --dtype (default: not measured)",
    )
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="show a progress bar (default: on)")  # fmt: skip
    p.add_argument("--out", help="also write the result to this JSON file (default: none)")
    _add_threads(p)


def _cmd_ceiling(args) -> int:
    from ptp.science.ceiling import mode_chain_ceiling

    try:
        windows = [int(w) for w in args.windows.split(",")]
    except ValueError:
        raise ValueError(f"--windows takes whole numbers separated by commas, not {args.windows!r}") from None
    result = mode_chain_ceiling(args.model, args.data, windows=windows, max_documents=args.max_documents,
                                device=args.device, dtype=args.dtype, bins_in=args.bins_in,
                                progress=args.progress)  # fmt: skip
    print(f"{result['documents']} completions, {result['tokens']} tokens, mode rate {result['mode_rate']:.4f}")
    print("window   mode chain   first token known   (tokens per call of ideal drafters)")
    for window, tau in result["windows"].items():
        print(f"{window:>6}   {tau['mode_chain']:>10.3f}   {tau['known_first']:>17.3f}")
    if "bins" in result:
        b = result["bins"]
        print(
            f"bins in {b['dtype']}: a u drawn in them picks the {args.dtype} token {b['agreement']:.4f} of the time "
            f"({b['positions']} tokens; {b['empty']} outside the {b['dtype']} kept set)"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return 0


COMMANDS = {
    "generate": (_add_generate, _cmd_generate),
    "prompts": (_add_prompts, _cmd_prompts),
    "chat-prompts": (_add_chat_prompts, _cmd_chat_prompts),
    "self-prompts": (_add_self_prompts, _cmd_self_prompts),
    "train": (_add_train, _cmd_train),
    "bench": (_add_bench, _cmd_bench),
    "bench-forward": (_add_bench_forward, _cmd_bench_forward),
    "bench-throughput": (_add_bench_throughput, _cmd_bench_throughput),
    "demo": (_add_demo, _cmd_demo),
    "chat": (_add_chat, _cmd_chat),
    "convert-gguf": (_add_convert_gguf, _cmd_convert_gguf),
    "pregenerate": (_add_pregenerate, _cmd_pregenerate),
    "distill": (_add_distill, _cmd_distill),
    "evaluate": (_add_evaluate, _cmd_evaluate),
    "ceiling": (_add_ceiling, _cmd_ceiling),
    "experiment": (_add_experiment, _cmd_experiment),
    "serve": (_add_serve, _cmd_serve),
    "bench-serve": (_add_bench_serve, _cmd_bench_serve),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ptp", description="Parallel Token Prediction for Hugging Face causal LMs")
    sub = parser.add_subparsers(dest="command", required=True)
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; a ValueError or OSError (a bad value, a missing file) ends it with a one-line message."""
    args = build_parser().parse_args(argv)
    try:
        with _threads(getattr(args, "threads", None)):
            return COMMANDS[args.command][1](args)
    except (ValueError, OSError) as error:
        raise SystemExit(f"ptp {args.command}: {error}") from error


def _threads(threads):
    """``--threads``, applied in this one place for every command that computes (:func:`ptp.runtime.cpu_threads`)."""
    if threads is None:
        return nullcontext()
    from ptp.runtime import cpu_threads

    return cpu_threads(threads)


if __name__ == "__main__":
    sys.exit(main())
