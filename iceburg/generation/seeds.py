"""Where to look: a ranked list of seed records for the teacher to write new prompts near.

Signals (each stored per seed in `parts`, rank-normalised to [0, 1] over the seeds that have it,
then combined as a weighted mean over the parts present, the emergence processor's rule):
  gap       low density: mean cosine distance of the record's MiniLM embedding to its k nearest
            curated neighbours (kNN distance as a density estimate, as the novelty detector does)
  novel     NOVEL records (the emergence processor's category) with few close neighbours:
            1 - (share of the k neighbours with cosine >= CLOSE); 0 for other categories
  rejected  topics seen only in rejected records: a truth-filter reject whose nearest curated
            record is far (1 - max cosine, kept when below CLOSE): the agent never got a good answer there
  ifd       the student's instruction-following difficulty (Li et al. 2024, "From Quantity to
            Quality", NAACL): loss of the answer given the prompt / loss of the answer alone; near
            or above 1 the prompt does not help the student predict the answer
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

# Shares of the combined score: a design choice (equal weight to the embedding-space view and to the
# student's view), not a fitted one; `bench/curiosity_ablation.py` measures whether the ranking helps.
WEIGHTS = {"gap": 0.25, "novel": 0.15, "rejected": 0.2, "ifd": 0.4}
K = 10  # neighbours, the novelty detector's default (iceburg/emergence/detector.py)
# Cosine at or above which two records are on the same topic: MiniLM places paraphrases ~0.7-0.9 and
# unrelated questions below ~0.3 (sentence-transformers STS examples); 0.5 sits between.
CLOSE = 0.5


@dataclass
class Seed:
    id: str  # "s<rank>"
    source: str  # the seed record's id (file:line)
    origin: str  # "curated" | "rejected"
    messages: list[dict[str, Any]]  # the seed record's conversation up to its first answer
    score: float | None
    parts: dict[str, float] = field(default_factory=dict)

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
    """gap and novel per curated record; rejected-only distance per rejected record."""
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
    return {"gap": gap, "novel": novel}, far


def ifd_scores(curated: Sequence[Record], student: str, max_length: int = 512,
               threads: int | None = None) -> np.ndarray:
    """Loss of the answer given the prompt over the loss of the answer alone, per record (the
    conditioned loss is training's own encoding of the record; the plain one is the answer text)."""
    from ..base_models import resolve_base_model
    from ..evaluation.models import HfModel

    model = HfModel(resolve_base_model(student).path, list(curated), threads=threads)
    cond = model.record_losses(list(curated), max_length)
    plain = model.text_losses([r.assistant_text() for r in curated], max_length)
    out = []
    for c, (p_sum, p_n) in zip(cond, plain):
        out.append(np.nan if c is None or not c[1] or not p_n else (c[0] / c[1]) / max(p_sum / p_n, 1e-6))
    return np.asarray(out, dtype=np.float64)


def rank_seeds(curated: Sequence[Record], rejected: Sequence[Record], *, strategy: str, embedder: Any,
               student: str | None, seed: int, threads: int | None = None) -> list[Seed]:
    """The ranked seed list: best first (curiosity), or a seeded shuffle of the curated records (random)."""
    if strategy == "random":
        order = list(range(len(curated)))
        random.Random(seed).shuffle(order)
        return [Seed(f"s{n}", curated[i].id, "curated", _prompt(curated[i]), None) for n, i in enumerate(order)]
    parts, far = embedding_parts(curated, rejected, embedder)
    if student:
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
                 {k: round(v, 6) for k, v in rows[i][2].items()}) for n, i in enumerate(order)]
