"""Where to look: a ranked list of seed records for the teacher to write new prompts near.

Signals (each stored per seed in `parts`, rank-normalised to [0, 1] over the seeds that have it,
then combined as a weighted mean over the parts present, the emergence processor's rule):
  gap       low density: mean cosine distance of the record's MiniLM embedding to its k nearest
            curated neighbours (kNN distance as a density estimate, as the novelty detector does)
  cluster   low density between clusters, and small clusters: HDBSCAN over the embeddings;
            1 - membership strength x cluster size / largest cluster size (noise between clusters: 1)
  novel     NOVEL records (the emergence processor's category) with few close neighbours:
            1 - (share of the k neighbours with cosine >= CLOSE); 0 for other categories
  rejected  topics seen only in rejected records: a truth-filter reject whose nearest curated
            record is far (1 - max cosine, kept when below CLOSE): the agent never got a good answer there
  ifd       the student's instruction-following difficulty (Li et al. 2024, "From Quantity to
            Quality", NAACL): loss of the answer given the prompt / loss of the answer alone; near
            or above 1 the prompt does not help the student predict the answer (difficulty.py:
            both sequences in one batched forward pass per record)
`--seed-strategy random` ranks the curated records in a seeded random order instead (the ablation's
baseline, bench/curiosity_ablation.py).
"""

from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from ..records import Record

logger = logging.getLogger(__name__)

# Shares of the combined score: a design choice (equal weight to the embedding-space view, gap +
# cluster + novel = 0.4, and to the student's view), not a fitted one; `bench/curiosity_ablation.py`
# measures whether the ranking helps.
WEIGHTS = {"gap": 0.15, "cluster": 0.15, "novel": 0.1, "rejected": 0.2, "ifd": 0.4}
K = 10  # neighbours, the novelty detector's default (iceburg/emergence/detector.py)
# Cosine at or above which two records are on the same topic: MiniLM places paraphrases ~0.7-0.9 and
# unrelated questions below ~0.3 (sentence-transformers STS examples); 0.5 sits between.
CLOSE = 0.5
# HDBSCAN's default smallest cluster (Campello et al. 2013; the default of scikit-learn's HDBSCAN and
# of the hdbscan library): fewer records than that are not a topic, they are noise between topics.
MIN_CLUSTER = 5
# Neighbours that make a record a core point. The default (= MIN_CLUSTER) is the most conservative and
# marks all 69 records of the bundled surveyor sample (about 59 topics) as noise; 1 or 2 find 3 themes
# (23 records on climate, energy and astronomy; 18 on health, nutrition and labour; 6 on education and
# cognition) with 22 one-off topics (law, software security, history, ...) between them; 3 finds
# (21, 11, 5) and 32. Measured with scikit-learn 1.9.1 and MiniLM (docs/emergence.md).
MIN_SAMPLES = 2


@dataclass
class Seed:
    id: str  # "s<rank>"
    source: str  # the seed record's id (file:line)
    origin: str  # "curated" | "rejected"
    messages: list[dict[str, Any]]  # the seed record's conversation up to its first answer
    score: float | None
    parts: dict[str, float] = field(default_factory=dict)
    tools: list[dict[str, Any]] | None = None  # the seed record's tool definitions, sent to the teacher

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _prompt(record: Record) -> list[dict[str, Any]]:
    out = []
    for m in record.messages:
        if m["role"] == "assistant":
            break
        out.append({"role": m["role"], "content": m.get("content", "")})
    return out


def _rank01(values: np.ndarray) -> np.ndarray:
    """Percentile ranks in [0, 1] (ties share their mean rank): scale-free, so parts combine."""
    if len(values) < 2:
        return np.ones(len(values))
    from scipy.stats import rankdata

    return (rankdata(values) - 1) / (len(values) - 1)


