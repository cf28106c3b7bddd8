"""`truth_filter_from(config)`: the one place a `TruthFilter` is built from run settings.

Used by the pipeline's truth step (`iceburg/pipeline.py`), preference mining
(`iceburg/preference/pipeline.py`), `--filter-only` (`truth/report.py`) and the curation steps
(`curate/steps.py`), so a new truth setting is read here once.
"""

from __future__ import annotations

from typing import Any

from .filter import TruthFilter
from .patterns import PatternTruthSystem


def truth_filter_from(config: Any, *, workers: int = 1) -> TruthFilter:
    """A `TruthFilter` from anything holding `min_quality_score` and (optionally) `truth_patterns`
    (`TrainingConfig`, `CurateSpec`); `workers` processes score records (`filter`)."""
    patterns = getattr(config, "truth_patterns", None)  # --truth-patterns (docs/truth_filter.md)
    system = PatternTruthSystem.from_file(patterns) if patterns else None
    return TruthFilter(min_quality_score=config.min_quality_score, truth_system=system, workers=workers)
