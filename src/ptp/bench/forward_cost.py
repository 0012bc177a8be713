"""What one forward call costs against the number of new tokens in it: how much of tau can become speedup.

At batch size 1 a decoder's forward call is bound by reading its weights, so a call over n new tokens costs about
as much as a call over one, until n is large enough for the arithmetic to dominate. This module times one call of n
new tokens after a cached context (n = 1, 2, 4, ..., 128 after 512 tokens by default) for a randomly initialised
Llama-shaped model, and puts it next to the memory-bandwidth floor: the bytes of the weights one call reads divided
by the device's measured copy bandwidth. Two attention masks are timed: the model's own causal mask, and an
explicit boolean ``[1, 1, n, context + n]`` mask, the kind the PTP engine passes (it may select another kernel).

Then, on the same model and context, the fastest decoding ``transformers`` itself offers (:func:`static_decode`:
``generate`` with a static cache and the compiled forward, the baseline to beat), and whole calls of the decoding
engine (:func:`engine_calls`): one-token decoding, set against the floor and against ``transformers``, and PTP calls
of a fresh adapter at several slot budgets, each call's host work included, captured as a CUDA graph on a GPU: what a
call with slots costs against a plain one, which is what a drafter's tau is divided by.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, DynamicCache, LlamaConfig

from ptp.bench import plots
from ptp.bench.methods import hf_generation_config, static_compiled_options
from ptp.bench.timing import environment, median, synchronize, timed
from ptp.compat import cache_argument
from ptp.runtime import resolve_device, resolve_dtype
from ptp.sampling import SamplingConfig

#: Llama shapes by name: ``tiny`` for tests, ``135m`` (SmolLM2-135M, the default teacher), ``1.1b`` (TinyLlama-1.1B),
#: ``7b`` (Llama-2-7B).
PRESETS: dict[str, dict] = {
    "tiny": dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=1024),
    "135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                 num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192),
    "1.1b": dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                 num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048),
    "7b": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096),
}  # fmt: skip
DEFAULT_NEW_TOKENS = (1, 2, 4, 8, 16, 32, 64, 128)
MASKS = ("causal", "bool_mask")
#: The engine's PTP calls timed, as (slots, longest group): a call holds slots + group positions.
ENGINE_BUDGETS = ((2, 2), (4, 4), (9, 3), (16, 8), (32, 16))


def build_model(preset: str, device: str | torch.device, dtype: torch.dtype):
    """A randomly initialised ``LlamaForCausalLM`` of a preset shape, created directly on ``device``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose from {', '.join(PRESETS)}")
    config = LlamaConfig(**PRESETS[preset], tie_word_embeddings=False)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def copy_bandwidth(device: str | torch.device, nbytes: int | None = None, repeats: int = 10) -> float:
    """Measured device copy bandwidth in bytes per second, counting the bytes read plus the bytes written.

    ``nbytes`` defaults to 1 GiB on CUDA (far beyond the caches) and 64 MiB on the CPU.
    """
    device = torch.device(device)
    nbytes = nbytes or (1 << 30 if device.type == "cuda" else 1 << 26)
    source = torch.ones(nbytes, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    for _ in range(3):
        target.copy_(source)
    times = [timed(lambda: target.copy_(source), device)[1] for _ in range(repeats)]
    return 2 * nbytes / median(times)


def streamed_bytes(model) -> int:
    """Bytes of the weights one forward call reads: every parameter except the input embedding table (of which
    a call gathers only its tokens' rows)."""
    embedding = model.get_input_embeddings().weight
    return sum(p.numel() * p.element_size() for p in model.parameters() if p is not embedding)


def _causal_block(context: int, n: int, device) -> torch.Tensor:
    allowed = torch.ones(1, 1, n, context + n, dtype=torch.bool, device=device)
    allowed[..., context:] = torch.ones(n, n, dtype=torch.bool, device=device).tril()
    return allowed


@torch.inference_mode()
def forward_cost(
    preset: str = "tiny",
    *,
    device: str | torch.device | None = None,
    dtype: str = "bfloat16",
    context: int = 512,
    new_tokens: tuple[int, ...] = DEFAULT_NEW_TOKENS,
    repeats: int = 10,
    warmup: int = 3,
    copy_bytes: int | None = None,
    seed: int = 0,
    engine_budgets: tuple[tuple[int, int], ...] = ENGINE_BUDGETS,
    static_tokens: int = 32,
) -> dict:
    """Time one forward call of n new tokens after ``context`` cached tokens, for each n in ``new_tokens``.

    Returns a dict with the preset, its shape, the bytes per call and the bandwidth floor in ms (``floor_ms``), and
    ``points``: per n the median milliseconds with the causal mask (``causal_ms``) and with an explicit boolean mask
    (``bool_mask_ms``), ``causal_ms`` relative to the first count (``causal_relative``), and on CUDA the GPU kernel
    time of each (``causal_kernel_ms``, ``bool_mask_kernel_ms``; wall time minus these is host overhead);
    ``hf_static``, :func:`static_decode` over ``static_tokens`` tokens with its ms per token against the floor
    (``vs_floor``; 0 tokens: left out); and ``engine``, :func:`engine_calls` at ``engine_budgets`` with its one-token
    call against the floor (``ar_vs_floor``) and against ``hf_static`` (``ar_vs_hf_static``) (no budgets: left out).
    """
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    if repeats < 1 or warmup < 0 or context < 1 or not new_tokens or min(new_tokens) < 1 or static_tokens < 0:
        raise ValueError("need repeats >= 1, warmup >= 0, context >= 1, new token counts >= 1 and static_tokens >= 0")
    torch.manual_seed(seed)
    with torch.inference_mode(False):  # ordinary weights, as a loaded model's: no inference tensor runs packed
        model = build_model(preset, device, torch_dtype)
    limit = model.config.max_position_embeddings
    longest = max(*new_tokens, static_tokens + 1)
    if context + longest > limit:
        raise ValueError(f"context {context} + {longest} new tokens exceeds the {limit} positions of {preset}")
    bandwidth = copy_bandwidth(device, copy_bytes)
    weights = streamed_bytes(model)
    points = _sweep(model, context, new_tokens, repeats, warmup, device)
    layers, kv_heads = model.config.num_hidden_layers, model.config.num_key_value_heads
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    kv_bytes = 2 * layers * kv_heads * head_dim * context * torch.finfo(torch_dtype).bits // 8
    result = {
        "preset": preset,
        "shape": PRESETS[preset],
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": str(torch_dtype).removeprefix("torch."),
        "context": context,
        "streamed_weight_bytes": weights,
        "context_kv_bytes": kv_bytes,
        "copy_bandwidth_gb_s": bandwidth / 1e9,
        "floor_ms": 1000 * weights / bandwidth,
        "repeats": repeats,
        "warmup": warmup,
        "points": points,
        "environment": environment(device),
    }
    floor_ms = result["floor_ms"]
    if static_tokens:
        result["hf_static"] = static_decode(model, context, static_tokens, repeats, device)
        result["hf_static"]["vs_floor"] = result["hf_static"]["ms_per_token"] / floor_ms
    if engine_budgets:  # last: it wraps the model
        engine = result["engine"] = engine_calls(model, context, engine_budgets, repeats, device)
        engine["ar_vs_floor"] = engine["ar_ms"] / floor_ms
        if static_tokens:
            engine["ar_vs_hf_static"] = engine["ar_ms"] / result["hf_static"]["ms_per_token"]
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def _kernel_ms(call, device: torch.device) -> float:
    """The summed durations of the GPU work of one call, in ms: its cost without the host's launch overhead (what a
    call captured in a CUDA graph would approach)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        call()
        synchronize(device)
    return sum(event.self_device_time_total for event in prof.key_averages()) / 1000


def _sweep(model, context: int, new_tokens, repeats: int, warmup: int, device: torch.device) -> list[dict]:
    """Median times of every (n, mask) call. The calls take turns round by round, so that a drift of the machine
    over the sweep (clocks, other load) spreads over all points alike instead of tilting the curve."""
    vocab = model.config.vocab_size
    cache = DynamicCache()
    model(torch.randint(vocab, (1, context), device=device), use_cache=True, **cache_argument(model, cache))
    calls = {}
    for n in new_tokens:
        ids = torch.randint(vocab, (1, n), device=device)
        positions = torch.arange(context, context + n, device=device).unsqueeze(0)
        for mask in MASKS:
            attention = _causal_block(context, n, device) if mask == "bool_mask" else None

            def call(ids=ids, positions=positions, attention=attention, n=n):
                kwargs = cache_argument(model, cache)
                model(ids, position_ids=positions, attention_mask=attention, use_cache=True, **kwargs)
                cache.crop(-n)  # the next call sees the same context again

            calls[n, mask] = call
    times: dict[tuple[int, str], list[float]] = {key: [] for key in calls}
    for round_ in range(warmup + repeats):
        for key, call in calls.items():
            _, seconds = timed(call, device)
            if round_ >= warmup:
                times[key].append(seconds)
    points = []
    for n in new_tokens:
        point = {"new_tokens": n}
        for mask in MASKS:
            point[f"{mask}_ms"] = 1000 * median(times[n, mask])
            if device.type == "cuda":
                point[f"{mask}_kernel_ms"] = median([_kernel_ms(calls[n, mask], device) for _ in range(3)])
        point["causal_relative"] = point["causal_ms"] / (1000 * median(times[new_tokens[0], "causal"]))
        points.append(point)
    return points


def static_decode(model, context: int, tokens: int, repeats: int, device: torch.device) -> dict:
    """Milliseconds per token of the fastest decoding ``transformers`` offers: greedy ``generate`` with a static
    cache and the compiled forward (:func:`ptp.bench.methods.static_compiled_options`) after a random
    ``context``-token prompt. Generations of ``tokens + 1`` and of 1 new token take turns ``repeats`` times; the
    difference of their medians over ``tokens`` is the cost of one decoding step with ``generate``'s host work, the
    eager prefill left out. Both use one cache length, so one compilation serves them; its first generation's
    seconds are ``compile_s``."""
    prompt = torch.randint(model.config.vocab_size, (1, context), device=device)
    greedy = SamplingConfig.greedy()

    def generation(new: int):
        # No EOS: a random model may predict its EOS id, and the step count must not depend on it. generate then
        # needs a pad id, which a batch of one never uses.
        options = dict(max_cache_len=context + tokens + 1, **static_compiled_options())
        config = hf_generation_config(greedy, new, [], 0, **options)
        return lambda: model.generate(
            input_ids=prompt, attention_mask=torch.ones_like(prompt), generation_config=config
        )

    long, short = generation(tokens + 1), generation(1)
    out, compile_s = timed(long, device)
    if out.shape[1] != context + tokens + 1:
        raise RuntimeError(f"generate made {out.shape[1] - context} tokens, not {tokens + 1}")
    short()
    times: dict[str, list[float]] = {"long": [], "short": []}
    for _ in range(repeats):
        times["long"].append(timed(long, device)[1])
        times["short"].append(timed(short, device)[1])
    ms = 1000 * (median(times["long"]) - median(times["short"])) / tokens
    return {"tokens": tokens, "ms_per_token": ms, "compile_s": compile_s}


def engine_calls(model, context: int, budgets, calls: int, device: torch.device, rounds: int = 3) -> dict:
    """Milliseconds per call of the decoding engine (:func:`ptp.decode.engine.generate`, batch 1) after a random
    ``context``-token prompt: one-token decoding (``ar_ms``; ``ar_matched_ms``: laid out as the default drafting
    call, as plain decoding of a drafter is in 16 bits) and, for each (slots, longest group) of ``budgets``, a PTP
    call of a fresh adapter (rank 32, window 16; its drafts are rarely right, so nearly every call commits one
    token); the median of ``calls`` calls in each of ``rounds`` rounds (:func:`ptp.decode.cost.time_calls`). Each
    setting also reports what its call is made of (:func:`call_kernels`): ``ar_kernels`` and, per PTP call,
    ``kernels`` (with ``kernel_ms`` on a GPU). ``model`` is wrapped in place and should not be used afterwards."""
    from ptp.decode.cost import time_calls
    from ptp.model.ptp import PTPModel

    with torch.inference_mode(False):  # the adapter's factors are ordinary tensors (their cast copies track versions)
        drafter = PTPModel(model, window_length=16)
    prompt = torch.randint(model.config.vocab_size, (1, context), device=device)
    plain = [dict(use_drafter=False, match_drafting=False), dict(use_drafter=False, match_drafting=True)]
    settings = plain + [dict(auxiliary_budget=s, max_draft_length=g) for s, g in budgets]
    ar, matched, *ptp_ms = (1000 * seconds for seconds in time_calls(drafter, prompt, settings, calls, rounds))
    ar_kernels = call_kernels(drafter, prompt, plain[0])
    ptp_kernels = [call_kernels(drafter, prompt, options) for options in settings[len(plain) :]]
    ptp_calls = [
        {"slots": slots, "group": group, "positions": slots + group, "ms": ms, "vs_ar": ms / ar} | kernels
        for (slots, group), ms, kernels in zip(budgets, ptp_ms, ptp_kernels, strict=True)
    ]
    return {"adapter": "fresh, rank 32, window 16", "ar_ms": ar, "ar_kernels": ar_kernels,
            "ar_matched_ms": matched, "ptp": ptp_calls}  # fmt: skip


def call_kernels(model, prompt: torch.Tensor, options: dict, calls: int = 4) -> dict:
    """What one eager decoding call of ``generate(model, prompt, **options)`` is made of: on a GPU the kernels it
    launches (``kernels``) and their summed GPU time (``kernel_ms``), which a captured call replays back to back, so
    that a small model's call costs about its number of kernels times a few microseconds; on a CPU the operators it
    dispatches (``kernels``). Measured under ``torch.profiler`` as the difference between a generation of
    ``2 * calls`` calls and one of ``calls``, so that the prefill cancels out."""
    from torch.profiler import ProfilerActivity, profile

    from ptp.decode.engine import generate

    device = prompt.device
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    totals = []
    for count in (calls, 2 * calls):
        commits: list[int] = []
        with profile(activities=activities) as prof:
            generate(model, prompt, max_new_tokens=count, eos_token_id=[], seed=0, cuda_graph=False,
                     on_commit=lambda tokens, commits=commits: commits.append(1), **options)  # fmt: skip
            synchronize(device)
        events = prof.key_averages()
        if device.type == "cuda":
            kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
            totals.append((len(commits), sum(e.count for e in kernels), sum(e.self_device_time_total for e in kernels)))
        else:  # operators called by the engine itself, not from inside another operator
            dispatched = sum(1 for e in prof.events() if e.name.startswith("aten::") and not _inside_operator(e))
            totals.append((len(commits), dispatched, 0.0))
    (calls_1, kernels_1, us_1), (calls_2, kernels_2, us_2) = totals
    extra = max(calls_2 - calls_1, 1)
    result = {"kernels": round((kernels_2 - kernels_1) / extra)}
    if device.type == "cuda":
        result["kernel_ms"] = (us_2 - us_1) / extra / 1000
    return result


def _inside_operator(event) -> bool:
    parent = event.cpu_parent
    return parent is not None and parent.name.startswith("aten::")


def write_forward_cost(results: list[dict], out: str | Path) -> dict:
    """Write ``forward_cost.json`` and ``forward_cost.png`` into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "forward_cost.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    png = plots.forward_cost(results, out / "forward_cost.png")
    return {"json": str(out / "forward_cost.json"), "png": str(png)}
