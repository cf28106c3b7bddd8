"""Truth filter: quality scoring, agent rubrics, verified patterns and deduplication.

`TruthFilter(min_quality_score=0.7).filter(records, agent_type=None, rejects=None)` returns the kept
records and a `TruthFilterStats`; `run_filter_only(paths, out_dir, config)` is the `--filter-only`
command. Every number behind a decision is stored on the record (`record.signals["truth.*"]`) or
in the reject (`details`). See docs/truth_filter.md.
"""

from .dedup import DedupConfig, Deduplicator
from .filter import Assessment, Category, TruthFilter, TruthFilterStats
from .patterns import InstantTruth, PatternTruthSystem, TruthSystem
from .report import run_filter_only

__all__ = ["Assessment", "Category", "DedupConfig", "Deduplicator", "InstantTruth",
           "PatternTruthSystem", "TruthFilter", "TruthFilterStats", "TruthSystem", "run_filter_only"]
