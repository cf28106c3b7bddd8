"""What the trainer sees, in which order and with which loss weight: the `Curriculum`.

The trainer (`iceburg.training.trainer.train`) asks `epoch_order(epoch, seed)` for the indices of
each epoch, packs them in exactly that order (no reshuffle), multiplies every supervised token's
loss of record i by `weights[i]`, and reports each micro-batch's record ids to its callbacks.

Strategies (decided here, documented in docs/emergence.md):

- "plain": weights 1, a fresh shuffle every epoch. What `use_emergence_weighting=False` runs.
- "weighted": loss weights from the emergence categories (2.0/1.5/1.0/0.5 by default),
  scaled to mean 1 within the clip range [MIN_WEIGHT, MAX_WEIGHT]; a fresh shuffle every epoch.
  Loss weights rather than sampling by weight: every record is still seen exactly once per
  epoch (sampling with replacement drops some low-weight records entirely and repeats others,
  and the original design's "weighted" curriculum collapsed into a plain shuffle after removing
  the repeats), the epoch length stays the data size, and mean 1 keeps the learning-rate scale of
  plain training. Clipping bounds one record's share of a batch gradient (the variance argument of
  truncated importance weights, Ionides 2008); with the default categories (ratio 4) it is never
  active, it only guards custom category weights.
- "novel_first": sorted by emergence score, highest first; the same order every epoch;
  weights 1 (the order is the intervention; weighting too would confound the ablation).
- "progressive": easy to hard ("baby steps", Bengio et al. 2009; Spitkovsky et al. 2010): records
  sorted by emergence score ascending (familiar first); epoch e trains on the easiest
  min(1, (e + 1) / stages) share of them, in that order, so the pool grows each epoch and every
  record is in every epoch from epoch `stages - 1` on. Weights 1. Note that the first epochs are
  shorter: a trainer must size epochs with `len(epoch_order(e, seed))`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from ..errors import IceburgError
from ..records import Record

STRATEGIES = ("plain", "weighted", "novel_first", "progressive")
# Strategies whose epoch order is a fresh shuffle: the trainer may pack them best-fit. The ordered
# ones (novel_first, progressive) must be packed in order, since the order is their intervention.
SHUFFLED_STRATEGIES = ("plain", "weighted")
# Clip bounds for normalised loss weights: a record may count at most 4x and at least 1/4 of an
# average record; the default category weights (2.0 .. 0.5, mean-normalised) stay inside.
MIN_WEIGHT = 0.25
MAX_WEIGHT = 4.0
PROGRESSIVE_STAGES = 3
SCORE_SIGNAL = "emergence.score"


@dataclass
class Curriculum:
    records: list[Record]
    weights: list[float]  # per record, mean 1, clipped to [MIN_WEIGHT, MAX_WEIGHT]
    strategy: str  # "weighted", "novel_first", "progressive", "plain"
    stages: int = PROGRESSIVE_STAGES  # progressive only: epochs until the pool is complete
    ranking: list[int] = field(default_factory=list)  # ordered strategies: indices easy/novel first

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise IceburgError(f"curriculum strategy {self.strategy!r} is unknown; choose one of "
                               f"{', '.join(STRATEGIES)} (--curriculum)")
        if len(self.weights) != len(self.records):
            raise ValueError(f"{len(self.weights)} weights for {len(self.records)} records")
        if self.strategy in ("novel_first", "progressive") and not self.ranking and self.records:
            sign = -1.0 if self.strategy == "novel_first" else 1.0
            scores = [_score(r, i) for i, r in enumerate(self.records)]
            # Stable: equal scores keep input order.
            self.ranking = sorted(range(len(scores)), key=lambda i: (sign * scores[i], i))

    def __len__(self) -> int:
        return len(self.records)

    @property
    def shuffled(self) -> bool:
        """True when each epoch is a fresh shuffle (the trainer may then pack best-fit)."""
        return self.strategy in SHUFFLED_STRATEGIES

    def epoch_order(self, epoch: int, seed: int) -> list[int]:
        """Indices into `records` for this epoch, in the order the trainer must feed them."""
        n = len(self.records)
        if self.strategy in ("plain", "weighted"):
            # Seeded by the pair (seed, epoch), so seeds 1/epoch 0 and 0/epoch 1 differ.
            return [int(i) for i in np.random.default_rng([seed, epoch]).permutation(n)]
        if self.strategy == "novel_first":
            return list(self.ranking)
        share = min(1.0, (epoch + 1) / max(1, self.stages))
        return list(self.ranking[: max(1, math.ceil(share * n))]) if n else []

    def example_ids(self, epoch: int, seed: int) -> list[str]:
        """Record ids in epoch order (what a trainer callback should observe)."""
        return [self.records[i].id for i in self.epoch_order(epoch, seed)]


def normalise_weights(raw: Sequence[float], lo: float = MIN_WEIGHT, hi: float = MAX_WEIGHT) -> list[float]:
    """Weights clip(s * raw, lo, hi) with the scale s chosen so their mean is exactly 1.

    mean(clip(s * raw)) grows monotonically with s, so s is found by bisection; without any
    clipping this is raw / mean(raw).
    """
    w = np.asarray(raw, dtype=np.float64)
    if w.size == 0:
        return []
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("curriculum weights must be finite, non-negative and not all zero")
    if not lo <= 1.0 <= hi:
        raise ValueError(f"clip bounds must contain 1 (the mean), got [{lo}, {hi}]")
    a, b = 0.0, hi / w[w > 0].min()  # at b every positive weight is clipped to hi: mean >= 1
    for _ in range(200):
        mid = (a + b) / 2
        if np.clip(mid * w, lo, hi).mean() < 1.0:
            a = mid
        else:
            b = mid
    out = np.clip(b * w, lo, hi)
    if abs(out.mean() - 1.0) > 1e-6:  # e.g. one positive weight among many zeros
        raise ValueError(f"weights cannot reach mean 1 inside the clip range [{lo}, {hi}]")
    return [float(x) for x in out]


def plain_curriculum(records: Sequence[Record]) -> Curriculum:
    """Weights 1.0, shuffled each epoch (seeded by seed and epoch): plain training."""
    return Curriculum(records=list(records), weights=[1.0] * len(records), strategy="plain")


def _score(record: Record, i: int) -> float:
    s = record.signals.get(SCORE_SIGNAL)
    if s is None:
        raise IceburgError(f"record {i} ({record.id}) has no {SCORE_SIGNAL!r} signal; run "
                           "iceburg.emergence.EmergenceProcessor().process(records) before "
                           "create_curriculum, or train with use_emergence_weighting=False")
    return float(s)


def build_curriculum(records: Sequence[Record], strategy: str = "weighted",
                     stages: int = PROGRESSIVE_STAGES) -> Curriculum:
    """A curriculum from emergence-scored records (`signals["emergence.score"]`, `weight`).

    Records are shallow copies with `weight` set to the curriculum weight; the inputs are not
    modified, so several curricula can be built from one scored list.
    """
    records = list(records)
    if strategy == "plain":
        return plain_curriculum(records)
    if strategy not in STRATEGIES:
        raise IceburgError(f"curriculum strategy {strategy!r} is unknown; choose one of "
                           f"{', '.join(STRATEGIES)} (--curriculum)")
    if stages < 1:
        raise ValueError(f"stages must be >= 1, got {stages}")
    for i, r in enumerate(records):
        _score(r, i)  # every record must be scored, whatever the strategy
    if strategy == "weighted":
        weights = normalise_weights([r.weight for r in records])
    else:
        weights = [1.0] * len(records)
    out = [replace(r, weight=w) for r, w in zip(records, weights)]
    return Curriculum(records=out, weights=weights, strategy=strategy, stages=stages)
