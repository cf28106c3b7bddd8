"""Truth-filter throughput: records/s end to end and peak memory, iceburg vs a datasketch baseline.

    python bench/truth_throughput.py                 # 10k and 100k transcripts
    python bench/truth_throughput.py --sizes 10000   # quicker

Corpus: synthetic research transcripts of 2-8 KB (bench/truth_corpus.py), 90% clean, 5% planted
defects, 5% exact/near copies, written once to a JSONL cache. Each pipeline runs in a fresh
subprocess so its peak RSS is its own (main process + largest scoring worker):
- iceburg: `run_filter_only` (streaming read, score, exact + rensa MinHash-LSH near dedup with
  best-score-kept, write filtered/rejects/report), with 2 scoring workers and with 1;
- baseline: the straightforward way - load the whole file into a list, the same scoring
  (`TruthFilter.assess`, one process), exact dedup on a set of hashes, datasketch `MinHash` +
  `MinHashLSH` (same 160 permutations, threshold 0.5, word 2-grams, first-seen kept), write.
Both do the same parse + score work, so the difference is dedup and streaming. Dedup stage
seconds are reported separately. Results: bench/results/truth_throughput.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
CACHE = Path(os.environ.get("ICEBURG_BENCH_CACHE", "/tmp/iceburg_truth_bench"))
ROLES = ["surveyor", "dissident", "synthesist", "oracle", "base"]


def build_corpus(n: int, seed: int = 0) -> Path:
    from truth_corpus import clean_record, exact_copy, near_copy, plant

    path = CACHE / f"corpus_{n}_{seed}.jsonl"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    tmp = path.with_suffix(".partial")
    recent: list[dict] = []
    with open(tmp, "w", encoding="utf-8") as fh:
        for _ in range(n):
            u = rng.random()
            if u < 0.05 and recent:
                rec = plant(rng.choice(recent), rng.choice(["loop", "refusal", "truncation", "empty", "boilerplate"]), rng)
            elif u < 0.075 and recent:
                rec = exact_copy(rng.choice(recent), rng)
            elif u < 0.10 and recent:
                rec = near_copy(rng.choice(recent), rng.choice([0.02, 0.05, 0.1]), rng)
            else:
                rec = clean_record(rng, rng.choice(ROLES), rng.randint(1800, 7600))
                recent = (recent + [rec])[-200:]
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    tmp.rename(path)
    return path


def peak_mb() -> dict[str, float]:
    """Peak RSS of this process and of its largest child (scoring worker), plus CPU seconds used
    by both: on a shared machine wall time depends on the neighbours, CPU time much less."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    return {"peak_rss_main_mb": round(me.ru_maxrss / 1024, 1), "peak_rss_worker_mb": round(kids.ru_maxrss / 1024, 1),
            "cpu_seconds": round(cpu, 2)}


def run_iceburg(path: Path, out: Path, workers: int, combine: str = "rules") -> dict:
    from iceburg.config import TrainingConfig
    from iceburg.truth import TruthFilter, run_filter_only

    t0 = time.perf_counter()  # the filter is built inside the timed span, as --filter-only builds it
    tf = TruthFilter(workers=workers, combine=combine)
    rep = run_filter_only([str(path)], out, TrainingConfig(), truth_filter=tf)
    dt = time.perf_counter() - t0
    s = rep["stats"]
    return {"seconds": round(dt, 2), "dedup_seconds": round(rep["seconds"] - rep["scoring_seconds"], 2),
            "kept": s["final_output"], "exact_dups": s["exact_duplicates_removed"],
            "near_dups": s["near_duplicates_removed"], "low_quality": s["low_quality_removed"], **peak_mb()}


def run_baseline(path: Path, out: Path) -> dict:
    import hashlib

    from datasketch import MinHash, MinHashLSH

    from iceburg.data.loader import normalise
    from iceburg.truth import TruthFilter
    from iceburg.truth.dedup import record_words, shingles

    t0 = time.perf_counter()
    records = [normalise(json.loads(line)) for line in open(path, encoding="utf-8")]
    tf = TruthFilter()
    passed = [r for r in records if not tf.assess(r, None).reasons]
    t1 = time.perf_counter()
    lsh = MinHashLSH(threshold=0.5, num_perm=160)
    seen: set[str] = set()
    kept, exact, near = [], 0, 0
    sigs: dict[str, MinHash] = {}
    for i, r in enumerate(passed):
        words = record_words(r)
        key = hashlib.sha256(" ".join(words).encode()).hexdigest()
        if key in seen:
            exact += 1
            continue
        seen.add(key)
        mh = MinHash(num_perm=160, seed=42)
        mh.update_batch([s.encode() for s in shingles(words, 2)])
        # LSH candidates verified by estimated Jaccard, as iceburg does (unverified band collisions
        # at threshold 0.5 flag many unrelated pairs)
        if any(mh.jaccard(sigs[k]) >= 0.5 for k in lsh.query(mh)):
            near += 1
            continue
        lsh.insert(str(i), mh)
        sigs[str(i)] = mh
        kept.append(r)
    t2 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "filtered.jsonl", "w", encoding="utf-8") as fh:
        for r in kept:
            fh.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")
    dt = time.perf_counter() - t0
    return {"seconds": round(dt, 2), "dedup_seconds": round(t2 - t1, 2), "kept": len(kept),
            "exact_dups": exact, "near_dups": near, "low_quality": len(records) - len(passed), **peak_mb()}


