"""The ``ptp`` command: thin adapters over the Python API, one function per subcommand.

Each subcommand is a ``_cmd_<name>(args)`` function plus an ``_add_<name>(subparsers)`` that declares its arguments;
``COMMANDS`` lists them. No logic lives only here.
"""

from __future__ import annotations

import argparse
import sys

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
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def _cmd_generate(args) -> int:
    from transformers import AutoTokenizer, TextStreamer

    from ptp.default_model import load_default
    from ptp.model.ptp import PTPModel

    if args.model is None:
        if args.adapter is not None:
            raise SystemExit("ptp generate: --adapter needs --model (the default adapter belongs to the default model)")
        model, tokenizer = load_default(device=args.device)
    else:
        if args.adapter is None:
            raise SystemExit("ptp generate: --model needs --adapter (a PTP adapter trained for that model)")
        tokenizer = AutoTokenizer.from_pretrained(args.model)
        model = PTPModel.from_pretrained(args.model, args.adapter, device=args.device)
    ids = tokenizer(args.prompt, return_tensors="pt").input_ids
    streamer = TextStreamer(tokenizer, skip_prompt=False)
    out = model.generate(
        ids,
        max_new_tokens=args.max_new_tokens,
        sampling=parse_sampling(args.sampling, model.config.sampling),
        seed=args.seed,
        streamer=streamer,
        use_drafter=not args.no_drafter,
        eos_token_id=tokenizer.eos_token_id,
    )
    print(f"\n[{int(out.lengths[0])} tokens in {out.num_calls} calls, {out.tokens_per_call:.2f} tokens per call]")
    return 0


def parse_sampling(text: str | None, default):
    """``greedy`` or ``T,k,p`` (``-`` for an unset k or p) to a SamplingConfig; None gives ``default``."""
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
            temperature=float(t), top_k=None if k == "-" else int(k), top_p=None if p == "-" else float(p)
        )
    except ValueError as error:
        raise SystemExit(f"--sampling {text!r}: {error}") from error


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the shipped model: plain vs PTP decoding of a few Python prompts, side by side")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")


def _cmd_demo(args) -> int:
    from ptp.default_model import load_default
    from ptp.demo import run_demo

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_default()
    results = run_demo(model, tokenizer, max_new_tokens=args.max_new_tokens, seed=args.seed)
    return 0 if all(r.identical for r in results) else 1


COMMANDS = {
    "generate": (_add_generate, _cmd_generate),
    "demo": (_add_demo, _cmd_demo),
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
