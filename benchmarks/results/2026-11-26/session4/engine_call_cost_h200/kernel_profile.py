"""GPU kernels of one engine call of the default model: count and summed kernel time per call (eager: the kernels a
captured graph replays) next to the wall time per call with the captured step; AR, PTP with 32 and with 4 slots.
Usage: python devrun/kernel_profile.py OUT.json"""

import collections
import json
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

import ptp

out = sys.argv[1]
cuda = torch.cuda.is_available()
model, tok = ptp.load_default(device="cuda" if cuda else "cpu")
ids = tok("def parse_args(argv):\n    ", return_tensors="pt").input_ids
result = {}
for name, opts in (("ar", dict(use_drafter=False)), ("ptp32", dict()), ("ptp4", dict(auxiliary_budget=4))):
    o = dict(max_new_tokens=128, seed=0, sampling=model.config.sampling, eos_token_id=[], **opts)
    walls = {}
    for graph in (False, True):
        model.generate(ids, cuda_graph=graph, **o) if cuda else model.generate(ids, **o)
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        g = model.generate(ids, cuda_graph=graph, **o) if cuda else model.generate(ids, **o)
        if cuda:
            torch.cuda.synchronize()
        walls[graph] = (time.perf_counter() - start) / g.num_calls * 1e3
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        g = model.generate(ids, cuda_graph=False, **o) if cuda else model.generate(ids, **o)
        if cuda:
            torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    calls = g.num_calls
    per = collections.defaultdict(lambda: [0, 0.0])
    for e in kernels:
        per[e.name[:100]][0] += 1
        per[e.name[:100]][1] += e.device_time
    total = sum(v[1] for v in per.values())
    result[name] = dict(
        calls=calls,
        tau=g.tokens_per_call,
        kernels_per_call=len(kernels) / calls,
        kernel_us_per_call=total / calls,
        eager_ms_per_call=walls[False],
        captured_ms_per_call=walls[True],
        top=sorted(([k, v[0] / calls, v[1] / calls] for k, v in per.items()), key=lambda r: -r[2])[:30],
    )
    print(
        f"{name}: {calls} calls, {len(kernels) / calls:.0f} kernels/call, {total / calls:.0f} us kernel time/call, "
        f"wall eager {walls[False]:.2f} ms, captured {walls[True]:.2f} ms per call"
    )
with open(out, "w") as handle:
    json.dump(result, handle, indent=1)
for name in ("ar", "ptp32"):
    print(name)
    for k, n, us in result[name]["top"][:18]:
        print(f"{us:8.1f} us {n:6.1f}x {k}")
