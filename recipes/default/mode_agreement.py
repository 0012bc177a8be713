"""How often a data directory's completions are the teacher's most likely token under their sampling configuration:
the first-slot accuracy of an ideal drafter that ignores u (the ceiling of any independent drafter's first slot; an
O-PTP slot that reads u could reach 1). BENCHMARKS.md section 17.

Usage: python recipes/default/mode_agreement.py DATA [TEACHER]   (TEACHER: the shipped teacher by default)
"""

import sys

import torch
from transformers import AutoModelForCausalLM

from ptp.data.dataset import load_dataset
from ptp.default_model import default_paths
from ptp.sampling import probabilities

data = load_dataset(sys.argv[1])
path = sys.argv[2] if len(sys.argv) > 2 else default_paths()["teacher"]
teacher = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
hits = mass = count = 0
with torch.no_grad():
    for document in data.documents:
        ids = document.tokens.view(1, -1)
        probs = probabilities(teacher(input_ids=ids).logits[0, :-1], data.sampling)
        completion = torch.arange(ids.shape[1] - 1) >= document.prompt_length - 1  # positions predicting it
        hits += int((probs.argmax(-1) == ids[0, 1:])[completion].sum())
        mass += float(probs.max(-1).values[completion].sum())
        count += int(completion.sum())
print(
    f"{sys.argv[1]}: {count} completion tokens; the sampled token is the teacher's mode {hits / count:.3f} of the "
    f"time (expected mode probability {mass / count:.3f})"
)
