"""``ptp demo``: the same prompts decoded one token per call and with PTP, shown side by side.

Both runs use the same auxiliaries, so the texts must be identical; the PTP text is printed in alternating colours,
one colour block per forward call, so that the parallelism is visible.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import torch

#: Cut before the last line's newline, as `ptp prompts` cuts: a byte-level BPE merges a newline with the next line's
#: indentation, so a prompt that ends in a bare newline token is where the model has mostly seen a file end.
PROMPTS = (
    "def fibonacci(n):",
    "import os\n\n\ndef list_python_files(directory):",
    "class Stack:\n    def __init__(self):",
    'def parse_args(argv=None):\n    """Parse the command line."""',
)

_COLOURS = ("\033[38;5;33m", "\033[38;5;208m")  # blue, orange
_RESET = "\033[0m"


@dataclass
class DemoResult:
    prompt: str
    text: str
    new_tokens: int
    identical: bool
    ar_calls: int
    ar_seconds: float
    ptp_calls: int
    ptp_seconds: float
    chunks: list[str]

    @property
    def tokens_per_call(self) -> float:
        return self.new_tokens / self.ptp_calls

    @property
    def speedup(self) -> float:
        return self.ar_seconds / max(self.ptp_seconds, 1e-9)


def run_prompt(model, tokenizer, prompt: str, max_new_tokens: int, seed: int, **engine) -> DemoResult:
    """Decode ``prompt`` with plain AR and with PTP from the same auxiliaries; time both."""
    ids = tokenizer(prompt, return_tensors="pt").input_ids.to(model.device)
    u = torch.rand((1, max_new_tokens), generator=torch.Generator().manual_seed(seed))
    common = dict(
        max_new_tokens=max_new_tokens,
        auxiliaries=u,
        sampling=model.config.sampling,  # the configuration the drafter was trained for
        eos_token_id=tokenizer.eos_token_id,
    )
    start = time.perf_counter()
    ar = model.generate(ids, use_drafter=False, **common)
    ar_seconds = time.perf_counter() - start
    start = time.perf_counter()
    fast = model.generate(ids, **common, **engine)
    ptp_seconds = time.perf_counter() - start
    tokens = fast.rows()[0]
    chunks, at = [], 0
    for n in fast.accept_lengths[0]:
        chunks.append(tokenizer.decode(tokens[at : at + n]))
        at += n
    return DemoResult(
        prompt=prompt,
        text=tokenizer.decode(tokens),
        new_tokens=len(tokens),
        identical=ar.rows() == fast.rows(),
        ar_calls=ar.num_calls,
        ar_seconds=ar_seconds,
        ptp_calls=fast.num_calls,
        ptp_seconds=ptp_seconds,
        chunks=chunks,
    )


def render(result: DemoResult, colour: bool) -> str:
    """The prompt, then the completion with one visible chunk per forward call."""
    if colour:
        body = "".join(_COLOURS[i % 2] + chunk + _RESET for i, chunk in enumerate(result.chunks))
    else:
        body = "".join(f"[{chunk}]" for chunk in result.chunks)
    return result.prompt + body


def run_demo(
    model, tokenizer, prompts=PROMPTS, max_new_tokens: int = 128, seed: int = 0, out=None, **engine
) -> list[DemoResult]:
    """Decode each prompt both ways and print the comparison; ``engine`` goes to ``generate`` (e.g. the budget)."""
    out = out or sys.stdout
    colour = out.isatty()
    results = []
    for i, prompt in enumerate(prompts):
        result = run_prompt(model, tokenizer, prompt, max_new_tokens, seed + i, **engine)
        results.append(result)
        print("-" * 100, file=out)
        print(render(result, colour), file=out)
        print(
            f"\n  identical to one-token-per-call sampling: {'yes' if result.identical else 'NO'} | "
            f"AR {result.ar_calls} calls {result.ar_seconds:.2f}s | PTP {result.ptp_calls} calls "
            f"{result.ptp_seconds:.2f}s | {result.tokens_per_call:.2f} tokens/call | speedup {result.speedup:.2f}x",
            file=out,
        )
    total_ar = sum(r.ar_seconds for r in results)
    total_ptp = sum(r.ptp_seconds for r in results)
    tokens = sum(r.new_tokens for r in results)
    calls = sum(r.ptp_calls for r in results)
    print("=" * 100, file=out)
    print(
        f"all identical: {all(r.identical for r in results)} | {tokens} tokens | "
        f"PTP {tokens / calls:.2f} tokens/call | "
        f"wall clock AR {total_ar:.2f}s, PTP {total_ptp:.2f}s, speedup {total_ar / max(total_ptp, 1e-9):.2f}x",
        file=out,
    )
    return results
