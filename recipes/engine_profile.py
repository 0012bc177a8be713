"""Wall time per engine call of the default model, plain AR vs PTP, and a host profile of one PTP generate call.

Usage: python recipes/engine_profile.py [--device cuda] [--tiny | --preset 1.1b|7b] [--no-profile]
(BENCHMARKS.md sections 7, 13 and 14)

``--tiny`` swaps the default model for a random 6-layer, 64-wide Llama with an untrained adapter: its compute is
negligible, so on a CPU its time per call is the host cost that bounds small models on a GPU (section 13).
``--preset`` takes a random Llama of a real LLM's shape (``ptp.bench.forward_cost.PRESETS``, in ``--dtype``) with an
untrained adapter after a 512-token prompt: its drafts are rejected, but a call's cost does not depend on that, so it
shows what a PTP call costs next to an AR call on a model whose kernels do real work, next to the weights' floor.
"""

import argparse
import cProfile
import itertools
import pstats
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import ptp

parser = argparse.ArgumentParser()
parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
parser.add_argument("--max-new-tokens", type=int, default=128)
parser.add_argument("--tiny", action="store_true", help="a random tiny model instead of the default model")
parser.add_argument("--preset", help="a random Llama of this shape (1.1b, 7b) instead of the default model")
parser.add_argument("--dtype", default="bfloat16", help="of --preset")
parser.add_argument("--no-profile", action="store_true", help="skip the host profile")
args = parser.parse_args()


def sync():
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()


if args.tiny:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    shape = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024)  # fmt: skip
    drafter = ptp.PTPConfig(window_length=16, lora_rank=8, embedding="thermometer", embedding_size=32,
                            sampling=ptp.SamplingConfig(temperature=0.7, top_k=50, top_p=0.95))  # fmt: skip
    model = ptp.PTPModel(LlamaForCausalLM(shape), drafter).to(args.device).eval()
    ids = torch.randint(3, 500, (1, 32))
    no_eos = dict(eos_token_id=[])  # every call counts
elif args.preset:
    from ptp.bench.forward_cost import build_model, copy_bandwidth, streamed_bytes

    torch.manual_seed(0)
    base = build_model(args.preset, args.device, getattr(torch, args.dtype))
    floor = streamed_bytes(base) / copy_bandwidth(args.device) * 1e3
    print(f"{args.preset}: weights' floor {floor:.2f} ms per call (streamed bytes / measured copy bandwidth)")
    drafter = ptp.PTPConfig(window_length=16, lora_rank=32, embedding="thermometer", embedding_size=32,
                            sampling=ptp.SamplingConfig(temperature=0.7, top_k=50, top_p=0.95))  # fmt: skip
    model = ptp.PTPModel(base, drafter).eval()
    ids = torch.randint(3, base.config.vocab_size, (1, 512))
    no_eos = dict(eos_token_id=[])
else:
    no_eos = {}
    model, tokenizer = ptp.load_default(device=args.device)
    ids = tokenizer("def parse_args(argv):\n    ", return_tensors="pt").input_ids
graphs = (False, True) if args.device.startswith("cuda") else (False,)
for budget, graph in itertools.product((0, 4, 32), graphs):
    options = dict(max_new_tokens=args.max_new_tokens, seed=0, sampling=model.config.sampling, **no_eos)
    options.update(use_drafter=False) if budget == 0 else options.update(auxiliary_budget=budget)
    if args.device.startswith("cuda"):
        options.update(cuda_graph=graph)
    model.generate(ids, **options)  # warm-up (and, with a CUDA graph, its capture)
    sync()
    start = time.perf_counter()
    out = model.generate(ids, **options)
    sync()
    elapsed = time.perf_counter() - start
    per_call = elapsed / out.num_calls * 1e3
    step = "captured CUDA graph" if graph else "eager"
    print(f"auxiliary slots {budget}, {step}: {out.num_calls} calls, {elapsed * 1e3:.1f} ms, {per_call:.2f} ms/call")
if args.no_profile:
    sys.exit()
profile = cProfile.Profile()
profile.enable()
model.generate(ids, max_new_tokens=args.max_new_tokens, seed=0, sampling=model.config.sampling, cuda_graph=False,
               **no_eos)  # fmt: skip
sync()
profile.disable()
pstats.Stats(profile, stream=sys.stdout).sort_stats("tottime").print_stats(25)
