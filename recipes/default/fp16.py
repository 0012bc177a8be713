"""Convert a model or adapter directory to float16 weights (the shipped model's format): python fp16.py SRC DST.

A model directory goes through ``save_pretrained``; an adapter directory (``adapter_model.safetensors``) has its
safetensors files cast and its other files copied. An adapter stored in float16 loads into a float32 base as well
(its weights are cast on loading): the drafter proposes a little differently, and the output stays exact.
"""

import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

source, target = Path(sys.argv[1]), Path(sys.argv[2])
if (source / "adapter_model.safetensors").is_file():
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.suffix == ".safetensors":
            weights = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in load_file(path).items()}
            save_file(weights, target / path.name)
        elif path.is_file():
            shutil.copy2(path, target / path.name)
else:
    AutoModelForCausalLM.from_pretrained(source, dtype=torch.float16).save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
