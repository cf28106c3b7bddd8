"""Sequence packing without attention across examples, and batch collation.

Examples are packed greedily *in the order given* (so curriculum orders survive packing) into
rows of at most `max_length` tokens. Each example's `position_ids` restart at 0; transformers 5
turns restarting position ids into a block-diagonal causal mask under sdpa/eager when no
attention mask and no KV cache are passed (masking_utils.find_packed_sequence_indices; checked
by tests/training/test_packing.py against unpacked logits). Rows in a micro-batch are padded to
the longest row; padding sits at the end of a row, so causal attention never lets a real token
see it, and it carries no loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .encoding import Example


@dataclass
class Row:
    input_ids: list[int] = field(default_factory=list)
    position_ids: list[int] = field(default_factory=list)
    mask: list[bool] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    example_ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)

    def add(self, ex: Example) -> None:
        self.input_ids.extend(ex.input_ids)
        self.position_ids.extend(range(len(ex.input_ids)))
        self.mask.extend(ex.mask)
        self.weights.extend([ex.weight] * len(ex.input_ids))
        self.example_ids.append(ex.id)


def pack(examples: list[Example], max_length: int, packing: bool = True) -> list[Row]:
    """Greedy in-order packing; with `packing=False` each example gets its own row."""
    rows: list[Row] = []
    cur = Row()
    for ex in examples:
        if len(ex.input_ids) > max_length:
            raise ValueError(f"example {ex.id} is longer than max_length; truncate when encoding")
        if cur.input_ids and (not packing or len(cur) + len(ex.input_ids) > max_length):
            rows.append(cur)
            cur = Row()
        cur.add(ex)
    if cur.input_ids:
        rows.append(cur)
    return rows


def collate(rows: list[Row], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad rows to the longest; returns input_ids, position_ids, loss mask and token weights."""
    n = max(len(r) for r in rows)
    ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
    pos = torch.zeros((len(rows), n), dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.bool)
    w = torch.zeros((len(rows), n), dtype=torch.float32)
    for i, r in enumerate(rows):
        k = len(r)
        ids[i, :k] = torch.tensor(r.input_ids)
        pos[i, :k] = torch.tensor(r.position_ids)
        # padding is its own segment (positions restart) so it never joins the last example
        pos[i, k:] = torch.arange(n - k)
        mask[i, :k] = torch.tensor(r.mask)
        w[i, :k] = torch.tensor(r.weights)
    return {"input_ids": ids, "position_ids": pos, "loss_mask": mask, "token_weights": w}
