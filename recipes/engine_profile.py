"""Wall time per engine call of the default model, plain AR vs PTP, and a host profile of one PTP generate call.

Usage: python recipes/engine_profile.py [--device cuda]   (BENCHMARKS.md section 7 ran it on an H100)
"""

import argparse
import cProfile
import pstats
import sys
import time

import torch

import ptp

parser = argparse.ArgumentParser()
parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
parser.add_argument("--max-new-tokens", type=int, default=128)
args = parser.parse_args()


def sync():
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()


model, tokenizer = ptp.load_default(device=args.device)
ids = tokenizer("def parse_args(argv):\n    ", return_tensors="pt").input_ids
for budget in (0, 4, 32):
    options = dict(max_new_tokens=args.max_new_tokens, seed=0, sampling=model.config.sampling)
    options.update(use_drafter=False) if budget == 0 else options.update(auxiliary_budget=budget)
    model.generate(ids, **options)  # warm-up
    sync()
    start = time.perf_counter()
    out = model.generate(ids, **options)
    sync()
    elapsed = time.perf_counter() - start
    per_call = elapsed / out.num_calls * 1e3
    print(f"auxiliary slots {budget}: {out.num_calls} calls, {elapsed * 1e3:.1f} ms, {per_call:.2f} ms per call")
profile = cProfile.Profile()
profile.enable()
model.generate(ids, max_new_tokens=args.max_new_tokens, seed=0, sampling=model.config.sampling)
sync()
profile.disable()
pstats.Stats(profile, stream=sys.stdout).sort_stats("tottime").print_stats(25)
