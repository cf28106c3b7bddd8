"""The held-out evaluation split: hash-ranked, so it is stable and exact in size.

Lives in the data layer because both the pipeline and the embedded iceburg-tiny builder (which
must never pre-train on the records this holds out) use it.
"""

from __future__ import annotations

import hashlib

from ..records import Record


def eval_bucket(record: Record, seed: int) -> float:
    """A stable number in [0, 1) from the record's content and the seed (hash bucketing): the
    split does not change when records are added, removed or reordered."""
    h = hashlib.sha256(f"{seed}:{record.content_hash()}".encode()).hexdigest()
    return int(h[:12], 16) / 16 ** 12


def split_eval(records: list[Record], fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Held-out split: the round(fraction x n) records with the lowest hash buckets (at least one
    when there are >= 10). Ranking instead of thresholding keeps the eval size exact on small
    sets; hashing keeps the choice stable when records are reordered. The embedded iceburg-tiny
    base is pre-trained without the records this holds out under the default seed and fraction."""
    if fraction <= 0 or len(records) < 2:
        return records, []
    n_eval = max(1 if len(records) >= 10 else 0, int(round(len(records) * fraction)))
    ranked = sorted(range(len(records)), key=lambda i: eval_bucket(records[i], seed))
    ev = set(ranked[:n_eval])
    return [r for i, r in enumerate(records) if i not in ev], [r for i, r in enumerate(records) if i in ev]
