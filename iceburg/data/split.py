"""The held-out evaluation split: hash-ranked, so it is stable and exact in size.

Lives in the data layer because both the pipeline and the embedded iceburg-tiny builder (which
must never pre-train on the records this holds out) use it.
"""

from __future__ import annotations

import hashlib
from typing import Callable, TypeVar

T = TypeVar("T")  # a Record (the default content: Record.content_hash()) or a preference item


def eval_bucket(record: T, seed: int, content: Callable[[T], str] | None = None) -> float:
    """A stable number in [0, 1) from the record's content and the seed (hash bucketing): the
    split does not change when records are added, removed or reordered. `content` gives the
    hashed text of other items (preference pairs); records hash `Record.content_hash()`."""
    text = content(record) if content is not None else record.content_hash()
    h = hashlib.sha256(f"{seed}:{text}".encode()).hexdigest()
    return int(h[:12], 16) / 16 ** 12


def split_eval(records: list[T], fraction: float, seed: int,
               content: Callable[[T], str] | None = None) -> tuple[list[T], list[T]]:
    """Held-out split: the round(fraction x n) records with the lowest hash buckets (at least one
    when there are >= 10). Ranking instead of thresholding keeps the eval size exact on small
    sets; hashing keeps the choice stable when records are reordered. The embedded iceburg-tiny
    base is pre-trained without the records this holds out under the default seed and fraction.
    The preference data (`iceburg/preference/pipeline.py`) splits its pairs with the same rule
    through `content`."""
    if fraction <= 0 or len(records) < 2:
        return records, []
    n_eval = max(1 if len(records) >= 10 else 0, int(round(len(records) * fraction)))
    ranked = sorted(range(len(records)), key=lambda i: eval_bucket(records[i], seed, content))
    ev = set(ranked[:n_eval])
    return [r for i, r in enumerate(records) if i not in ev], [r for i, r in enumerate(records) if i in ev]
