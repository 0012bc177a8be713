"""Convert a model directory to float16 weights (the shipped model's format): python fp16.py SRC DST."""

import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

source, target = sys.argv[1], sys.argv[2]
AutoModelForCausalLM.from_pretrained(source, dtype=torch.float16).save_pretrained(target)
AutoTokenizer.from_pretrained(source).save_pretrained(target)
