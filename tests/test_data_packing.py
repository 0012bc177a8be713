"""Packing: documents keep their tokens, positions restart per document, and attention never crosses documents."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_base
from ptp.data import document_mask, pack_documents, split_by_prompt
from train_support import documents


def test_documents_are_packed_whole_with_their_own_positions_and_targets():
    docs = documents(([1, 2, 3, 4, 5], 2), ([6, 7, 8], 1), ([9, 10, 11, 12], 3), ([13, 14], 1))
    rows, stats = pack_documents(docs, 8)
    assert stats == {"documents": 4, "truncated": 0, "dropped": 0, "rows": 2, "fill": 14 / 16}
    found = []
    for r in range(len(rows)):
        for d in rows.document[r].unique().tolist():
            if d < 0:
                continue
            where = rows.document[r] == d
            assert rows.positions[r][where].tolist() == list(range(int(where.sum())))
            found.append((rows.tokens[r][where].tolist(), int((where & ~rows.targets[r]).sum())))
    assert sorted(found) == sorted((d.tokens.tolist(), d.prompt_length) for d in docs)
    assert not rows.targets[rows.document < 0].any()


def test_long_documents_are_cut_and_prompt_only_ones_dropped():
    docs = documents((list(range(1, 13)), 3), (list(range(1, 7)), 6), ([1, 2, 3, 4, 5, 6, 7], 7))
    rows, stats = pack_documents(docs, 8)
    assert (stats["truncated"], stats["dropped"], stats["documents"]) == (1, 2, 1)
    assert rows.tokens[0].tolist() == list(range(1, 9)) and int(rows.targets[0].sum()) == 5


def test_a_packed_document_gets_the_logits_it_gets_alone():
    model = tiny_base("llama")
    docs = documents(([5, 9, 14, 3, 22, 7], 2), ([40, 41, 42, 43, 44], 1), ([11, 12, 13], 1))
    rows, _ = pack_documents(docs, 16)
    with torch.no_grad():
        packed = model(
            input_ids=rows.tokens, attention_mask=document_mask(rows.document), position_ids=rows.positions
        ).logits
        for r in range(len(rows)):
            for d in rows.document[r].unique().tolist():
                if d >= 0:
                    where = rows.document[r] == d
                    alone = model(input_ids=rows.tokens[r][where].unsqueeze(0)).logits[0]
                    # float32 over differently shaped products rounds differently (1.2e-5 seen on logits of
                    # magnitude ~0.2 with transformers 5.25); a document that saw another would differ by O(1).
                    torch.testing.assert_close(packed[r][where], alone, rtol=1e-4, atol=1e-4)


def test_document_mask_is_causal_within_documents_and_padding_sees_itself():
    mask = document_mask(torch.tensor([[0, 0, 1, 1, -1]]))[0, 0].int().tolist()
    assert mask == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1]]


def test_the_held_out_split_keeps_the_completions_of_a_prompt_together():
    docs = [d for i in range(10) for d in documents(([1, 2, 3], 1), ([1, 2, 4], 1))]
    for i, d in enumerate(docs):
        d.prompt_index = i // 4
    train, held_out = split_by_prompt(docs, 0.3, seed=1)
    assert len(train) + len(held_out) == len(docs)
    assert not {d.prompt_index for d in train} & {d.prompt_index for d in held_out}
    assert len({d.prompt_index for d in held_out}) == 2  # 30% of 5 prompts
    assert split_by_prompt(docs, 0.0)[1] == []
    with pytest.raises(ValueError, match="eval_fraction"):
        split_by_prompt(docs, 1.0)
