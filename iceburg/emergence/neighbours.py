"""k-nearest-neighbour search over L2-normalised embeddings (cosine similarity = inner product).

Exact blocked search with numpy up to `exact_limit` rows; above it an HNSW index from faiss
(`faiss-cpu`, Meta's similarity-search library; HNSW: Malkov & Yashunin 2018). Exact search costs
n^2 * d multiply-adds: 20k x 20k x 384 = 1.5e11, a few seconds on 2 cores; at 100k it would be 25x
that, which is what the approximate index is for. Without faiss installed the exact search is
used at any size (correct, only slower) and a warning says how to install faiss.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

EXACT_LIMIT = 20_000
# HNSW parameters: M=32 and efSearch=64 are faiss's documented good-recall settings for
# sentence-embedding sized vectors (faiss wiki "Indexing 1M vectors"; recall@10 > 0.95 there);
# bench/emergence_throughput.py measures recall against exact search on our data.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 64
# Exact search works on blocks of query rows: a block's similarity matrix (4 bytes per base row)
# and argpartition's index matrix (8 bytes) together stay under 64 MiB. A fixed 2,048-row block
# cost +470 MB at 10k records and +942 MB at the 20k exact limit (measured, issue 13); bounded
# blocks keep the search's extra memory flat in n.
_BLOCK_BYTES = 64 * 2**20


def _exact(queries: np.ndarray, base: np.ndarray, k: int, exclude_self: bool):
    n = queries.shape[0]
    sims = np.empty((n, k), dtype=np.float32)
    idx = np.empty((n, k), dtype=np.int64)
    block = max(1, _BLOCK_BYTES // (12 * max(1, base.shape[0])))
    for start in range(0, n, block):
        s = queries[start:start + block] @ base.T
        if exclude_self:
            rows = np.arange(s.shape[0])
            s[rows, rows + start] = -np.inf
        np.negative(s, out=s)  # ascending partition of -s = the k most similar, without a copy
        part = np.argpartition(s, kth=k - 1, axis=1)[:, :k]
        vals = -np.take_along_axis(s, part, axis=1)
        order = np.argsort(-vals, axis=1)
        idx[start:start + block] = np.take_along_axis(part, order, axis=1)
        sims[start:start + block] = np.take_along_axis(vals, order, axis=1)
    return sims, idx


def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def knn(base: np.ndarray, k: int, queries: np.ndarray | None = None,
        exact_limit: int = EXACT_LIMIT, threads: int | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """The k most similar rows of `base` for each query (default: each row of `base`, itself
    excluded). Returns (similarities [n, k] descending, indices [n, k], method). Indices are -1
    where fewer than k neighbours exist."""
    base = np.ascontiguousarray(base, dtype=np.float32)
    self_search = queries is None
    q = base if self_search else np.ascontiguousarray(queries, dtype=np.float32)
    avail = base.shape[0] - (1 if self_search else 0)
    kk = min(k, avail)
    if kk <= 0:
        return (np.zeros((q.shape[0], k), np.float32), np.full((q.shape[0], k), -1, np.int64), "none")
    faiss = _faiss() if base.shape[0] > exact_limit else None
    if base.shape[0] > exact_limit and faiss is None:
        logger.warning("%d vectors: using exact search (slow); pip install faiss-cpu==1.15.1 for "
                       "the approximate index", base.shape[0])
    if faiss is None:
        sims, idx = _exact(q, base, kk, self_search)
        method = "exact"
    else:
        if threads:
            faiss.omp_set_num_threads(threads)
        index = faiss.IndexHNSWFlat(base.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.add(base)
        index.hnsw.efSearch = max(HNSW_EF_SEARCH, 2 * (kk + 1))
        sims, idx = index.search(q, kk + 1 if self_search else kk)
        if self_search:  # drop each query's own row (not always ranked first for exact ties)
            keep = idx != np.arange(q.shape[0])[:, None]
            sims = np.stack([row[m][:kk] for row, m in zip(sims, keep)])
            idx = np.stack([row[m][:kk] for row, m in zip(idx, keep)])
        method = "hnsw"
    if kk < k:  # pad to the requested width
        pad = k - kk
        sims = np.pad(sims, ((0, 0), (0, pad)))
        idx = np.pad(idx, ((0, 0), (0, pad)), constant_values=-1)
    return sims.astype(np.float32), idx.astype(np.int64), method


def mean_cosine_distance(sims: np.ndarray, idx: np.ndarray, k: int,
                         excluded: np.ndarray | None = None) -> np.ndarray:
    """Mean cosine distance (1 - similarity) to the first k valid neighbours of each row.

    `excluded` (bool per base row) skips neighbours that were removed (near duplicates). A row
    with no valid neighbour gets distance 1.0 (nothing similar exists: maximally novel).
    """
    valid = idx >= 0
    if excluded is not None:
        valid &= ~excluded[np.where(idx >= 0, idx, 0)]
    rank = np.cumsum(valid, axis=1)
    use = valid & (rank <= k)
    count = use.sum(axis=1)
    # float32 dot products of unit vectors can exceed 1 by ~1e-7: clip so distances are >= 0
    total = np.where(use, 1.0 - np.clip(sims, -1.0, 1.0), 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), 1.0).astype(np.float32)


def near_duplicates(sims: np.ndarray, idx: np.ndarray, threshold: float) -> list[tuple[int, float] | None]:
    """Greedy semantic dedup in input order: row i is a duplicate of the earliest kept row j < i
    among its neighbours with cosine similarity >= threshold (SemDeDup, Abbas et al. 2023, keeps
    one member per epsilon-neighbourhood in embedding space)."""
    n = sims.shape[0]
    dup: list[tuple[int, float] | None] = [None] * n
    for i in range(n):
        best: tuple[int, float] | None = None
        for s, j in zip(sims[i], idx[i]):
            if j < 0 or s < threshold or j >= i or dup[j] is not None:
                continue
            if best is None or j < best[0]:
                best = (int(j), float(s))
        dup[i] = best
    return dup
