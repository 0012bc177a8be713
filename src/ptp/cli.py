"""The ``ptp`` command: thin adapters over the Python API, one function per subcommand.

Each subcommand is a ``_cmd_<name>(args)`` function plus an ``_add_<name>(subparsers)`` that declares its arguments;
``COMMANDS`` lists them. No logic lives only here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="complete a prompt with a PTP model")
    p.add_argument("--model", help="base model directory or name (default: the shipped model)")
    p.add_argument("--adapter", help="PTP adapter directory (default: the shipped adapter)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--sampling", default=None, help="'greedy' or 'T,k,p' (default: the adapter's configuration)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-drafter", action="store_true", help="plain autoregressive decoding (one token per call)")
    p.add_argument("--drafter-adapter", help="a separate drafter's adapter (--model is then the teacher alone)")
    p.add_argument("--drafter-model", help="the separate drafter's base (not needed if its adapter holds base/)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def _cmd_generate(args) -> int:
    from transformers import AutoTokenizer, TextStreamer

    from ptp.decode.engine import generate
    from ptp.default_model import load_default
    from ptp.model.ptp import PTPModel

    drafter = None
    if args.drafter_adapter is not None:
        from transformers import AutoModelForCausalLM

        if args.model is None or args.adapter is not None:
            raise SystemExit("ptp generate: --drafter-adapter needs --model (the teacher) and no --adapter")
        tokenizer = AutoTokenizer.from_pretrained(args.model)
        model = AutoModelForCausalLM.from_pretrained(args.model).to(args.device)
        drafter = PTPModel.from_pretrained(args.drafter_model, args.drafter_adapter, device=args.device)
    elif args.model is None and args.adapter is None:
        model, tokenizer = load_default(device=args.device)
    else:
        if args.adapter is None:
            raise SystemExit("ptp generate: --model needs --adapter (a PTP adapter trained for that model)")
        # --adapter alone: a model that holds its own base (`ptp train --objective ptp`, or a trained drafter base).
        try:
            model = PTPModel.from_pretrained(args.model, args.adapter, device=args.device)
        except ValueError as error:
            raise SystemExit(f"ptp generate: {error}") from error
        tokenizer = AutoTokenizer.from_pretrained(args.model or args.adapter)
    ids = tokenizer(args.prompt, return_tensors="pt").input_ids
    streamer = TextStreamer(tokenizer, skip_prompt=False)
    out = generate(
        model,
        ids,
        drafter=drafter,
        max_new_tokens=args.max_new_tokens,
        sampling=parse_sampling(args.sampling, (model if drafter is None else drafter).config.sampling),
        seed=args.seed,
        streamer=streamer,
        use_drafter=not args.no_drafter,
        eos_token_id=tokenizer.eos_token_id,
    )
    print(f"\n[{int(out.lengths[0])} tokens in {out.num_calls} calls, {out.tokens_per_call:.2f} tokens per call]")
    return 0


def parse_sampling(text: str | None, default):
    """``greedy`` or ``T,k,p`` (``-`` for an unset k or p) to a SamplingConfig, its bins in ``default``'s order;
    None gives ``default``."""
    from ptp.sampling import SamplingConfig

    if text is None:
        return default
    if text == "greedy":
        return SamplingConfig.greedy()
    parts = text.split(",")
    if len(parts) != 3:
        raise SystemExit(f"--sampling must be 'greedy' or 'T,k,p' (e.g. 0.7,50,0.95 or 1.0,-,-), got {text!r}")
    t, k, p = parts
    try:
        return SamplingConfig(
            temperature=float(t),
            top_k=None if k == "-" else int(k),
            top_p=None if p == "-" else float(p),
            order="vocabulary" if default is None else default.order,
        )
    except ValueError as error:
        raise SystemExit(f"--sampling {text!r}: {error}") from error


def _add_convert_gguf(sub) -> None:
    p = sub.add_parser("convert-gguf", help="dequantise a GGUF model into a Hugging Face model directory")
    p.add_argument("gguf", help="the GGUF file")
    p.add_argument("--out", help="model directory to write (default: in the cache, named after the file and its hash)")
    p.add_argument("--sha256", help="the file's expected sha256 (a mismatch is an error)")


def _cmd_convert_gguf(args) -> int:
    from ptp.default_model import convert_gguf

    try:
        out = convert_gguf(args.gguf, args.out, sha256=args.sha256)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"ptp convert-gguf: {error}") from error
    print(out)
    return 0


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the shipped model: chat questions answered plainly and with PTP, side by side")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    # On a CPU every auxiliary slot costs compute (on a GPU extra slots are nearly free): the demo keeps few.
    p.add_argument("--auxiliary-budget", type=int, default=4, help="auxiliary slots per call")
    p.add_argument("--max-draft-length", type=int, default=3, help="longest group of slots")


def _cmd_demo(args) -> int:
    from ptp.default_model import load_default
    from ptp.demo import run_demo

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model, tokenizer = load_default()
    except FileNotFoundError as error:
        raise SystemExit(f"ptp demo: {error}") from error
    results = run_demo(
        model,
        tokenizer,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        auxiliary_budget=args.auxiliary_budget,
        max_draft_length=args.max_draft_length,
    )
    return 0 if all(r.identical for r in results) else 1


def _add_chat(sub) -> None:
    p = sub.add_parser("chat", help="talk to a model in the terminal; answers stream as they are decoded")
    p.add_argument("--model", help="base model directory (default: the shipped model)")
    p.add_argument("--adapter", help="PTP adapter for --model (alone: an adapter that holds its base)")
    p.add_argument("--no-drafter", action="store_true", help="plain decoding, one token per call")
    p.add_argument(
        "--sampling",
        default=None,
        help="'greedy' or 'T,k,p' (default: the adapter's configuration; no adapter: 0.7,50,0.95)",
    )
    p.add_argument("--max-new-tokens", type=int, default=256, help="longest answer (default: 256)")
    p.add_argument("--seed", type=int, default=0, help="answer k of a conversation samples with seed + k")
    p.add_argument("--system", help="system prompt (default: the chat template's own)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: 1 on machines of up to 4 cores)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def _cmd_chat(args) -> int:
    from ptp.chat import Chat, load_chat_model, run_chat
    from ptp.model.ptp import PTPModel

    try:
        model, tokenizer, use_drafter, note = load_chat_model(
            args.model, args.adapter, use_drafter=not args.no_drafter, device=args.device
        )
        trained = model.config.sampling if isinstance(model, PTPModel) else None
        chat = Chat(model, tokenizer, sampling=parse_sampling(args.sampling, trained), system=args.system,
                    max_new_tokens=args.max_new_tokens, seed=args.seed, use_drafter=use_drafter,
                    threads=args.threads or "auto")  # fmt: skip
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"ptp chat: {error}") from error
    if note:
        print(note)
    run_chat(chat, sys.stdin, sys.stdout)
    return 0


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="compare ar, ptp, independent, hf, hf-assisted and pld on the same prompts")
    p.add_argument("--model", help="base model directory (default: the shipped model and its adapters)")
    p.add_argument("--adapter", help="trained PTP adapter (method ptp)")
    p.add_argument("--independent-adapter", help="independent-baseline adapter (method independent)")
    p.add_argument("--draft-model", help="small draft model with the same tokenizer (method hf-assisted)")
    p.add_argument("--drafter-adapter", help="a separate drafter's adapter (method drafter; --model is its teacher)")
    p.add_argument("--drafter-model", help="the separate drafter's base (not needed if its adapter holds base/)")
    p.add_argument("--prompts", required=True, help="Spec-Bench question.jsonl or plain JSONL of {'prompt': ...}")
    p.add_argument("--category", action="append", help="keep this category (repeatable; default: all)")
    p.add_argument("--max-questions", type=int, help="run at most this many questions, spread evenly over the file")
    p.add_argument("--methods", help="comma-separated (default: every method whose inputs are given)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--sampling", help="'greedy' or 'T,k,p' (default: the adapter's configuration, else greedy)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per turn; the median counts")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per method before timing")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="auto", help="auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16")
    p.add_argument("--auxiliary-budget", type=int, help="auxiliary slots per call of the PTP engine")
    p.add_argument("--max-draft-length", type=int, help="longest draft group of the PTP engine")
    p.add_argument("--no-cuda-graph", action="store_true", help="engine methods launch each step eagerly on CUDA")
    p.add_argument("--pld-tokens", type=int, default=10, help="prompt_lookup_num_tokens of pld")
    p.add_argument("--assistant-tokens", type=int, help="num_assistant_tokens of hf-assisted")
    p.add_argument("--no-chat-template", action="store_true", help="join Spec-Bench turns plainly")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--resume", action="store_true", help="keep a killed run's answers in --out; run only the rest")
    p.add_argument("--no-progress", action="store_true")


def _cmd_bench(args) -> int:
    import json

    from ptp.bench import BenchConfig, run_bench
    from ptp.bench.report import markdown

    config = BenchConfig(
        prompts=args.prompts, out=args.out, model=args.model, methods=args.methods, adapter=args.adapter,
        independent_adapter=args.independent_adapter, draft_model=args.draft_model, categories=args.category,
        drafter_adapter=args.drafter_adapter, drafter_model=args.drafter_model,
        max_questions=args.max_questions, max_new_tokens=args.max_new_tokens,
        sampling=parse_sampling(args.sampling, None), repeats=args.repeats, warmup=args.warmup, seed=args.seed,
        device=args.device, dtype=args.dtype, auxiliary_budget=args.auxiliary_budget,
        max_draft_length=args.max_draft_length, prompt_lookup_num_tokens=args.pld_tokens,
        cuda_graph=not args.no_cuda_graph,
        num_assistant_tokens=args.assistant_tokens, chat_template=not args.no_chat_template,
        progress=not args.no_progress, resume=args.resume,
    )  # fmt: skip
    try:
        summary = run_bench(config)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"ptp bench: {error}") from error
    print(markdown(summary))
    print(json.dumps(summary))
    return 0


def _add_bench_forward(sub) -> None:
    p = sub.add_parser("bench-forward", help="time one forward call against its number of new tokens")
    p.add_argument("--presets", default="1.1b,7b", help="comma-separated Llama shapes: tiny, 1.1b, 7b")
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--new-tokens", default="1,2,4,8,16,32,64,128", help="comma-separated counts")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--out", required=True, help="output directory")


def _cmd_bench_forward(args) -> int:
    import json

    from ptp.bench import forward_cost, write_forward_cost

    try:
        counts = tuple(int(n) for n in args.new_tokens.split(","))
        results = [
            forward_cost(preset.strip(), device=args.device, dtype=args.dtype, context=args.context,
                         new_tokens=counts, repeats=args.repeats, warmup=args.warmup)
            for preset in args.presets.split(",")
        ]  # fmt: skip
    except ValueError as error:
        raise SystemExit(f"ptp bench-forward: {error}") from error
    files = write_forward_cost(results, args.out)
    print(json.dumps({"results": results, "files": files}))
    return 0


def _add_pregenerate(sub) -> None:
    p = sub.add_parser("pregenerate", help="sample teacher completions of prompts: the data `ptp distill` trains on")
    p.add_argument("--model", required=True, help="teacher: a model directory or name")
    p.add_argument("--prompts", required=True, help="JSONL ({prompt|messages|turns|input_ids}) or text, file or dir")
    p.add_argument("--out", required=True, help="data directory (rerun the same command to resume)")
    p.add_argument("--tokenizer", help="tokenizer directory (default: the model's)")
    p.add_argument("--n-per-prompt", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-k", type=int, default=50, help="0: off")
    p.add_argument("--top-p", type=float, default=0.95, help="1: off")
    p.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    p.add_argument("--batch-size", type=int, default=64, help="sequences per generation call")
    p.add_argument("--prompts-per-shard", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-long-prompts", action="store_true", help="skip prompts that do not fit the context")
    p.add_argument("--split", choices=("line", "paragraph", "file"), default="line", help="text files: one prompt per")
    p.add_argument("--raw", action="store_true", help="store the texts as raw training documents; generate nothing")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    p.add_argument("--no-progress", action="store_true")


def _cmd_pregenerate(args) -> int:
    import json

    from ptp.data.pregeneration import PregenerateConfig, pregenerate_from_paths
    from ptp.sampling import SamplingConfig

    top_k, top_p = args.top_k or None, None if args.top_p >= 1 else args.top_p
    try:
        sampling = SamplingConfig(temperature=args.temperature, top_k=top_k, top_p=top_p)
        config = PregenerateConfig(
            n_per_prompt=args.n_per_prompt,
            max_new_tokens=args.max_new_tokens,
            sampling=SamplingConfig.greedy() if args.greedy else sampling,
            batch_size=args.batch_size,
            prompts_per_shard=args.prompts_per_shard,
            seed=args.seed,
            skip_long_prompts=args.skip_long_prompts,
        )
        options = dict(tokenizer=args.tokenizer, split=args.split, raw=args.raw, device=args.device)
        options["progress"] = not args.no_progress
        dtype = getattr(torch, args.dtype)
        out = pregenerate_from_paths(args.model, args.prompts, args.out, config, dtype=dtype, **options)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"ptp pregenerate: {error}") from error
    print(json.dumps({"data": str(out)}))
    return 0


def _add_distill(sub) -> None:
    p = sub.add_parser("distill", help="train a PTP drafter on pregenerated data (also under `accelerate launch`)")
    p.add_argument("--model", help="base model (teacher): a directory or name")
    p.add_argument("--drafter-model", help="a separate, smaller drafter model with the teacher's vocabulary")
    p.add_argument("--train-drafter-base", action="store_true", help="the separate drafter's own weights train too")
    p.add_argument("--data", help="data directory from `ptp pregenerate`")
    p.add_argument("--out", help="adapter directory to write")
    p.add_argument("--config", help="JSON file with DistillConfig fields (flags and --set override it)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any DistillConfig field")
    p.add_argument("--mode", choices=("one_hot", "categorical", "independent"))
    p.add_argument("--window-length", type=int)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--max-time", type=float, help="stop after this many seconds of training (then save as at the end)")
    p.add_argument("--init-adapter", help="start from this saved adapter (same drafter settings) instead of a new one")
    p.add_argument("--device", choices=("cpu", "cuda"))
    p.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    p.add_argument("--no-progress", action="store_true")


def _cmd_distill(args) -> int:
    import json

    from ptp.train import DistillConfig, distill
    from ptp.train.config import parse_overrides

    names = ("model", "drafter_model", "data", "out", "mode", "device", "window_length", "max_steps", "max_time",
             "init_adapter")  # fmt: skip
    overrides = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    overrides.update({"train_drafter_base": True} if args.train_drafter_base else {})
    overrides.update({"resume": True} if args.resume else {})
    overrides.update({"progress": False} if args.no_progress else {})
    try:
        overrides.update(parse_overrides(args.set))
        result = distill(DistillConfig.load(args.config, overrides))
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"ptp distill: {error}") from error
    if result.main_process:
        print(json.dumps({"adapter": str(result.adapter), "run_dir": str(result.run_dir), **result.evaluation}))
    return 0


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a saved adapter on held-out windows of a data directory")
    p.add_argument("--model", help="base model (teacher); optional for an adapter that holds base/ and no teacher")
    p.add_argument("--adapter", required=True, help="adapter directory from `ptp distill`")
    p.add_argument("--drafter-model", help="a separate drafter's base (not needed if its adapter holds base/)")
    p.add_argument("--data", required=True, help="data directory from `ptp pregenerate`")
    p.add_argument("--split", choices=("eval", "all"), default="eval", help="eval: the prompts distill held out")
    p.add_argument(
        "--run-config",
        help="a distill run's config.json whose evaluation settings become the defaults "
        "(default: <adapter>.run/config.json when it exists), so the numbers equal the run's",
    )
    p.add_argument("--rows", type=int, help="packed rows to evaluate at most (default: the run's eval_rows, else 256)")
    p.add_argument("--windows-per-row", type=int, help="default: the run's, else 64")
    p.add_argument("--eval-fraction", type=float, help="distill's eval_fraction for --split eval (default: the run's)")
    p.add_argument("--row-length", type=int, help="tokens per packed row (default: the run's, else distill's rule)")
    p.add_argument(
        "--batch-size", type=int, help="rows per batch; the windows depend on it (default: the run's, else 4)"
    )
    p.add_argument("--loss", choices=("cross_entropy", "forward_kl", "reverse_kl"), help="default: as distill's")
    p.add_argument("--seed", type=int, help="distill's seed: the split, the windows and the u's (default: the run's)")
    p.add_argument("--device", choices=("cpu", "cuda"))
    p.add_argument("--precision", choices=("auto", "float32", "bf16"), default="auto")
    p.add_argument("--out", help="also write the metrics to this JSON file")
    p.add_argument("--write-histogram", action="store_true", help="store the histogram in the adapter's config")


def _cmd_evaluate(args) -> int:
    import json

    from ptp.train import evaluate_adapter
    from ptp.train.checkpoint import default_run_dir

    # An explicit flag wins, then the run's own configuration, then evaluate_adapter's defaults (distill's).
    names = {"rows": "eval_rows", "windows_per_row": None, "eval_fraction": None, "row_length": None,
             "batch_size": None, "loss": None, "seed": None, "position_decay": None}  # fmt: skip
    run_config = Path(args.run_config or default_run_dir(args.adapter, None) / "config.json")
    if args.run_config and not run_config.is_file():
        raise SystemExit(f"ptp evaluate: no run configuration at {run_config}")
    settings = {}
    if run_config.is_file():
        run = json.loads(run_config.read_text())["config"]  # distill's resolved DistillConfig
        settings = {k: run[field or k] for k, field in names.items() if run.get(field or k) is not None}
        print(f"evaluation settings of {run_config}")
    settings.update({k: getattr(args, k) for k in names if getattr(args, k, None) is not None})
    try:
        metrics = evaluate_adapter(
            args.model, args.adapter, args.data, drafter_model=args.drafter_model, split=args.split,
            device=args.device, precision=args.precision, write_histogram=args.write_histogram, **settings,
        )  # fmt: skip
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"ptp evaluate: {error}") from error
    print(f"{metrics['split']} split: {metrics['rows']} rows, {metrics['windows']} windows")
    print(f"mean correct prefix {metrics['correct_prefix']:.3f}   loss {metrics['loss']:.4f}")
    print("position   " + " ".join(f"{n:>6}" for n in range(len(metrics["histogram"]))))
    print("histogram  " + " ".join(f"{v:6.3f}" for v in metrics["histogram"]))
    print("accuracy   " + " ".join(["     -"] + [f"{v:6.3f}" for v in metrics["accuracy"]]))
    if args.out:
        Path(args.out).write_text(json.dumps(metrics, indent=1) + "\n")
    print(json.dumps(metrics))
    return 0


def _add_train(sub) -> None:
    from ptp.train.pretrain import PretrainConfig

    p = sub.add_parser("train", help="train a causal LM on text (ar: next-token; ptp: C-PTP, no teacher; also DDP)")
    p.add_argument("--objective", choices=["ar", "ptp"], default=None, help="default: ar")
    p.add_argument("--config", help="JSON file of PretrainConfig fields; flags below override it")
    parsers = {"int": int, "float": float}
    for name, field in PretrainConfig.__dataclass_fields__.items():
        flag, kind = "--" + name.replace("_", "-"), str(field.type).removesuffix(" | None")
        if kind == "bool" and name != "progress":
            p.add_argument(flag, dest=name, action="store_true", default=None, help=f"default: {field.default}")
        elif name not in ("progress", "objective"):
            p.add_argument(flag, dest=name, type=parsers.get(kind, str), help=f"default: {field.default}")
    p.add_argument("--no-progress", action="store_true")


def _cmd_train(args) -> int:
    import json

    from ptp.train.pretrain import PretrainConfig, pretrain

    values = json.loads(Path(args.config).read_text()) if args.config else {}
    for name in PretrainConfig.__dataclass_fields__:  # --objective included
        if getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
    values["progress"] = not args.no_progress
    summary = pretrain(PretrainConfig(**values))
    if summary is not None:  # the main process reports
        print(json.dumps({k: v for k, v in summary.items() if k != "config"}))
    return 0


def _add_prompts(sub) -> None:
    p = sub.add_parser("prompts", help="write JSONL prompts cut at random line boundaries of a text corpus")
    p.add_argument("--data", default="stdlib", help="the corpus as `ptp train --data` reads it (default: stdlib)")
    p.add_argument("--held-out-fraction", type=float, default=0.05, help="as in `ptp train`: which texts are held out")
    p.add_argument("--split", choices=["train", "held-out"], required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--max-lines", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--final-newline",
        action="store_true",
        help="keep each prompt's last line ending (a bare newline token after which models tend to stop; the shipped "
        "model's prompt files were cut this way)",
    )
    p.add_argument("--out", required=True)


def _cmd_prompts(args) -> int:
    import json

    from ptp.data.stdlib import line_prompts
    from ptp.train.pretrain import read_text_corpus

    try:
        train, held_out = read_text_corpus(args.data, args.held_out_fraction)
        texts = train if args.split == "train" else held_out
        if not texts:
            raise ValueError(f"the {args.split} split of {args.data} is empty")
        prompts = line_prompts(texts, args.count, args.seed, args.max_lines, args.final_newline)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"ptp prompts: {error}") from error
    Path(args.out).write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    print(f"wrote {len(prompts)} prompts to {args.out}")
    return 0


def _add_chat_prompts(sub) -> None:
    p = sub.add_parser("chat-prompts", help="write JSONL chat prompts of many task families, built offline")
    p.add_argument("--out", required=True, help="JSONL file to write ({'messages': [...], 'category': ...} lines)")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--exclude",
        action="extend",
        nargs="+",
        default=[],
        metavar="JSONL",
        help="evaluation files (e.g. Spec-Bench question.jsonl) whose exact and near duplicates are left out",
    )
    p.add_argument(
        "--site-packages",
        action="store_true",
        help="also draw from the documentation of installed site-packages (the set then depends on them)",
    )


def _cmd_chat_prompts(args) -> int:
    import json
    import time

    from ptp.data.chat_prompts import build_chat_prompts, write_jsonl

    start = time.perf_counter()
    try:
        built = build_chat_prompts(args.count, args.seed, args.exclude, args.site_packages)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"ptp chat-prompts: {error}") from error
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


def _add_serve(sub) -> None:
    from ptp.serve.config import ServeConfig

    d = ServeConfig()
    p = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (chat, completions, streaming, batching)")
    p.add_argument("--model", help="base model directory (default: the shipped model)")
    p.add_argument("--adapter", help="PTP adapter directory for --model (alone: an adapter that holds its base)")
    p.add_argument("--host", default=d.host, help=f"address to bind (default: {d.host}, this machine only)")
    p.add_argument("--port", type=int, default=d.port, help=f"default: {d.port}")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1 and /metrics")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help=f"rows decoded together (default: {d.max_batch})")
    p.add_argument("--max-queue", type=int, default=d.max_queue, help=f"waiting before 429 (default: {d.max_queue})")
    p.add_argument("--no-ptp", action="store_true", help="one token per call, no drafter (same text for the same seed)")
    p.add_argument("--max-tokens", type=int, default=d.max_tokens, help=f"largest max_tokens (default: {d.max_tokens})")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes, help=f"default: {d.max_body_bytes}")
    p.add_argument("--served-model-name", help="model id in the API (default: the model directory's name)")
    p.add_argument("--auxiliary-budget", type=int, help="auxiliary slots per call (on a CPU fewer are faster)")
    p.add_argument("--max-draft-length", type=int, help="longest draft group of the engine")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")


def _cmd_serve(args) -> int:
    from ptp.serve.config import ServeConfig
    from ptp.serve.server import serve

    try:
        config = ServeConfig(
            model=args.model, adapter=args.adapter, host=args.host, port=args.port, api_key=args.api_key,
            max_batch=args.max_batch, max_queue=args.max_queue, use_drafter=not args.no_ptp,
            max_tokens=args.max_tokens, max_body_bytes=args.max_body_bytes, served_model_name=args.served_model_name,
            device=args.device, auxiliary_budget=args.auxiliary_budget, max_draft_length=args.max_draft_length,
            threads=args.threads,
        )  # fmt: skip
        serve(config)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"ptp serve: {error}") from error
    return 0


def _add_bench_serve(sub) -> None:
    from ptp.bench.serve_load import LoadConfig

    d = LoadConfig(url="http://127.0.0.1:8000")
    p = sub.add_parser("bench-serve", help="load-test a running `ptp serve` on this machine (bounded)")
    p.add_argument("--url", default=d.url, help=f"the server, loopback only (default: {d.url})")
    p.add_argument("--clients", type=int, default=d.clients, help=f"streaming clients (default: {d.clients})")
    p.add_argument("--seconds", type=float, default=d.seconds, help=f"seconds of load (default: {d.seconds:g})")
    p.add_argument("--max-tokens", type=int, default=d.max_tokens, help=f"per request (default: {d.max_tokens})")
    p.add_argument("--endpoint", choices=("completions", "chat"), default=d.endpoint)
    p.add_argument("--distinct", type=int, default=d.distinct, help=f"(prompt, seed) pairs (default: {d.distinct})")
    p.add_argument("--max-requests", type=int, default=d.max_requests, help=f"default: {d.max_requests}")
    p.add_argument("--temperature", type=float, help="default: the server's (the drafter's sampling)")
    p.add_argument("--api-key")
    p.add_argument("--out", help="also write the report to this JSON file")


def _cmd_bench_serve(args) -> int:
    import json

    from ptp.bench.serve_load import LoadConfig, describe, load_test

    try:
        config = LoadConfig(
            url=args.url, clients=args.clients, seconds=args.seconds, max_tokens=args.max_tokens,
            endpoint=args.endpoint, distinct=args.distinct, max_requests=args.max_requests,
            temperature=args.temperature, api_key=args.api_key,
        )  # fmt: skip
        report = load_test(config)
    except (ValueError, OSError) as error:
        raise SystemExit(f"ptp bench-serve: {error}") from error
    print(describe(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))
    return 0 if report["errors"] == 0 and report["seeded_all_identical"] else 1


COMMANDS = {
    "generate": (_add_generate, _cmd_generate),
    "prompts": (_add_prompts, _cmd_prompts),
    "chat-prompts": (_add_chat_prompts, _cmd_chat_prompts),
    "train": (_add_train, _cmd_train),
    "bench": (_add_bench, _cmd_bench),
    "bench-forward": (_add_bench_forward, _cmd_bench_forward),
    "demo": (_add_demo, _cmd_demo),
    "chat": (_add_chat, _cmd_chat),
    "convert-gguf": (_add_convert_gguf, _cmd_convert_gguf),
    "pregenerate": (_add_pregenerate, _cmd_pregenerate),
    "distill": (_add_distill, _cmd_distill),
    "evaluate": (_add_evaluate, _cmd_evaluate),
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
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command][1](args)


if __name__ == "__main__":
    sys.exit(main())
