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
from transformers import AutoModelForCausalLM

from ptp.data.dataset import load_dataset
from ptp.default_model import default_paths
from ptp.model.ptp import teacher_logits, use_mask_attention
from ptp.sampling import probabilities

#: Candidate queries per forward pass of the slot-2 ceiling.
CHUNK = 1024


def two_step_marginals(teacher, ids: torch.Tensor, probs: torch.Tensor, positions: list[int], sampling):
    """For each position j in ``positions``: the distribution of token j + 2 given ``ids[: j + 1]`` with token j + 1
    unknown, ``sum_x probs[j, x] P(. | ids[: j + 1], x)``. Returns ``[len(positions), V]``.

    Every candidate x is one extra query at position j + 1 that sees ``ids[: j + 1]`` and itself.
    """
    length = ids.shape[0]
    rows, tokens, weights = [], [], []
    for r, j in enumerate(positions):
        kept = probs[j].nonzero().flatten()
        rows += [r] * len(kept)
        tokens.append(kept)
        weights.append(probs[j, kept])
    rows, tokens, weights = torch.tensor(rows), torch.cat(tokens), torch.cat(weights)
    parents = torch.tensor(positions)[rows]
    out = torch.zeros(len(positions), probs.shape[1])
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    for start in range(0, len(tokens), CHUNK):
        part = slice(start, start + CHUNK)
        parent, count = parents[part], len(tokens[part])
        sees_text = torch.arange(length).view(1, -1) <= parent.view(-1, 1)
        mask = torch.zeros(length + count, length + count, dtype=torch.bool)
        mask[:length, :length] = causal
        mask[length:, :length] = sees_text
        mask[length:, length:] = torch.eye(count, dtype=torch.bool)
        logits = teacher_logits(
            teacher,
            torch.cat([ids, tokens[part]]).view(1, -1),
            position_ids=torch.cat([torch.arange(length), parent + 1]).view(1, -1),
            attention_mask=mask.view(1, 1, *mask.shape),
        )[0, length:]
        out.index_add_(0, rows[part], weights[part].unsqueeze(1) * probabilities(logits, sampling))
    return out


data = load_dataset(sys.argv[1])
path = sys.argv[2] if len(sys.argv) > 2 else default_paths()["teacher"]
teacher = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
use_mask_attention(teacher)
hits = mass = count = hits2 = mass2 = count2 = 0
with torch.no_grad():
    for document in data.documents:
        ids = document.tokens
        probs = probabilities(teacher(input_ids=ids.view(1, -1)).logits[0], data.sampling)  # probs[j] predicts j + 1
        first = document.prompt_length - 1  # the first position predicting a completion token
        last = ids.shape[0] - 1
        hits += int((probs[first:last].argmax(-1) == ids[first + 1 :]).sum())
        mass += float(probs[first:last].max(-1).values.sum())
        count += last - first
        positions = list(range(first, last - 1))
        if positions:
            marginal = two_step_marginals(teacher, ids, probs, positions, data.sampling)
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
