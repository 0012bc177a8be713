"""A deeper copy of a Llama-family model that computes the same function: every layer is followed by REPEAT - 1
copies of itself whose output projections (attention ``o_proj``, MLP ``down_proj``) are zero, so that at
initialisation they add nothing to the residual stream. As a separate drafter (``ptp distill --drafter-model OUT
--train-drafter-base``) it starts as the teacher and has spare layers to learn with (BENCHMARKS.md section 21).

Usage: python recipes/default/deepen.py TEACHER OUT [REPEAT]   (REPEAT: 2 by default)
"""

import copy
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

source, target = sys.argv[1], sys.argv[2]
repeat = int(sys.argv[3]) if len(sys.argv) > 3 else 2
model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
layers = []
for layer in model.model.layers:
    layers.append(layer)
    for _ in range(repeat - 1):
        extra = copy.deepcopy(layer)
        torch.nn.init.zeros_(extra.self_attn.o_proj.weight)
        torch.nn.init.zeros_(extra.mlp.down_proj.weight)
        layers.append(extra)
for index, layer in enumerate(layers):
    layer.self_attn.layer_idx = index  # the KV cache is indexed by layer
model.model.layers = torch.nn.ModuleList(layers)
model.config.num_hidden_layers = len(layers)
if getattr(model.config, "layer_types", None) is not None:
    model.config.layer_types = [t for t in model.config.layer_types for _ in range(repeat)]
model.save_pretrained(target)
AutoTokenizer.from_pretrained(source).save_pretrained(target)
print(f"{source}: {len(layers) // repeat} layers -> {target}: {len(layers)} layers")
