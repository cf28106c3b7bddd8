"""The `EmergenceDetector` protocol and the default detector: novelty by embedding distance.

Novelty of a record = mean cosine distance from its digest embedding to the k nearest *other*
records of the corpus (k=10 by default; a kNN-distance novelty score as in Pimentel et al. 2014,
"A review of novelty detection", distance-based methods). Cosine distance of L2-normalised
MiniLM embeddings lies in [0, 2]; in practice >= 1 means unrelated, so the score is the distance
clipped to [0, 1]: an absolute measure that does not force a fixed share of records into "novel".

Optionally the distance to a reference corpus (e.g. the data a previous model was trained on)
is measured too and blended in with `reference_weight`; and near-identical records (cosine
similarity >= `dedup_threshold` to an earlier kept record) are reported as duplicates.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from ..records import Record
from .embedding import SentenceEmbedder
from .neighbours import EXACT_LIMIT, knn, mean_cosine_distance, near_duplicates

logger = logging.getLogger(__name__)


@dataclass
class DetectorOutput:
    """Per-record results of a detector, aligned with the input records."""

    novelty: np.ndarray  # [n] in [0, 1], the score the processor combines
    signals: dict[str, np.ndarray] = field(default_factory=dict)  # stored as "emergence.<name>"
    # (kept index in the batch, or the kept record's id when it is outside the batch, similarity)
    duplicate_of: list[tuple[int | str, float] | None] | None = None
    info: dict[str, object] = field(default_factory=dict)  # timings, method, cache hits


@runtime_checkable
class EmergenceDetector(Protocol):
    """Anything that scores the novelty of a batch of records (relative to each other)."""

    def detect(self, records: Sequence[Record]) -> DetectorOutput: ...


class EmbeddingNoveltyDetector:
    """Default detector: MiniLM digest embeddings, kNN cosine distance, optional reference and
    semantic dedup.

    Args:
        k: neighbours averaged for novelty.
        reference: records or a precomputed [m, 384] embedding matrix to measure distance to.
        reference_weight: share of the reference distance in the novelty score (rest: in-corpus).
        dedup_threshold: cosine similarity at or above which a record is a near duplicate of an
            earlier one (None = no dedup). 0.95 is a conservative choice: SemDeDup (Abbas et al.
            2023) removes pairs from similarity ~0.9 up on web data.
        exact_limit: corpus size up to which exact search is used (above: faiss HNSW).
        embedder: a configured `SentenceEmbedder` (token budget, batch size, cache dir).
    """

    def __init__(self, k: int = 10, reference: Sequence[Record] | np.ndarray | None = None,
                 reference_weight: float = 0.5, dedup_threshold: float | None = None,
                 exact_limit: int = EXACT_LIMIT, embedder: SentenceEmbedder | None = None,
                 threads: int | None = None):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self.reference = reference
        self.reference_weight = reference_weight
        self.dedup_threshold = dedup_threshold
        self.exact_limit = exact_limit
        self.embedder = embedder or SentenceEmbedder()
        self.threads = threads

    def detect(self, records: Sequence[Record]) -> DetectorOutput:
        t0 = time.perf_counter()
        emb = self.embedder.embed_records(records)
        t1 = time.perf_counter()
        info: dict[str, object] = {"embed_seconds": round(t1 - t0, 3),
                                   "cache_hits": self.embedder.hits,
                                   "embedded": self.embedder.misses}
        # Search a few extra neighbours when dedup may remove some of them.
        width = self.k + (5 if self.dedup_threshold is not None else 0)
        sims, idx, method = knn(emb, width, exact_limit=self.exact_limit, threads=self.threads)
        info["search"] = method
        dup = None
        excluded = None
        if self.dedup_threshold is not None:
            dup = near_duplicates(sims, idx, self.dedup_threshold)
            excluded = np.array([d is not None for d in dup], dtype=bool)
        corpus = mean_cosine_distance(sims, idx, self.k, excluded)
        signals = {"novelty_corpus": corpus}
        novelty = np.clip(corpus, 0.0, 1.0)
        if self.reference is not None:
            ref = self._reference_embeddings()
            rs, ri, _ = knn(ref, self.k, queries=emb, exact_limit=self.exact_limit,
                            threads=self.threads)
            ref_dist = mean_cosine_distance(rs, ri, self.k)
            signals["novelty_reference"] = ref_dist
            w = self.reference_weight
            novelty = np.clip((1 - w) * corpus + w * ref_dist, 0.0, 1.0)
        info["search_seconds"] = round(time.perf_counter() - t1, 3)
        logger.info("novelty: %d records, embed %.1fs (%d cached), %s search %.1fs", len(records),
                    t1 - t0, self.embedder.hits, method, info["search_seconds"])
        return DetectorOutput(novelty=novelty.astype(np.float32), signals=signals,
                              duplicate_of=dup, info=info)

    def _reference_embeddings(self) -> np.ndarray:
        ref = self.reference
        if isinstance(ref, np.ndarray):
            return ref.astype(np.float32)
        return self.embedder.embed_records(list(ref))  # type: ignore[arg-type]
