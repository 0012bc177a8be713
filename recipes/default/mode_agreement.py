"""What an ideal drafter that ignores u could reach on a data directory's completions: the ceilings of any
independent drafter (an O-PTP drafter that reads u could reach 1 at every slot). BENCHMARKS.md sections 17 and 21.

- Slot 1 (the token the teacher samples next): how often the sample is the teacher's mode under the data's sampling
  configuration, and the expected mode probability.
- Slot 2 (the token after it, the first draft the engine can accept: its slot 1 is the teacher's own token): the
  best guess without u is the mode of the two-step marginal sum_x P(x | context) P(y | context, x), where x runs over
  every token the sampling configuration keeps. Reported: how often that guess is the sampled token, and its
  expected probability.

Usage: python recipes/default/mode_agreement.py DATA [TEACHER]   (TEACHER: the shipped teacher by default)
"""

import sys

import torch
from transformers import AutoModelForCausalLM, DynamicCache

from ptp.data.dataset import load_dataset
from ptp.data.packing import document_mask
from ptp.default_model import default_paths
from ptp.model.ptp import teacher_logits, use_mask_attention
from ptp.sampling import probabilities

#: Candidate queries per forward pass of the slot-2 ceiling.
CHUNK = 1024


def two_step_marginals(teacher, ids: torch.Tensor, sampling, positions: list[int]):
    """The teacher's distributions under ``sampling`` at every position of ``ids`` (``probs[j]`` predicts token j + 1),
    and for each position j in ``positions`` the distribution of token j + 2 given ``ids[: j + 1]`` with token j + 1
    unknown, ``sum_x probs[j, x] P(. | ids[: j + 1], x)``: ``([L, V], [len(positions), V])``.

    One pass over ``ids`` fills a KV cache; every candidate x is then one query at position j + 1 that sees the cache
    up to j and itself, in chunks of :data:`CHUNK` (each chunk's keys are cropped off the cache after it).
    """
    length = ids.shape[0]
    cache = DynamicCache()
    causal = document_mask(torch.zeros(1, length, dtype=torch.long))
    logits = teacher_logits(teacher, ids.view(1, -1), position_ids=torch.arange(length).view(1, -1),
                            attention_mask=causal, past_key_values=cache)  # fmt: skip
    probs = probabilities(logits[0], sampling)
    picked = probs[positions]  # [len(positions), V]
    rows, tokens = picked.nonzero(as_tuple=True)  # every (position, kept token x) pair
    weights, parents = picked[rows, tokens], torch.tensor(positions, dtype=torch.long)[rows]
    out = torch.zeros_like(picked)
    for start in range(0, len(tokens), CHUNK):
        part = slice(start, start + CHUNK)
        parent, count = parents[part], len(tokens[part])
        sees_text = torch.arange(length).view(1, -1) <= parent.view(-1, 1)
        mask = torch.cat([sees_text, torch.eye(count, dtype=torch.bool)], dim=1)
        logits = teacher_logits(teacher, tokens[part].view(1, -1), position_ids=(parent + 1).view(1, -1),
                                attention_mask=mask.view(1, 1, count, -1), past_key_values=cache)[0]  # fmt: skip
        cache.crop(-count)  # back to the text's keys
        out.index_add_(0, rows[part], weights[part].unsqueeze(1) * probabilities(logits, sampling))
    return probs, out


data = load_dataset(sys.argv[1])
path = sys.argv[2] if len(sys.argv) > 2 else default_paths()["teacher"]
teacher = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
use_mask_attention(teacher)
hits = mass = count = hits2 = mass2 = count2 = 0
with torch.no_grad():
    for document in data.documents:
        ids = document.tokens
        first = document.prompt_length - 1  # the first position predicting a completion token
        last = ids.shape[0] - 1
        positions = list(range(first, last - 1))
        probs, marginal = two_step_marginals(teacher, ids, data.sampling, positions)
        hits += int((probs[first:last].argmax(-1) == ids[first + 1 :]).sum())
        mass += float(probs[first:last].max(-1).values.sum())
        count += last - first
        if positions:
            hits2 += int((marginal.argmax(-1) == ids[first + 2 :]).sum())
            mass2 += float(marginal.max(-1).values.sum())
            count2 += len(positions)
if not count2:
    sys.exit(f"{sys.argv[1]}: no completion of two tokens or more")
print(
    f"{sys.argv[1]}: {count} completion tokens; slot 1: the sampled token is the teacher's mode {hits / count:.3f} of "
    f"the time (expected mode probability {mass / count:.3f}); slot 2: the mode of the two-step marginal is the "
    f"sampled token {hits2 / count2:.3f} of the time (expected {mass2 / count2:.3f}, {count2} positions)"
)