def child(mode: str, path: str, out: str) -> None:
    """mode: baseline, iceburg-wN (the rules) or iceburg-wN+learned (TruthFilter(combine="learned"))."""
    p, o = Path(path), Path(out)
    name, _, combine = mode.partition("+")
    res = run_baseline(p, o) if name == "baseline" else run_iceburg(p, o, int(name.split("-w")[1]), combine or "rules")
    print("RESULT " + json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--baseline-max", type=int, default=10_000,
                    help="run the (slow, all-in-memory) baseline only up to this corpus size")
    ap.add_argument("--tag", default="", help="suffix of the results file name (e.g. a machine state)")
    ap.add_argument("--ab", metavar="DIR",
                    help="also run the iceburg pipelines from another checkout (e.g. `git worktree add "
                         "/tmp/old HEAD~1`), alternating with this one: on a shared machine only a ratio "
                         "measured in the same run means anything")
    ap.add_argument("--repeats", type=int, default=1, help="run every pipeline this many times")
    ap.add_argument("--pipelines", nargs="+", default=["iceburg-w2", "iceburg-w1", "baseline"],
                    help="which pipelines to run (iceburg-w1/-w2 and baseline up to --baseline-max)")
    ap.add_argument("--combine", nargs="+", default=["rules"], choices=["rules", "learned"],
                    help="TruthFilter(combine=...) of the iceburg pipelines; with both, each pipeline runs "
                         "once per value, alternating (pipelines named iceburg-wN+learned)")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    from _common import machine_info, save

    rows = []
    for n in args.sizes:
        t = time.perf_counter()
        path = build_corpus(n)
        mb = path.stat().st_size / 2**20
        print(f"corpus {n}: {mb:.0f} MiB ({time.perf_counter() - t:.0f} s to build or load)", flush=True)
        modes = [m for m in ["iceburg-w2"] + (["iceburg-w1", "baseline"] if n <= args.baseline_max else [])
                 if m in args.pipelines]
        runs = [(mode + ("" if c == "rules" or not mode.startswith("iceburg") else f"+{c}"), Path(__file__), ROOT)
                for mode in modes for c in (args.combine if mode.startswith("iceburg") else ["rules"])]
        if args.ab:  # the other checkout's iceburg pipelines, each right after this one's
            other = Path(args.ab).resolve()
            runs = [r for m, f, root in runs for r in [(m, f, root)] + (
                [(f"{m}@{other.name}", other / "bench" / f.name, other)] if m.startswith("iceburg") else [])]
        for (mode, script, root) in runs * args.repeats:
            out = CACHE / f"out_{n}_{mode}"
            proc = subprocess.run([sys.executable, str(script), "--child", mode.split("@")[0], str(path), str(out)],
                                  capture_output=True, text=True,
                                  env={**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(root)})
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not line:
                raise SystemExit(f"{mode} on {n} failed:\n{proc.stderr[-3000:]}")
            res = json.loads(line[0][7:])
            row = {"records": n, "corpus_mib": round(mb, 1), "pipeline": mode, **res,
                   "records_per_s": round(n / res["seconds"], 1),
                   "records_per_cpu_s": round(n / res["cpu_seconds"], 1),
                   "load_avg_1m": round(os.getloadavg()[0], 2)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta = machine_info()
    meta["note"] = ("iceburg-wN = run_filter_only with N scoring processes; baseline = list in memory, "
                    "same scoring in one process, datasketch MinHashLSH; the machine is shared, see load_avg_1m")
    cols = ["records", "corpus_mib", "pipeline", "seconds", "records_per_s", "cpu_seconds", "records_per_cpu_s",
            "dedup_seconds", "kept",
            "low_quality", "exact_dups", "near_dups", "peak_rss_main_mb", "peak_rss_worker_mb", "load_avg_1m"]
    if args.ab:
        meta["ab"] = f"pipelines suffixed @{Path(args.ab).resolve().name} ran from {args.ab}"
    print(save("truth_throughput" + (f"_{args.tag}" if args.tag else ""), rows, meta, cols))


if __name__ == "__main__":
    main()
