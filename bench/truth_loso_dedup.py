"""Near-duplicate thresholds per word n-gram size, calibrated leave-one-source-out (issue 31).

    python bench/truth_loso_dedup.py       # results/truth_loso_dedup.{md,json}

The similarity alone, apart from what the quality rules reject: on each source's corpus
(bench/truth_loso_corpus.py, same seed as bench/truth_loso.py) the MinHash estimate of the
filter's `Deduplicator` (160 permutations) is taken for every pair that must be KEPT apart
(template-sharing pairs: one report skeleton around two real sections; sibling pairs: two
sections of one document behind its shared first paragraph) and every pair that must be DROPPED
(copies with 5% and 10% of words edited; 2% and 20% reported too). For each word n-gram size 1-5
and each source left out, the threshold is chosen on the other three sources: the middle of the
widest gap between the highest kept-pair estimate and the lowest 5%/10%-copy estimate, or, when
the two overlap, the threshold with the fewest errors (ties: the middle of the tied range). On
the left-out source: the share of 5%/10% copies at or above it (found when both are kept), the
share of distinct pairs below it (kept), and 2%/20% copies found. The n-gram size for a fold is
the one with the fewest errors on the other sources, then the widest margin.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import numpy as np  # noqa: E402

import truth_loso_corpus as corpus  # noqa: E402
from iceburg.records import Record  # noqa: E402
from iceburg.truth.dedup import DedupConfig, Deduplicator  # noqa: E402

NGRAMS = (1, 2, 3, 4, 5)
KEEP = ("template", "sibling")
DROP = ("near_dup@0.05", "near_dup@0.1")
ALSO = ("near_dup@0.02", "near_dup@0.2")
GRID = tuple(round(0.2 + 0.01 * i, 2) for i in range(76))  # 0.20 .. 0.95


def pair_sims(groups: dict, n: int) -> dict[str, np.ndarray]:
    """Estimated Jaccard of every planted pair, by group."""
    dd = Deduplicator(DedupConfig(ngram=n))
    out = {}
    for g in KEEP + DROP + ALSO:
        items = groups[g]
        digests = [dd.signature(Record(messages=r["messages"])).digest for r, _l, _j in items]
        out[g] = np.array([float((digests[i] == digests[j]).mean()) for i, (_r, lab, j) in enumerate(items)
                           if j is not None and lab != "dup_original" and (g not in KEEP or i < j)])
    return out


def errors(sims: list[dict[str, np.ndarray]], t: float) -> tuple[int, float]:
    """(misclassified pairs, margin) at threshold t over the given sources."""
    keep = np.concatenate([s[g] for s in sims for g in KEEP])
    drop = np.concatenate([s[g] for s in sims for g in DROP])
    err = int((keep >= t).sum() + (drop < t).sum())
    return err, float(min(t - keep.max(), drop.min() - t))


def choose(sims: list[dict[str, np.ndarray]]) -> tuple[float, int, float]:
    """Threshold with the fewest errors; ties: the middle of the tied range (max margin inside a gap)."""
    scored = [(errors(sims, t), t) for t in GRID]
    best = min(e for (e, _m), _t in scored)
    tied = [t for (e, _m), t in scored if e == best]
    t = tied[len(tied) // 2]
    return t, best, errors(sims, t)[1]


def held_cells(s: dict[str, np.ndarray], t: float) -> dict[str, float]:
    out = {g: float((s[g] >= t).mean()) for g in DROP + ALSO}
    out.update({f"{g}_kept": float((s[g] < t).mean()) for g in KEEP})
    out["max_kept_pair"] = float(max(s[g].max() for g in KEEP))
    out["min_5_10_copy"] = float(min(s[g].min() for g in DROP))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    from _common import RESULTS, machine_info

    sims = {}
    for s in corpus.SOURCES:
        groups, _st = corpus.build_source(s, args.seed)
        sims[s] = {n: pair_sims(groups, n) for n in NGRAMS}
        print(s, "done", flush=True)
    rows, per_n = [], []
    for held in corpus.SOURCES:
        train = [s for s in corpus.SOURCES if s != held]
        fits = {n: choose([sims[s][n] for s in train]) for n in NGRAMS}
        for n, (t, err, margin) in fits.items():
            per_n.append({"left_out": held, "ngram": n, "threshold": t, "train_errors": err,
                          "train_margin": round(margin, 3), **held_cells(sims[held][n], t)})
        n_best = min(NGRAMS, key=lambda n: (fits[n][1], -fits[n][2], n != 2))
        rows.append({"left_out": held, "chosen": f"{n_best}/{fits[n_best][0]}", **held_cells(sims[held][n_best], fits[n_best][0])})
    meta = machine_info()
    cols = ["near_dup@0.05", "near_dup@0.1", "template_kept", "sibling_kept", "near_dup@0.02", "near_dup@0.2",
            "max_kept_pair", "min_5_10_copy"]
    md = ["# truth_loso_dedup", "", "Machine: " + ", ".join(f"{k}={v}" for k, v in meta.items()), "",
          f"Command: `python bench/truth_loso_dedup.py {' '.join(sys.argv[1:])}`", "",
          "## Per left-out source: n-gram size and threshold chosen on the other sources (similarity only)", "",
          "| left_out | chosen n/t | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    md += [f"| {r['left_out']} | {r['chosen']} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |" for r in rows]
    md += ["", "## Every n-gram size: threshold chosen on the other sources, figures on the left-out one", "",
           "| left_out | n | threshold | train errors | train margin | " + " | ".join(cols) + " |",
           "|---|---|---|---|---|" + "---|" * len(cols)]
    md += [f"| {r['left_out']} | {r['ngram']} | {r['threshold']} | {r['train_errors']} | {r['train_margin']} | "
           + " | ".join(f"{r[c]:.3f}" for c in cols) + " |" for r in per_n]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "truth_loso_dedup.md").write_text("\n".join(md) + "\n")
    (RESULTS / "truth_loso_dedup.json").write_text(json.dumps({"meta": meta, "rows": rows, "per_ngram": per_n}, indent=1))
    print("\n".join(md))


if __name__ == "__main__":
    main()
