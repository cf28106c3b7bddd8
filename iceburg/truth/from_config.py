"""`truth_filter_from(config)`: the one place a `TruthFilter` is built from run settings.

Used by the pipeline's truth step (`iceburg/pipeline.py`), preference mining
(`iceburg/preference/pipeline.py`), `--filter-only` (`truth/report.py`) and the curation steps
(`curate/steps.py`), so a new truth setting is read here once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .filter import TruthFilter
from .patterns import PatternTruthSystem


def truth_filter_from(config: Any, *, workers: int = 1) -> TruthFilter:
    """A `TruthFilter` from anything holding `min_quality_score` and (optionally) `truth_patterns`:
    a `TrainingConfig`, a `CurateSpec`, or a run's config.json as a dict. `workers` processes
    score records (`filter`)."""
    get = config.get if isinstance(config, Mapping) else (lambda key, default=None: getattr(config, key, default))
    patterns = get("truth_patterns")  # --truth-patterns (docs/truth_filter.md)
    system = PatternTruthSystem.from_file(patterns) if patterns else None
    threshold = get("min_quality_score")  # absent (an old config.json): TruthFilter's own default
    keep = {} if threshold is None else {"min_quality_score": float(threshold)}
    return TruthFilter(**keep, truth_system=system, workers=workers)
