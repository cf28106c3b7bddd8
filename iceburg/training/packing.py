"""Sequence packing without attention across examples, and batch collation.

Two packers fill rows of at most `max_length` tokens:

- greedy, *in the order given*: what ordered curricula (novel_first, progressive) need, because
  the order is their intervention. A row closes when the next example does not fit, so the row
  end is left empty (about 12% of the processed tokens on the bundled samples at 1024 tokens,
  docs/training.md).
- best-fit decreasing (`best_fit=True`), for shuffled epochs (plain, weighted) where the order
  within an epoch is random anyway: examples longest first, each into the open row with the least
  room that still holds it (the classic bin-packing heuristic: never more than 11/9 of the optimal
  row count plus a constant, Johnson 1973; TRL's `packing_strategy="bfd"` is the same packer). Rows then follow the given
  order again (each row sits where its earliest example sat, its examples in given order), so the
  epoch's seeded shuffle still decides what is seen first and the plan stays a deterministic
  function of (examples, order): resume rebuilds the same plan. Each example's `position_ids` restart at 0; transformers 5
turns restarting position ids into a block-diagonal causal mask under sdpa/eager when no
attention mask and no KV cache are passed (masking_utils.find_packed_sequence_indices; checked
by tests/training/test_packing.py against unpacked logits). Rows in a micro-batch are padded to
the longest row; padding sits at the end of a row, so causal attention never lets a real token
see it, and it carries no loss.
"""

from __future__ import annotations

import bisect
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


def pack(examples: list[Example], max_length: int, packing: bool = True, best_fit: bool = False) -> list[Row]:
    """Greedy in-order packing, or best-fit decreasing with `best_fit=True` (see the module
    docstring); with `packing=False` each example gets its own row."""
    for ex in examples:
        if len(ex.input_ids) > max_length:
            raise ValueError(f"example {ex.id} is longer than max_length; truncate when encoding")
    if packing and best_fit:
        return _rows(examples, best_fit_bins([len(e.input_ids) for e in examples], max_length))
    rows: list[Row] = []
    cur = Row()
    for ex in examples:
        if cur.input_ids and (not packing or len(cur) + len(ex.input_ids) > max_length):
            rows.append(cur)
            cur = Row()
        cur.add(ex)
    if cur.input_ids:
        rows.append(cur)
    return rows


def best_fit_bins(lengths: list[int], capacity: int) -> list[list[int]]:
    """Best-fit decreasing: indices into `lengths` grouped into bins of total <= capacity.
    Ties (equal lengths, equal room) go to the earlier index / the earlier bin, so the result is
    a pure function of the input. Bins come back ordered by their smallest index, each sorted."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    room: list[tuple[int, int]] = []  # (free tokens, bin index), kept sorted
    for i in order:
        n = lengths[i]
        k = bisect.bisect_left(room, (n, -1))  # the open bin with the least room that fits n
        if k == len(room):
            bins.append([i])
            free, b = capacity - n, len(bins) - 1
        else:
            free, b = room.pop(k)
            bins[b].append(i)
            free -= n
        if free > 0:
            bisect.insort(room, (free, b))
    for b in bins:
        b.sort()
    return sorted(bins, key=lambda b: b[0])


def _rows(examples: list[Example], bins: list[list[int]]) -> list[Row]:
    rows = []
    for b in bins:
        row = Row()
        for i in b:
            row.add(examples[i])
        rows.append(row)
    return rows


def padding_share(rows: list[Row], micro_batch_size: int) -> float:
    """Share of the processed tokens that are padding when `rows` are collated `micro_batch_size`
    at a time in the given order (each micro-batch padded to its longest row, as `collate` does)."""
    real = processed = 0
    for i in range(0, len(rows), micro_batch_size):
        mb = rows[i:i + micro_batch_size]
        real += sum(len(r) for r in mb)
        processed += len(mb) * max(len(r) for r in mb)
    return 1.0 - real / processed if processed else 0.0


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
