"""Paired bootstrap intervals for base-vs-tuned differences.

Every metric is a ratio of sums over items (a mean is the ratio with denominators 1; a loss per
token sums each item's cross-entropy over its token count; a rate "among turns where no call was
expected" has denominator 0 elsewhere). Base and tuned are scored on the same items, so the items
are resampled together (paired bootstrap resampling, Koehn 2004, "Statistical Significance Tests
for Machine Translation Evaluation"), and the 95% interval of tuned - base is the 2.5th..97.5th
percentile of the resampled differences (Efron & Tibshirani 1993, "An Introduction to the
Bootstrap", ch. 13; they advise at least 1,000 resamples for percentile intervals, hence 2,000).
Seeded: the same items give the same interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

RESAMPLES = 2000
SEED = 0


@dataclass
class ItemValues:
    """One metric's per-item numerators and denominators (items aligned across models)."""

    num: list[float] = field(default_factory=list)
    den: list[float] = field(default_factory=list)

    def add(self, value: float | None, weight: float = 1.0) -> None:
        """One item; `value=None` = the metric does not apply to this item (denominator 0)."""
        self.num.append(0.0 if value is None else float(value) * weight)
        self.den.append(0.0 if value is None else float(weight))

    @property
    def n(self) -> int:
        return int(sum(d > 0 for d in self.den))

    def value(self) -> float:
        d = sum(self.den)
        return sum(self.num) / d if d else float("nan")


def _ratio(num: np.ndarray, den: np.ndarray, idx: np.ndarray) -> np.ndarray:
    d = den[idx].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(d > 0, num[idx].sum(axis=1) / np.where(d > 0, d, 1), np.nan)


def paired_bootstrap(base: ItemValues, tuned: ItemValues, resamples: int = RESAMPLES,
                     seed: int = SEED) -> dict:
    """`{base, tuned, delta, ci95, n}` for one metric; ci95 is the interval of tuned - base
    (None when fewer than 2 items carry the metric)."""
    if len(base.num) != len(tuned.num):
        raise ValueError(f"paired bootstrap needs the same items: {len(base.num)} vs {len(tuned.num)}")
    b, t = base.value(), tuned.value()
    out = {"base": _clean(b), "tuned": _clean(t), "delta": _clean(t - b), "ci95": None,
           "n": min(base.n, tuned.n)}
    if out["n"] < 2:
        return out
    # resample only the items that carry the metric (e.g. tool turns for tool-call accuracy)
    keep = (np.asarray(base.den) > 0) | (np.asarray(tuned.den) > 0)
    bn, bd, tn, td = (np.asarray(a)[keep] for a in (base.num, base.den, tuned.num, tuned.den))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(bn), size=(resamples, len(bn)))
    diffs = _ratio(tn, td, idx) - _ratio(bn, bd, idx)
    diffs = diffs[~np.isnan(diffs)]
    if len(diffs):
        lo, hi = np.percentile(diffs, [2.5, 97.5])
        out["ci95"] = [round(float(lo), 6), round(float(hi), 6)]
    return out


def _clean(x: float) -> float | None:
    return None if x is None or math.isnan(x) else round(float(x), 6)
