"""End-of-turn model signal inside the rules' uncertain band, leave one source out (issue 31).

    python bench/truth_eot.py [--model smollm2-135m] [--sources readme debian python project]

For each source's planted-defect corpus (bench/truth_loso_corpus.py) the shipped filter
(`completeness="structure"`) scores every record. The **band** is the records with no defect
yet whose final answer the line rules (`signals.truncation`) call cut while the last markdown
block judged it complete (`structure.review_cut` cleared it): there the two rule sets disagree.
Only band records are scored by the model (`iceburg.truth.eot.EotScorer`, log P(end-of-turn)
after the answer). For each source left out, the threshold (or "off") with the smallest
shortfall on the OTHER sources is chosen (truncation >= 0.9, clean rejected <= 3% weighted x10,
template/sibling pairs kept >= 0.95, as bench/truth_loso.py) and its figures on the left-out
source are reported. Cost: wall time of the model per scored record, and per corpus record
(model time / all records). Results: bench/results/truth_eot.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import truth_loso as tl  # noqa: E402
import truth_loso_corpus as corpus  # noqa: E402

from iceburg.data.tool_calls import answer_turns  # noqa: E402
from iceburg.truth import TruthFilter, signals  # noqa: E402
from iceburg.truth.eot import EotScorer, ends_open  # noqa: E402

MEASURED = ("clean", "truncation", "template", "sibling")  # the cells the band can change
THRESHOLDS = [None] + [round(-0.5 * k, 2) for k in range(1, 41)]  # None: model off; -0.5 .. -20 nats


def band_of(scored: list[dict]) -> tuple[list[int], list[bool]]:
    """Items with no defect reason inside the widest band (EotBand with open endings), and per
    item whether it is in the narrow "disagree" band (line rules cut, structure cleared)."""
    out, narrow = [], []
    for i, s in enumerate(scored):
        if s["codes"] is None or any(c != "low_quality" for c in s["codes"]):
            continue
        turns = answer_turns(s["record"].messages)
        cut = signals.truncation(turns[-1]) if turns else None
        if turns and (cut or ends_open(turns[-1])):
            out.append(i)
            narrow.append(bool(cut))
    return out, narrow


def source_figures(src: str, seed: int, scorer: EotScorer) -> dict:
    groups, _st = corpus.build_source(src, seed)
    ev = tl.SourceEval(groups, TruthFilter(min_quality_score=0.7))
    base = ev.cells(*tl.DEFAULT_DEDUP)
    n_all = ev.n_records
    both = {g: band_of(ev.scored[g]) for g in groups}
    band = {g: v[0] for g, v in both.items()}
    kept = {g: {i for i, s in enumerate(ev.scored[g]) if s["codes"] == []} for g in MEASURED}
    drop = {g: tl.dedup_outcome(ev.scored[g], *tl.DEFAULT_DEDUP, ev.sig_cache[g]) for g in MEASURED}
    lp: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    for g in MEASURED:
        lp[g] = scorer.score([ev.scored[g][i]["record"].messages for i in band[g]]) if band[g] else []
    secs = time.perf_counter() - t0
    n_scored = sum(len(v) for v in lp.values())
    return {"base": base, "n_records": n_all, "rules_s": ev.seconds, "model_s": secs, "n_scored": n_scored,
            "band_sizes": {g: len(v) for g, v in band.items() if v}, "band_total": sum(len(v) for v in band.values()),
            "narrow": {g: both[g][1] for g in MEASURED}, "narrow_total": sum(sum(v[1]) for v in both.values()),
            "lp": lp, "band": {g: band[g] for g in MEASURED}, "n": {g: len(groups[g]) for g in MEASURED},
            "kept_before": {g: sorted(i for i in kept[g] if i not in drop[g]) for g in MEASURED}}


def cells_at(f: dict, t: float | None, wide: bool = True) -> dict:
    """The base cells with band records below threshold `t` turned truncated (`wide=False`: only
    the narrow "disagree" band)."""
    c = dict(f["base"])
    if t is None:
        return c
    newly = {g: [i for i, x, nb in zip(f["band"][g], f["lp"][g], f["narrow"][g]) if x < t and (wide or nb)]
             for g in MEASURED}
    c["truncation"] += len(newly["truncation"]) / max(f["n"]["truncation"], 1)
    keptb = {g: set(f["kept_before"][g]) for g in MEASURED}
    c["clean_rejected"] += sum(1 for i in newly["clean"] if i in keptb["clean"]) / max(f["n"]["clean"], 1)
    for g in ("template", "sibling"):
        c[g] -= sum(1 for i in newly[g] if i in keptb[g]) / max(f["n"][g], 1)
    return c


def choose(figs: dict, others: list[str], wide: bool) -> float | None:
    """The threshold with the least shortfall on `others`; "off" wins ties with it; among tied
    thresholds the middle one (the widest margin to both sides of the tie)."""
    score = {t: round(sum(short(cells_at(figs[s], t, wide)) for s in others), 9) for t in THRESHOLDS}
    best = min(score.values())
    if score[None] == best:
        return None
    tied = [t for t in THRESHOLDS if score[t] == best]
    return tied[len(tied) // 2]


def short(c: dict) -> float:
    s = sum(max(0.0, tl.TARGETS[k] - c[k]) for k in ("truncation", "template", "sibling"))
    return s + tl.CLEAN_WEIGHT * max(0.0, c["clean_rejected"] - tl.CLEAN_MAX)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m", help="base model name or HF folder (resolve_base_model)")
    ap.add_argument("--sources", nargs="*", default=list(corpus.SOURCES))
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--verify", nargs=3, metavar=("SOURCE", "THRESHOLD", "BAND"),
                    help="end to end: TruthFilter(eot=...) on one source (BAND narrow|wide), off vs on")
    args = ap.parse_args()
    import torch

    from _common import machine_info
    from iceburg.base_models import resolve_base_model

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    base = resolve_base_model(args.model, allow_download=False)
    scorer = EotScorer(base.path, batch_size=args.batch_size)
    if args.verify:
        return verify(args.verify, scorer, args.seed)
    t0 = time.perf_counter()
    scorer.load()
    load_s = time.perf_counter() - t0
    figs = {}
    for s in args.sources:
        figs[s] = source_figures(s, args.seed, scorer)
        print(s, "band", figs[s]["band_total"], "scored", figs[s]["n_scored"], f"{figs[s]['model_s']:.1f}s", flush=True)
    rows = []
    for held in args.sources:
        others = [s for s in args.sources if s != held]
        f = figs[held]
        off = f["base"]
        row = {"left_out": held, "corpus_records": f["n_records"], "band_narrow": f["narrow_total"], "band_wide": f["band_total"],
               "truncation_off": off["truncation"], "clean_rejected_off": off["clean_rejected"]}
        for wide, tag in ((False, "narrow"), (True, "wide")):
            t = choose(figs, others, wide)
            on = cells_at(f, t, wide)
            row.update({f"t_{tag}": t, f"truncation_{tag}": on["truncation"], f"clean_rejected_{tag}": on["clean_rejected"],
                        f"pairs_kept_{tag}": min(on["template"], on["sibling"])})
        ms = 1000 * f["model_s"] / max(f["n_scored"], 1)
        row.update({"ms_per_scored": ms, "ms_rules_per_record": 1000 * f["rules_s"] / f["n_records"],
                    "ms_model_per_record_narrow": ms * f["narrow_total"] / f["n_records"],
                    "ms_model_per_record_wide": ms * f["band_total"] / f["n_records"]})
        rows.append(row)
    write(rows, figs, load_s, machine_info(), args)


def verify(spec: list[str], scorer: EotScorer, seed: int) -> None:
    """The wired path: the whole corpus through TruthFilter with and without the band (records/s of
    one process, truncation and clean rejected at the shipped dedup setting)."""
    from iceburg.truth.eot import EotBand

    src, t, band = spec[0], float(spec[1]), spec[2]
    groups, _st = corpus.build_source(src, seed)
    for name, eot in (("off", None), ("on", EotBand(scorer, t, open_endings=band == "wide"))):
        ev = tl.SourceEval(groups, TruthFilter(min_quality_score=0.7, eot=eot))
        c = ev.cells(*tl.DEFAULT_DEDUP)
        print(f"verify {src} {band} t={t} {name}: truncation {c['truncation']:.3f} clean_rejected "
              f"{c['clean_rejected']:.3f} records/s {ev.n_records / ev.seconds:.1f} model calls {scorer.calls}", flush=True)


def sep(f: dict) -> dict:
    """Band log-probs of clean vs truncated records (medians): does the model separate them?"""
    import statistics as st

    return {g: round(st.median(f["lp"][g]), 2) for g in ("clean", "truncation") if f["lp"][g]}


def write(rows: list[dict], figs: dict, load_s: float, meta: dict, args) -> None:
    from _common import RESULTS

    cols = list(rows[0])
    md = ["# truth_eot", "", "Machine: " + ", ".join(f"{k}={v}" for k, v in meta.items()),
          f"Threads: torch {os.environ.get('OMP_NUM_THREADS')}; model {args.model}, batch {args.batch_size}; load {load_s:.1f}s", "",
          f"Command: `python bench/truth_eot.py {' '.join(sys.argv[1:])}`", "",
          "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        md.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()) + " |")
    md += ["", "Band sizes per group and median band log P(eot) (clean vs truncation):", ""]
    for s, f in figs.items():
        md.append(f"- {s}: {f['band_sizes']}; medians {sep(f)}")
    md += ["", "threshold None = model off (chosen when no threshold lowers the other sources' shortfall)."]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "truth_eot.md").write_text("\n".join(md) + "\n")
    slim = {s: {k: v for k, v in f.items() if k not in ("kept_before",)} for s, f in figs.items()}
    (RESULTS / "truth_eot.json").write_text(json.dumps({"meta": meta, "rows": rows, "figures": slim}, indent=1, default=str))
    print("\n".join(md))


if __name__ == "__main__":
    main()
