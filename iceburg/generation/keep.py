"""What is kept: each generated transcript goes through the truth filter, dedup against the existing
training data and the held-out sets (no leakage), and emergence scoring, like logged data.

Duplicates are found by the package's own machinery: exact keys and MinHash signatures of
`iceburg.truth.dedup` (word 2-grams, Jaccard >= 0.5 finds edits up to ~15% of words; measured,
docs/truth_filter.md) and the emergence stage's MiniLM embeddings (`SentenceEmbedder`), cosine >=
`EMBED_THRESHOLD`. A record that matches a held-out record is dropped with `heldout_duplicate`
(a generated copy of an evaluation record would make the evaluation measure memory); one that
matches a training record with `exact_duplicate` / `near_duplicate`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..records import Reason, Record, RejectWriter

logger = logging.getLogger(__name__)

# Cosine similarity of MiniLM embeddings at or above which two texts count as the same content.
# 0.9: SemDeDup (Abbas et al. 2023) removes pairs from ~0.9 up on web data; the emergence stage's
# own optional dedup uses a more conservative 0.95 (iceburg/emergence/detector.py).
EMBED_THRESHOLD = 0.9


@dataclass
class Match:
    kind: str  # "exact_duplicate" | "near_duplicate" | "semantic_duplicate"
    label: str  # which set and record it matched ("heldout:file:line")
    similarity: float


@dataclass
class NearIndex:
    """Exact keys, MinHash digests and embeddings of a growing set of records; `match(record)` finds
    the most similar one at or above the thresholds. Linear scans: the sets here are thousands of
    records at most, and one scan is a single numpy comparison."""

    embedder: Any  # iceburg.emergence.embedding.SentenceEmbedder
    embed_threshold: float = EMBED_THRESHOLD
    labels: list[str] = field(default_factory=list)
    _exact: dict[bytes, int] = field(default_factory=dict)
    _digests: list[np.ndarray] = field(default_factory=list)
    _emb: np.ndarray = field(default_factory=lambda: np.zeros((0, 384), dtype=np.float32))

    def __post_init__(self) -> None:
        from ..truth.dedup import Deduplicator

        self._dedup = Deduplicator()

    def add(self, records: Sequence[Record], label: str) -> None:
        if not records:
            return
        for r in records:
            sig = self._dedup.signature(r)
            self._exact.setdefault(sig.exact, len(self.labels))
            self._digests.append(sig.digest)
            self.labels.append(f"{label}:{r.id}")
        self._emb = np.concatenate([self._emb, self.embedder.embed_records(list(records))])

    def match(self, record: Record) -> Match | None:
        if not self.labels:
            return None
        sig = self._dedup.signature(record)
        if sig.exact in self._exact:
            return Match("exact_duplicate", self.labels[self._exact[sig.exact]], 1.0)
        jac = (np.stack(self._digests) == sig.digest).mean(axis=1)
        j = int(np.argmax(jac))
        if jac[j] >= self._dedup.config.threshold:
            return Match("near_duplicate", self.labels[j], round(float(jac[j]), 4))
        cos = self._emb @ self.embedder.embed_records([record])[0]
        j = int(np.argmax(cos))
        if cos[j] >= self.embed_threshold:
            return Match("semantic_duplicate", self.labels[j], round(float(cos[j]), 4))
        return None


def prompt_record(messages: list[dict[str, Any]], source: str = "", line: int = 0) -> Record:
    """The part of a conversation before its first assistant turn, as a record (prompt dedup)."""
    out = []
    for m in messages:
        if m["role"] == "assistant":
            break
        out.append(m)
    return Record(messages=out, source=source, line=line)


@dataclass
class Curator:
    """The keep stage for generated transcripts: truth filter -> held-out leak -> training dedup ->
    dedup among the generated. Stateful: `check` in log order gives the same answer on every run."""

    truth: Any  # iceburg.truth.filter.TruthFilter
    agent_type: str | None
    heldout: NearIndex
    training: NearIndex
    generated: NearIndex
    kept: list[Record] = field(default_factory=list)

    def check(self, record: Record) -> list[Reason]:
        """[] when the record is kept (it is then indexed); else the reasons it is dropped."""
        a = self.truth.assess(record, self.agent_type)
        if a.reasons or a.quality < self.truth.min_quality_score:
            return list(a.reasons) or [Reason("low_quality", f"quality {a.quality:.2f} below "
                                              f"--min-quality-score {self.truth.min_quality_score}")]
        record.quality_score = a.quality
        hit = self.heldout.match(record)
        if hit is not None:
            return [Reason("heldout_duplicate", f"{hit.kind.replace('_', ' ')} (similarity {hit.similarity:.2f}) "
                           f"of held-out record {hit.label}")]
        for index, where in ((self.training, "training record"), (self.generated, "generated record")):
            hit = index.match(record)
            if hit is not None:
                code = "exact_duplicate" if hit.kind == "exact_duplicate" else "near_duplicate"
                return [Reason(code, f"{hit.kind.replace('_', ' ')} (similarity {hit.similarity:.2f}) of "
                                     f"{where} {hit.label}")]
        self.generated.add([record], "generated")
        self.kept.append(record)
        return []


def score_emergence(kept: list[Record], training: list[Record], agent_type: str | None) -> dict[str, Any]:
    """Emergence scores of the kept records, novelty measured against each other and against the
    existing training data (the detector's reference corpus), as the pipeline scores logged data."""
    from ..emergence import EmbeddingNoveltyDetector, EmergenceProcessor

    if not kept:
        return {}
    k = max(1, min(10, len(kept) - 1))  # the detector's default k=10, fewer when few records
    detector = EmbeddingNoveltyDetector(k=k, reference=training or None)
    scored, stats = EmergenceProcessor(detector=detector).process(kept, agent_type=agent_type)
    return stats.to_dict()


def drop(rejects: RejectWriter, stage: str, record: Record, reasons: list[Reason]) -> None:
    rejects.drop(stage, record, reasons, {k: v for k, v in record.metadata.items() if k.startswith("generate.")})
