"""Distillation throughput on one GPU for a ~110M Llama (random weights: speed does not depend on them).

    python recipes/distill_throughput.py            # CUDA, the numbers in BENCHMARKS.md
    python recipes/distill_throughput.py --small    # a seconds-long CPU smoke run of the same path

Pregenerates with the teacher, then runs three 30-step distillations and prints one JSON line each: tokens/s per
logging interval (the first holds the warm-up), the loss, and the peak GPU memory.
"""

import argparse
import json
import tempfile
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ptp.data import PregenerateConfig, pregenerate
from ptp.train import DistillConfig, distill

parser = argparse.ArgumentParser()
parser.add_argument("--small", action="store_true")
small = parser.parse_args().small
device = "cpu" if small else "cuda"
vocab, hidden, layers = (320, 32, 2) if small else (32000, 768, 12)
config = LlamaConfig(
    vocab_size=vocab,
    hidden_size=hidden,
    intermediate_size=hidden * 8 // 3,
    num_hidden_layers=layers,
    num_attention_heads=max(2, hidden // 64),
    max_position_embeddings=2048,
    tie_word_embeddings=True,
)
torch.manual_seed(0)
teacher = LlamaForCausalLM(config).to(device, torch.float32 if small else torch.bfloat16)
print("parameters (M)", sum(p.numel() for p in teacher.parameters()) / 1e6, flush=True)

root = tempfile.mkdtemp()
prompts = torch.randint(0, config.vocab_size, (8 if small else 64, 32), generator=torch.Generator().manual_seed(0))
new_tokens = 48 if small else 480
start = time.time()
pregenerate(
    teacher,
    prompts.tolist(),
    f"{root}/data",
    PregenerateConfig(n_per_prompt=8, max_new_tokens=new_tokens, batch_size=256),
    progress=False,
)
seconds = time.time() - start
print(json.dumps({"pregenerate_new_tokens_per_s": round(len(prompts) * 8 * new_tokens / seconds)}), flush=True)

runs = (dict(mode="one_hot", batch_size=4), dict(mode="one_hot", batch_size=8), dict(mode="categorical", batch_size=4))
for run in runs:
    if not small:
        torch.cuda.reset_peak_memory_stats()
    base = LlamaForCausalLM(config)
    base.load_state_dict(teacher.state_dict())
    result = distill(
        DistillConfig(
            data=f"{root}/data",
            out=tempfile.mkdtemp() + "/adapter",
            window_length=16,
            windows_per_row=128,
            row_length=256 if small else 2048,
            max_steps=3 if small else 30,
            warmup_steps=1 if small else 5,
            log_interval=1 if small else 10,
            eval_interval=0,
            checkpoint_interval=0,
            eval_rows=8,
            progress=False,
            **run,
        ),
        base_model=base,
    )
    log = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in log if r["split"] == "train"]
    peak = 0.0 if small else torch.cuda.max_memory_allocated() / 2**30
    print(
        json.dumps(
            {
                **run,
                "tokens_per_s": [round(r["tokens_per_s"]) for r in train],
                "loss": [round(r["loss"], 3) for r in train],
                "peak_gib": round(peak, 1),
            }
        ),
        flush=True,
    )