def embedding_parts(curated: Sequence[Record], rejected: Sequence[Record], embedder: Any
                    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """gap, novel and cluster per curated record; rejected-only distance per rejected record."""
    from ..emergence import EmbeddingNoveltyDetector, EmergenceProcessor
    from ..emergence.neighbours import knn, mean_cosine_distance

    emb = embedder.embed_records(list(curated))
    k = max(1, min(K, len(curated) - 1))
    sims, idx, _ = knn(emb, k)
    gap = mean_cosine_distance(sims, idx, k)
    proc = EmergenceProcessor(detector=EmbeddingNoveltyDetector(k=k, embedder=embedder))
    scored, _ = proc.process([Record(messages=r.messages, source=r.source, line=r.line, tools=r.tools)
                              for r in curated])
    novel_cat = np.array([r.metadata["emergence.category"] == "novel" for r in scored])
    close = ((sims >= CLOSE) & (idx >= 0)).sum(axis=1) / k
    novel = np.where(novel_cat, 1.0 - close, 0.0)
    far = np.zeros(0)
    if rejected:
        rej = embedder.embed_records(list(rejected))
        far = 1.0 - (rej @ emb.T).max(axis=1)
    parts = {"gap": gap, "novel": novel}
    clustered = cluster_part(emb)
    if clustered is not None:
        parts["cluster"] = clustered
    return parts, far


def cluster_part(emb: np.ndarray) -> np.ndarray | None:
    """Low density between clusters and small clusters: HDBSCAN (scikit-learn's, which comes with
    sentence-transformers) over the cosine distances of the embeddings; per record
    1 - membership strength x its cluster's size / the largest cluster's size. Noise between clusters
    scores 1, a record at the edge of its cluster near 1, a core member of a small cluster above one of
    a large cluster, a core member of the largest cluster 0. None when there are too few records to
    cluster (fewer than 2 x MIN_CLUSTER) or no cluster is found (everything noise: the signal says nothing)."""
    if len(emb) < 2 * MIN_CLUSTER:
        return None
    from sklearn.cluster import HDBSCAN

    hd = HDBSCAN(min_cluster_size=MIN_CLUSTER, min_samples=MIN_SAMPLES, metric="cosine", copy=True)
    hd.fit(np.asarray(emb, dtype=np.float64))
    labels, strength = hd.labels_, hd.probabilities_
    if not (labels >= 0).any():
        return None
    sizes = np.bincount(labels[labels >= 0])
    relative = np.where(labels >= 0, sizes[np.maximum(labels, 0)] / sizes.max(), 0.0)
    logger.info("seeds: %d clusters (sizes %s), %d of %d records between them", len(sizes),
                sorted(sizes.tolist(), reverse=True), int((labels < 0).sum()), len(labels))
    return 1.0 - strength * relative


def rank_seeds(curated: Sequence[Record], rejected: Sequence[Record], *, strategy: str, embedder: Any,
               student: str | None, seed: int, threads: int | None = None) -> list[Seed]:
    """The ranked seed list: best first (curiosity), or a seeded shuffle of the curated records (random)."""
    if strategy == "random":
        order = list(range(len(curated)))
        random.Random(seed).shuffle(order)
        return [Seed(f"s{n}", curated[i].id, "curated", _prompt(curated[i]), None, tools=curated[i].tools)
                for n, i in enumerate(order)]
    parts, far = embedding_parts(curated, rejected, embedder)
    if student:
        from .difficulty import ifd_scores

        parts["ifd"] = ifd_scores(curated, student, threads=threads)
    rows: list[tuple[Record, str, dict[str, float]]] = []
    for i, r in enumerate(curated):
        rows.append((r, "curated", {k: float(v[i]) for k, v in parts.items() if not np.isnan(v[i])}))
    for i, r in enumerate(rejected):
        if far[i] > 1.0 - CLOSE and _prompt(r):
            rows.append((r, "rejected", {"rejected": float(far[i])}))
    return _combine(rows)


def _combine(rows: list[tuple[Record, str, dict[str, float]]]) -> list[Seed]:
    names = sorted({k for _, _, p in rows for k in p})
    ranked: dict[str, dict[int, float]] = {}
    for name in names:
        have = [i for i, (_, _, p) in enumerate(rows) if name in p]
        ranked[name] = dict(zip(have, _rank01(np.array([rows[i][2][name] for i in have]))))
    scores = []
    for i, (_, _, p) in enumerate(rows):
        w = sum(WEIGHTS[k] for k in p)
        scores.append(sum(WEIGHTS[k] * ranked[k][i] for k in p) / w if w else 0.0)
    order = sorted(range(len(rows)), key=lambda i: (-scores[i], i))
    return [Seed(f"s{n}", rows[i][0].id, rows[i][1], _prompt(rows[i][0]), round(scores[i], 6),
                 {k: round(v, 6) for k, v in rows[i][2].items()}, rows[i][0].tools) for n, i in enumerate(order)]
