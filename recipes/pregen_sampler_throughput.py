"""New tokens/s of the reference sampler and of the fast sampler that pregeneration uses, on the same batch.

    python recipes/pregen_sampler_throughput.py                        # CPU, 64 prompts x 128 new tokens
    python recipes/pregen_sampler_throughput.py --device cuda --batch 1024 --new-tokens 512

A random Llama (speed does not depend on the weights), prompts of 8-32 tokens, T=0.7/top-k 50/top-p 0.95. Each
sampler runs with no EOS (every row full length) and with a common token as EOS (rows of many lengths); both
samplers must return the same tokens. Prints one JSON line per case.
"""

import argparse
import json
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import ptp
from ptp.data.pregeneration import left_pad
from ptp.decode.batched import sample_batched

parser = argparse.ArgumentParser()
parser.add_argument("--device", default="cpu")
parser.add_argument("--batch", type=int, default=64)
parser.add_argument("--new-tokens", type=int, default=128)
parser.add_argument("--hidden", type=int, default=128)
parser.add_argument("--layers", type=int, default=4)
parser.add_argument("--vocab", type=int, default=2048)
args = parser.parse_args()
if args.device == "cpu":
    torch.set_num_threads(1)  # on a shared small CPU, OpenMP threads that spin while another process holds a core
torch.manual_seed(0)
config = LlamaConfig(
    vocab_size=args.vocab,
    hidden_size=args.hidden,
    intermediate_size=args.hidden * 8 // 3,
    num_hidden_layers=args.layers,
    num_attention_heads=4,
    max_position_embeddings=1024,
)
model = LlamaForCausalLM(config).to(args.device).eval()
generator = torch.Generator().manual_seed(0)
prompts = [
    torch.randint(3, args.vocab, (int(torch.randint(8, 33, (), generator=generator)),), generator=generator).tolist()
    for _ in range(args.batch)
]
ids, mask = left_pad(sorted(prompts, key=len))
u = torch.rand((args.batch, args.new_tokens), generator=generator)
sampling = ptp.SamplingConfig(temperature=0.7, top_k=50, top_p=0.95)


def run(name, eos):
    start = time.perf_counter()
    if name == "reference":
        out = ptp.sample_autoregressive(model, ids, mask, auxiliaries=u, max_new_tokens=args.new_tokens,
                                        temperature=0.7, top_k=50, top_p=0.95, eos_token_id=eos)  # fmt: skip
    else:
        out = sample_batched(model, ids, mask, auxiliaries=u, max_new_tokens=args.new_tokens, sampling=sampling,
                             eos_token_id=eos)  # fmt: skip
    if args.device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    new = int(out.lengths.sum())
    print(json.dumps(dict(sampler=name, eos=eos, new_tokens=new, seconds=round(seconds, 3),
                          tokens_per_s=round(new / seconds), calls=out.num_calls)), flush=True)  # fmt: skip
    return out.new_tokens.cpu(), out.lengths.cpu()


def compare(eos):
    """Reference, fast, twice each (the CPU may be shared); both must return the same tokens and lengths."""
    results = [run(name, eos) for name in ("reference", "fast", "reference", "fast")]
    assert all(torch.equal(a, b) for result in results[1:] for a, b in zip(result, results[0], strict=True))
    return results[0][0]


run("fast", [])  # warm-up
free = compare([])
compare(int(free.flatten().mode().values))  # a common token as EOS: rows of many lengths
