"""`EmergenceProcessor`: score each record's emergence, categorise it, weight it.

Components (each stored as `record.signals["emergence.<name>"]`):
  provided    the producer's `emergence_score` (only when the record has one)
  novelty     the detector's novelty (default: kNN cosine distance of digest embeddings)
  keywords    novelty vocabulary of the original design       (signals.keyword_score)
  complexity  structure: length, code, paragraphs, lists        (signals.complexity_score)
  agent       agent-specific cues (only with a known agent type) (signals.agent_score)
The score `emergence.score` is the weighted mean over the components present (weights
renormalised over them). Default shares: the original design gave the provided score 0.4 and its
two novelty terms (n-gram history 0.15 + external detector 0.05) 0.2, keywords 0.2, complexity 0.1,
agent 0.1; novelty is now a real measurement, so it takes 0.3 and keywords/complexity/agent give
up 0.05/0.025/0.025. This is a design choice, not a fitted one; pass `component_weights` to change.

Categories and curriculum weights are the original's: NOVEL >= 0.8 (2.0), TRANSITIONAL >= 0.5
(1.5), FAMILIAR >= 0.2 (1.0), BASELINE (0.5); all configurable.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from ..errors import DataError
from ..records import Reason, Record, RejectWriter
from .curriculum import Curriculum, build_curriculum
from . import signals as sig
from .detector import EmbeddingNoveltyDetector, EmergenceDetector

logger = logging.getLogger(__name__)

DEFAULT_COMPONENT_WEIGHTS = {"provided": 0.4, "novelty": 0.3, "keywords": 0.15,
                             "complexity": 0.075, "agent": 0.075}


class EmergenceCategory(enum.Enum):
    NOVEL = "novel"
    TRANSITIONAL = "transitional"
    FAMILIAR = "familiar"
    BASELINE = "baseline"


@dataclass
class EmergenceStats:
    total_processed: int = 0
    novel_count: int = 0
    transitional_count: int = 0
    familiar_count: int = 0
    baseline_count: int = 0
    average_emergence: float = 0.0
    average_novelty: float = 0.0
    novel_features_found: list[str] = field(default_factory=list)
    duplicates_rejected: int = 0
    unusable_rejected: int = 0
    detector: dict[str, Any] = field(default_factory=dict)  # timings, search method, cache hits

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def to_record(entry: Record | dict[str, Any], i: int) -> tuple[Record | None, str]:
    """A `Record` from a Record or a seed-format dict (the loader's one adapter for the original
    API's dicts); `(None, reason)` when the entry is unusable."""
    from ..data.loader import coerce_record

    return coerce_record(entry, i, source="input")


class EmergenceProcessor:
    """Scores records for emergence and builds curricula from them.

    Args:
        novel_weight, transitional_weight, familiar_weight, baseline_weight: category weights.
        thresholds: (novel, transitional, familiar) lower bounds of the score.
        detector: an `EmergenceDetector`; default `EmbeddingNoveltyDetector()`.
        component_weights: shares of the score components (see module doc).
        rejects: where near duplicates and unusable inputs go (stage "emergence").
    """

    def __init__(self, novel_weight: float = 2.0, transitional_weight: float = 1.5,
                 familiar_weight: float = 1.0, baseline_weight: float = 0.5,
                 thresholds: tuple[float, float, float] = (0.8, 0.5, 0.2),
                 detector: EmergenceDetector | None = None,
                 component_weights: dict[str, float] | None = None,
                 rejects: RejectWriter | None = None):
        if not thresholds[0] >= thresholds[1] >= thresholds[2]:
            raise ValueError(f"thresholds must be descending (novel, transitional, familiar), got {thresholds}")
        self.category_weights = {EmergenceCategory.NOVEL: novel_weight,
                                 EmergenceCategory.TRANSITIONAL: transitional_weight,
                                 EmergenceCategory.FAMILIAR: familiar_weight,
                                 EmergenceCategory.BASELINE: baseline_weight}
        self.thresholds = thresholds
        self.detector = detector if detector is not None else EmbeddingNoveltyDetector()
        self.component_weights = dict(component_weights or DEFAULT_COMPONENT_WEIGHTS)
        unknown = set(self.component_weights) - set(DEFAULT_COMPONENT_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown score components {sorted(unknown)}; known: "
                             f"{', '.join(DEFAULT_COMPONENT_WEIGHTS)}")
        self.rejects = rejects

    def categorise(self, score: float) -> EmergenceCategory:
        novel, transitional, familiar = self.thresholds
        if score >= novel:
            return EmergenceCategory.NOVEL
        if score >= transitional:
            return EmergenceCategory.TRANSITIONAL
        if score >= familiar:
            return EmergenceCategory.FAMILIAR
        return EmergenceCategory.BASELINE

    def _reject(self, record: Record | None, entry: Any, reason: Reason, details: dict[str, Any]) -> None:
        if self.rejects is None:
            return
        self.rejects.drop("emergence", record, [reason], details,
                          raw=None if record else repr(entry)[:2000])

    def process(self, records: Iterable[Record | dict[str, Any]],
                agent_type: str | None = None) -> tuple[list[Record], EmergenceStats]:
        """Score, categorise and weight records; returns the kept records and the stats."""
        stats = EmergenceStats()
        usable: list[Record] = []
        for i, entry in enumerate(records):
            stats.total_processed += 1
            rec, why = to_record(entry, i)
            if rec is None:
                stats.unusable_rejected += 1
                self._reject(None, entry, Reason("invalid_record", "invalid"), {"index": i, "why": why})
            else:
                usable.append(rec)
        if not usable:
            return [], stats
        out = self.detector.detect(usable)
        if len(out.novelty) != len(usable):
            raise DataError(f"detector returned {len(out.novelty)} scores for {len(usable)} records")
        stats.detector = dict(out.info)
        kept: list[Record] = []
        features: dict[str, None] = {}
        for i, rec in enumerate(usable):
            dup = out.duplicate_of[i] if out.duplicate_of else None
            if dup is not None:
                stats.duplicates_rejected += 1
                # a detector that saw more records than this batch (iceburg.curate's global
                # novelty) names the kept record by id; otherwise dup[0] indexes this batch
                of = dup[0] if isinstance(dup[0], str) else usable[dup[0]].id
                self._reject(rec, None, Reason("near_duplicate", "near_duplicate"), {"duplicate_of": of, "similarity": round(dup[1], 4)})
                continue
            score, feats = self._score(rec, float(out.novelty[i]),
                                       {k: float(v[i]) for k, v in out.signals.items()},
                                       agent_type or rec.agent_type)
            cat = self.categorise(score)
            rec.weight = self.category_weights[cat]
            rec.signals["emergence.category_weight"] = rec.weight
            rec.metadata["emergence.category"] = cat.value
            rec.metadata["emergence.features"] = feats
            setattr(stats, f"{cat.value}_count", getattr(stats, f"{cat.value}_count") + 1)
            features.update(dict.fromkeys(feats))
            kept.append(rec)
        if kept:
            stats.average_emergence = sum(r.signals["emergence.score"] for r in kept) / len(kept)
            stats.average_novelty = sum(r.signals["emergence.novelty"] for r in kept) / len(kept)
        stats.novel_features_found = list(features)
        logger.info("emergence: %d records -> novel %d, transitional %d, familiar %d, baseline %d; "
                    "%d near duplicates rejected; mean score %.3f", stats.total_processed,
                    stats.novel_count, stats.transitional_count, stats.familiar_count,
                    stats.baseline_count, stats.duplicates_rejected, stats.average_emergence)
        return kept, stats

    def _score(self, rec: Record, novelty: float, extra: dict[str, float],
               agent_type: str | None) -> tuple[float, list[str]]:
        # The producer's own score: on a re-run `emergence_score` holds the score computed last
        # time (written back below), so the producer's value is the stored `emergence.provided`
        # signal (absent when the producer gave none). Signals travel with the JSONL, so this holds
        # across a write and re-read too.
        provided = (rec.signals.get("emergence.provided") if "emergence.score" in rec.signals
                    else rec.emergence_score)
        for key in [k for k in rec.signals if k.startswith("emergence.")]:
            del rec.signals[key]  # a re-run replaces every component of the previous one
        text = sig.record_text(rec)
        kw, feats = sig.keyword_score(text)
        parts: dict[str, float | None] = {
            "provided": provided, "novelty": novelty, "keywords": kw,
            "complexity": sig.complexity_score(rec), "agent": sig.agent_score(text, agent_type)}
        total = norm = 0.0
        for name, value in parts.items():
            if value is None:
                continue
            rec.signals[f"emergence.{name}"] = float(value)
            w = self.component_weights.get(name, 0.0)
            total += w * min(1.0, max(0.0, float(value)))
            norm += w
        for name, value in extra.items():
            rec.signals[f"emergence.{name}"] = value
        score = total / norm if norm > 0 else 0.0
        rec.signals["emergence.score"] = score
        # The original API: `record.emergence_score` is the computed score after processing, so
        # `to_json()` and written JSONL carry it (the producer's value stays in emergence.provided).
        rec.emergence_score = round(score, 6)
        return score, feats

    def create_curriculum(self, scored: Sequence[Record], strategy: str = "weighted") -> Curriculum:
        """See `iceburg.emergence.curriculum` for what each strategy means to the trainer."""
        return build_curriculum(scored, strategy)


def create_curriculum(scored: Sequence[Record], strategy: str = "weighted") -> Curriculum:
    """Module-level form of `EmergenceProcessor.create_curriculum`."""
    return build_curriculum(scored, strategy)


def process_for_emergence(data: Iterable[Record | dict[str, Any]], agent_type: str | None = None
                          ) -> tuple[list[Record], EmergenceStats]:
    """Convenience wrapper of the original API: default processor, one call."""
    return EmergenceProcessor().process(data, agent_type)
