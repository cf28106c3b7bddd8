"""Record by record: what the truth filter gets wrong on the leave-one-source-out corpora (issue 31).

    python bench/truth_loso_misses.py                            # learned default, four training sources
    python bench/truth_loso_misses.py --sources readme --variant structure

For each source (bench/truth_loso_corpus.py, same seed as bench/truth_loso.py) and one variant of
bench/truth_loso.py (the learned variant uses the source's own fold model: fit without it), lists
every clean transcript rejected (reasons and the answer's end), every planted cut not caught, and
every near-copy pair at 5% and 10% edits not caught, with both members' reasons and dedup
outcome. The held-out source `go` is not in the default list: its records are not to be read
while rules are written. Results: bench/results/truth_loso_misses{tag}.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import truth_loso as tl  # noqa: E402
import truth_loso_corpus as corpus  # noqa: E402


def _last(groups: dict, g: str, i: int) -> str:
    return [m for m in groups[g][i][0]["messages"] if m["role"] == "assistant"][-1]["content"]


def pair_misses(groups: dict, ev: tl.SourceEval, g: str) -> list[dict]:
    drop = tl.dedup_outcome(ev.scored[g], *tl.DEFAULT_DEDUP, ev.sig_cache[g])
    out = []
    for i, (_r, lab, j) in enumerate(groups[g]):
        if lab == "dup_original" or j is None:
            continue
        a, b = drop.get(i), drop.get(j)
        if (a is not None and a[1] == j) == (b is not None and b[1] == i):  # not exactly one dropped for the other
            out.append({"copy": i, "original": j, "copy_why": ev.scored[g][i].get("why"),
                        "original_why": ev.scored[g][j].get("why"), "dedup": [a, b],
                        "original_end": _last(groups, g, j)[-200:]})
    return out


def source_misses(source: str, variant: str, seed: int) -> dict:
    groups, _stats = corpus.build_source(source, seed)
    kw, consts = tl.variants()[variant]
    with tl.constants(consts):
        ev = tl.SourceEval(groups, tl.filter_for(kw, source))
    return {"cells": ev.cells(*tl.DEFAULT_DEDUP),
            "clean_rejected": [{"i": i, "why": s["why"], "end": _last(groups, "clean", i)[-300:]}
                               for i, s in enumerate(ev.scored["clean"]) if s["codes"]],
            "truncation_missed": [{"i": i, "codes": s["codes"], "end": _last(groups, "truncation", i)[-300:]}
                                  for i, s in enumerate(ev.scored["truncation"])
                                  if s["codes"] is not None and "truncated" not in s["codes"]],
            **{g: pair_misses(groups, ev, g) for g in ("near_dup@0.05", "near_dup@0.1")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sources", nargs="*", default=list(corpus.SOURCES))
    ap.add_argument("--variant", default="learned")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    from _common import RESULTS

    out = {}
    for s in args.sources:
        out[s] = r = source_misses(s, args.variant, args.seed)
        print(s, {k: len(v) for k, v in r.items() if isinstance(v, list)}, flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"truth_loso_misses{args.tag}.json").write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
