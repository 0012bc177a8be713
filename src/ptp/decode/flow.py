"""Many rows through one batch: plain sampling of a long list of rows with continuous batching.

Pregeneration and self-prompting sample thousands of rows. Decoded batch after batch, each batch runs to its longest
row while its finished places idle; here the rows flow through one batch instead: as rows end, the next ones join it
between steps (:func:`ptp.decode.engine.generate` with ``join``), in groups, since each group is prefilled in one
call. A row's tokens depend on its prompt and its u's alone (the engine's per-row exactness), so the result is the
same however the rows were batched.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

import torch

from ptp.decode.engine import generate
from ptp.decode.inputs import left_pad, resolve_stop_tokens
from ptp.model.ptp import PTPModel

#: Rows join a running batch in groups of at least 1 / JOIN_FRACTION of its places (a group is prefilled in one call).
JOIN_FRACTION = 4


def decode_rows(
    model,
    rows: Iterable[tuple[list[int], torch.Tensor]],
    batch_size: int,
    on_finish: Callable[[int, list[int]], bool | None],
    *,
    max_new_tokens: int,
    sampling,
    eos_token_id=None,
    compile: bool = False,
    wanted: Callable[[], bool] | None = None,
) -> None:
    """Sample ``rows`` one token per call, ``batch_size`` of them decoding at a time.

    Args:
        model: a causal LM or a :class:`ptp.PTPModel` (sampled with its adapter off).
        rows: ``(prompt ids, u [max_new_tokens])`` per row, read lazily as places free up (it may be endless).
        on_finish: called as ``on_finish(index, tokens)`` when row ``index`` (its place in ``rows``) ends: at a stop
            token (included) or at ``max_new_tokens``. Returning True stops the rows still decoding: no more rows join
            and ``on_finish`` is not called again.
        eos_token_id: stop tokens (default: the model's generation config's).
        wanted: asked before rows join; False: none join now (they may later).
    """
    teacher = model.base_model if isinstance(model, PTPModel) else model
    stops = set(resolve_stop_tokens(eos_token_id, None, teacher)[0].tolist())
    rows = iter(rows)
    first = list(itertools.islice(rows, batch_size))
    if not first:
        return
    index = list(range(len(first)))  # the index of the row decoded under each number the engine knows
    tokens: dict[int, list[int]] = {number: [] for number in index}  # by number, while the row decodes
    state = {"started": len(first), "stopped": False, "exhausted": False}

    def on_commit(committed: list[list[int]]) -> list[int]:
        for number, new in enumerate(committed):
            if new and not state["stopped"]:
                row = tokens[number]
                row += new
                if row[-1] in stops or len(row) >= max_new_tokens:
                    state["stopped"] = bool(on_finish(index[number], tokens.pop(number)))
        return sorted(tokens) if state["stopped"] else []

    def join() -> dict[int, tuple[list[int], torch.Tensor]]:
        free = [number for number in range(len(first)) if number not in tokens]
        if state["stopped"] or state["exhausted"] or len(free) < max(1, batch_size // JOIN_FRACTION):
            return {}
        if wanted is not None and not wanted():
            return {}
        joining = {}
        for number in free:
            row = next(rows, None)
            if row is None:
                state["exhausted"] = True
                break
            index[number], tokens[number], joining[number] = state["started"], [], row
            state["started"] += 1
        return joining

    ids, mask = left_pad([prompt for prompt, _ in first])
    generate(model, ids.to(model.device), mask.to(model.device), auxiliaries=torch.stack([u for _, u in first]),
             max_new_tokens=max_new_tokens, sampling=sampling, eos_token_id=sorted(stops), use_drafter=False,
             compile=compile, on_commit=on_commit, join=join)  # fmt: skip
