"""Packing: no attention across packed examples (logits equal unpacked), order preserved."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from iceburg.training.encoding import Example
from iceburg.training.packing import collate, pack


def ex(n, start, name):
    return Example(input_ids=list(range(start, start + n)), mask=[False] + [True] * (n - 1), id=name)


def test_pack_is_greedy_in_order_and_respects_max_length():
    exs = [ex(5, 10, "a"), ex(4, 20, "b"), ex(3, 30, "c"), ex(6, 40, "d")]
    rows = pack(exs, max_length=10)
    assert [r.example_ids for r in rows] == [["a", "b"], ["c", "d"]]
    assert rows[0].position_ids == [0, 1, 2, 3, 4, 0, 1, 2, 3]
    assert [r.example_ids for r in pack(exs, 10, packing=False)] == [["a"], ["b"], ["c"], ["d"]]


def test_packed_logits_equal_unpacked_logits(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    a, b, c = ex(17, 100, "a"), ex(9, 300, "b"), ex(12, 500, "c")
    rows = pack([a, b, c], max_length=64)
    assert len(rows) == 1
    batch = collate(rows + pack([ex(5, 700, "d")], 64), pad_id=0)  # second row is padded
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        offset = 0
        for e in (a, b, c):
            alone = model(input_ids=torch.tensor([e.input_ids])).logits[0]
            n = len(e.input_ids)
            assert torch.allclose(packed[0, offset:offset + n], alone, atol=1e-4), e.id
            offset += n
        d_alone = model(input_ids=torch.tensor([list(range(700, 705))])).logits[0]
        assert torch.allclose(packed[1, :5], d_alone, atol=1e-4)
    assert batch["loss_mask"][1, 5:].sum() == 0  # padding carries no loss
