"""The student's instruction-following difficulty (IFD; Li et al. 2024, "From Quantity to Quality",
NAACL): loss of the answer given the prompt over the loss of the answer alone. Near or above 1 the
prompt does not help the student predict the answer: the agent does not yet follow that instruction.

One forward pass per record: the conditioned sequence (training's own encoding of the record,
`encoding.encode`, loss on the assistant tokens) and the plain one (the answer text alone, loss on
every token) go through the student as one right-padded batch of two. Right padding leaves every real
token at the position and with the context it has alone (causal attention never looks ahead, the
padding is masked and comes after), so each row's loss is the one a pass of that sequence alone gives,
up to float summation order (tests/generation/test_parts.py compares with the two-pass
`HfModel.record_losses` / `text_losses`; bench/generation_ifd.py times both: on a 2-core CPU they
cost the same).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..records import Record

Loss = tuple[float, int]  # (summed cross-entropy over the scored tokens, their count)
# Which version `ifd_scores` runs: both give the same numbers (tested); the choice is speed, measured
# (bench/results/generation_ifd*.md: the same time within the spread of repeated runs).
ONE_PASS = True


def batch_losses(model: Any, pad: int, rows: Sequence[tuple[list[int], list[bool]]]) -> list[Loss]:
    """Per row (token ids, which tokens are scored): the row's summed next-token cross-entropy over its
    scored tokens (after the first) and their count, all rows in one right-padded forward pass."""
    import torch

    width = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([list(i) + [pad] * (width - len(i)) for i, _ in rows])
    attn = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in rows])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attn).logits.float()
    out = []
    for b, (row, mask) in enumerate(rows):
        keep = torch.tensor(list(mask[1:]), dtype=torch.bool)
        target = torch.tensor(list(row[1:]))
        ce = torch.nn.functional.cross_entropy(logits[b, :len(row) - 1][keep], target[keep], reduction="sum")
        out.append((float(ce), int(keep.sum())))
    return out


def packed_losses(model: Any, rows: Sequence[tuple[list[int], list[bool]]]) -> list[Loss]:
    """As `batch_losses`, with the rows packed end to end into one sequence and no padding: position ids
    restart at 0 for each row, from which transformers (>= 5, `masking_utils.find_packed_sequence_indices`,
    used when there is no attention mask and no cache) builds a block-diagonal causal mask, so no row
    sees another."""
    import torch

    ids = torch.tensor([[t for row, _ in rows for t in row]])
    pos = torch.tensor([[p for row, _ in rows for p in range(len(row))]])
    with torch.no_grad():
        logits = model(input_ids=ids, position_ids=pos, use_cache=False).logits[0].float()
    out, start = [], 0
    for row, mask in rows:
        keep = torch.tensor(list(mask[1:]), dtype=torch.bool)
        target = torch.tensor(list(row[1:]))
        ce = torch.nn.functional.cross_entropy(logits[start:start + len(row) - 1][keep], target[keep], reduction="sum")
        out.append((float(ce), int(keep.sum())))
        start += len(row)
    return out


def record_pair(hf: Any, record: Record, max_length: int, packed: bool = False) -> tuple[Loss, Loss] | None:
    """(conditioned loss, plain loss) of one record in one forward pass; None when the record cannot
    be encoded (no assistant token fits, or a tool transcript the template cannot write) or has no
    answer text to score alone."""
    from ..training.encoding import encode

    ex = encode(hf.tokenizer, record, max_length, set(hf.eos)) if hf.renders(record) else None
    if ex is None or not any(ex.mask[1:]):
        return None
    plain = hf.tokenizer(record.assistant_text(), add_special_tokens=True, truncation=True,
                         max_length=max_length)["input_ids"]
    if len(plain) < 2:
        return None
    rows = [(ex.input_ids, ex.mask), (plain, [True] * len(plain))]
    cond, alone = packed_losses(hf.model, rows) if packed else batch_losses(hf.model, hf.pad, rows)
    return cond, alone


def ifd(cond: Loss | None, plain: Loss | None) -> float:
    """Mean conditioned loss / mean plain loss; nan when either has no scored token."""
    if cond is None or plain is None or not cond[1] or not plain[1]:
        return float("nan")
    return (cond[0] / cond[1]) / max(plain[0] / plain[1], 1e-6)


def two_pass_pair(hf: Any, record: Record, max_length: int) -> tuple[Loss, Loss] | None:
    """The same pair from two forward passes (`HfModel.record_losses` and `text_losses`)."""
    (cond,) = hf.record_losses([record], max_length)
    if cond is None:
        return None
    (plain,) = hf.text_losses([record.assistant_text()], max_length)
    return cond, plain


def ifd_scores(curated: Sequence[Record], student: str, max_length: int = 512, threads: int | None = None,
               one_pass: bool = ONE_PASS) -> np.ndarray:
    """IFD per record (nan where it cannot be measured): one batched forward pass per record, or two."""
    from ..base_models import resolve_base_model
    from ..evaluation.models import HfModel

    hf = HfModel(resolve_base_model(student).path, list(curated), threads=threads)
    out = []
    for r in curated:
        pair = record_pair(hf, r, max_length) if one_pass else two_pass_pair(hf, r, max_length)
        out.append(ifd(*pair) if pair is not None else float("nan"))
    return np.asarray(out, dtype=np.float64)
