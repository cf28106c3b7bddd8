"""The learned combination of the truth filter's signals, fit and chosen leave-one-source-out (issue 31).

    python bench/truth_loso_learned.py            # fit per fold, report (results/truth_loso_learned.*)
    python bench/truth_loso_learned.py --write    # ... and write iceburg/truth/combiner.json

For each of the four sources of bench/truth_loso_corpus.py (same seed, same corpora as
bench/truth_loso.py), every record is scored once by the shipped rules (`completeness=
"structure"`) and its features are taken (`iceburg.truth.combine`: loop and truncation features
from the signals the filter computes). Then, per source LEFT OUT:

1. two logistic models (scikit-learn `LogisticRegression`, L2, C=1, standardised features) are fit
   on the OTHER three sources: loops (planted loops = 1; clean and truncated records = 0) and
   truncation (planted cuts = 1; clean records = 0);
2. the two thresholds are chosen on the other three sources, on a grid of probabilities, by the
   shortfall of bench/truth_loso.py (targets: loop 0.95, truncation 0.9, near copies at 5% / 10%
   0.95, template and sibling pairs kept 0.95, exact 1.0; clean rejected above 3% x 10);
3. its cells on the left-out source are computed beside the rules' in the same harness.

The harness recomputes the decision from cached features, not through the filter: a record passes
when no other rule rejects it, its quality without a defect reaches 0.7, and neither model fires;
a duplicate pair is caught when both members pass and their MinHash estimate (word 2-grams) is
>= 0.5; template/sibling pairs are kept when both pass and their estimate is < 0.5. The filter's
own figures with the written coefficients come from `python bench/truth_loso.py --variants
structure learned` (fold models on each left-out source). `--write` stores the four fold models
and one fit on all sources (the filter's default when `combine="learned"`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import numpy as np  # noqa: E402

import truth_loso as tl  # noqa: E402
import truth_loso_corpus as corpus  # noqa: E402
from iceburg.data.tool_calls import answer_turns, structure_view  # noqa: E402
from iceburg.truth import TruthFilter, signals  # noqa: E402
from iceburg.truth import filter as tfm  # noqa: E402
from iceburg.truth.combine import (LOOP_FEATURES, TRUNC_FEATURES, WEIGHTS, LogisticModel,  # noqa: E402
                                   loop_features, truncation_features)
from iceburg.truth.dedup import DedupConfig, Deduplicator  # noqa: E402

GRID = tuple(round(x, 3) for x in np.concatenate((np.arange(0.05, 0.95, 0.025), np.arange(0.95, 1.0, 0.005))))
PAIR_GROUPS = ("exact_dup", "near_dup@0.05", "near_dup@0.1", "template", "sibling")
C = 1.0
PARTS = ("repetition", "truncated")
VARIANTS = {"both": PARTS, "loops": ("repetition",), "truncation": ("truncated",)}


def record_rows(groups: dict, tf: TruthFilter, dd: Deduplicator) -> dict[str, list[dict]]:
    """Per group and record: rule codes, the other rules' verdict, features, MinHash digest."""
    out: dict[str, list[dict]] = {}
    for g, items in groups.items():
        scored = tl.score_group(items, tf)
        rows = []
        for s in scored:
            if s["codes"] is None:
                rows.append({"codes": None})
                continue
            r = s["record"]
            turns = answer_turns(r.messages)
            ts = signals.compute(turns, structure=True)
            other = [c for c in ts.defects if c not in ("repetition", "truncated")]
            rows.append({"codes": s["codes"], "other": other, "low": _low_without_defect(r, ts, tf),
                         "loop": loop_features(ts.values, turns) if turns else dict.fromkeys(LOOP_FEATURES, 0.0),
                         "trunc": truncation_features(turns[-1] if turns else "", ts.line_cut, ts.block_cut),
                         "digest": dd.signature(r).digest if g in PAIR_GROUPS else None})
        out[g] = rows
    return out


def _low_without_defect(record, ts, tf: TruthFilter) -> bool:
    """Whether the record falls below 0.7 on its soft penalties alone (as `TruthFilter.assess`)."""
    problems, _ = signals.role_structure(structure_view(record.messages))
    rubric = record.signals.get("truth.rubric", 0.0)
    computed = min(max(tfm.BASE_SCORE + tfm.RUBRIC_WEIGHT * rubric - sum(ts.soft.values())
                       - tfm.STRUCTURE_PENALTY * len(problems), 0.0), 1.0)
    q = computed if record.quality_score is None else 0.5 * record.quality_score + 0.5 * computed
    return round(q, 4) < tf.min_quality_score


class SourceTable:
    """One source's rows as arrays; cells for any pair of model probabilities and thresholds."""

    def __init__(self, groups: dict, rows: dict[str, list[dict]]):
        self.groups, self.rows = groups, rows
        self.valid = {g: np.array([r["codes"] is not None for r in rs]) for g, rs in rows.items()}
        self.base_fail = {g: np.array([r["codes"] is None or bool(r["other"]) or r["low"] for r in rs])
                          for g, rs in rows.items()}
        self.sim = {g: self._pair_sims(g) for g in PAIR_GROUPS}
        self.not_empty = {g: np.array(["empty" not in (r.get("other") or []) for r in rs]) for g, rs in rows.items()}
        self.pairs = {g: [(i, j) for i, (_r, lab, j) in enumerate(groups[g]) if j is not None and lab != "dup_original"]
                      for g in PAIR_GROUPS}

    def _pair_sims(self, g: str) -> np.ndarray:
        rs, items = self.rows[g], self.groups[g]
        out = np.zeros(len(rs))
        for i, (_r, _lab, j) in enumerate(items):
            a, b = rs[i].get("digest"), rs[j].get("digest") if j is not None else None
            if a is not None and b is not None:
                out[i] = float((a == b).mean())
        return out

    def X(self, g: str, kind: str) -> np.ndarray:
        names = LOOP_FEATURES if kind == "loop" else TRUNC_FEATURES
        return np.array([[r[kind][k] for k in names] if r["codes"] is not None else [0.0] * len(names)
                         for r in self.rows[g]])

    def rule_probs(self, g: str) -> tuple[np.ndarray, np.ndarray]:
        """The rules' verdicts as 0/1 'probabilities' (threshold 0.5 reproduces them)."""
        rs = self.rows[g]
        return (np.array([float(r["codes"] is not None and "repetition" in r["codes"]) for r in rs]),
                np.array([float(r["codes"] is not None and "truncated" in r["codes"]) for r in rs]))

    def cells(self, probs: dict[str, tuple[np.ndarray, np.ndarray]], tl_: float, tt: float) -> dict:
        """probs[group] = (p_loop, p_trunc)."""
        out: dict[str, float] = {}
        passed = {}
        for g, (pl, pt) in probs.items():
            loop = self.valid[g] & (pl >= tl_)
            trunc = self.valid[g] & ~loop & (pt >= tt) & self.not_empty[g]
            passed[g] = ~self.base_fail[g] & ~loop & ~trunc
            if g == "loop":
                out["loop"] = float(loop.mean())
            if g == "truncation":
                out["truncation"] = float(trunc.mean())
        out["clean_rejected"] = 1.0 - float(passed["clean"].mean())
        for g in PAIR_GROUPS:
            p, sim, idx = passed[g], self.sim[g], self.pairs[g]
            if g in ("template", "sibling"):
                kept = [p[i] and not (p[j] and sim[i] >= 0.5 and i > j) for i, j in idx]
                out[g] = float(np.mean(kept)) if kept else 1.0
            else:
                caught = [p[i] and p[j] and sim[i] >= 0.5 or (g == "exact_dup" and not p[i] and not p[j]
                                                           and self.valid[g][i] and self.valid[g][j]) for i, j in idx]
                out[g] = float(np.mean(caught)) if caught else 1.0
        for col, gs in tl.DEFECT_COLS.items():
            if col not in ("truncation", "loop"):
                hits = [r["codes"] is not None and tl.trc.DEFECTS[g] in r["codes"] for g in gs for r in self.rows[g]]
                out[col] = sum(hits) / max(len(hits), 1)
        return out


def fit(tables: dict[str, SourceTable], kind: str) -> LogisticModel:
    """One logistic model on the given sources' planted defects (threshold set later)."""
    from sklearn.linear_model import LogisticRegression

    pos, negs = ("loop", ("clean", "truncation")) if kind == "loop" else ("truncation", ("clean",))
    xs, ys = [], []
    for t in tables.values():
        for g, y in [(pos, 1)] + [(n, 0) for n in negs]:
            x = t.X(g, kind)[t.valid[g]]
            xs.append(x)
            ys.append(np.full(len(x), y))
    X, y = np.concatenate(xs), np.concatenate(ys)
    mean, scale = X.mean(axis=0), X.std(axis=0)
    scale[scale < 1e-9] = 1.0
    m = LogisticRegression(C=C, max_iter=5000).fit((X - mean) / scale, y)
    names = LOOP_FEATURES if kind == "loop" else TRUNC_FEATURES
    return LogisticModel(names, mean, scale, m.coef_[0], float(m.intercept_[0]), 0.5)


def model_probs(t: SourceTable, models: dict[str, LogisticModel],
                parts: tuple[str, ...] = PARTS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(p_loop, p_trunc) per group; a defect not in `parts` keeps the rules' 0/1 verdict."""
    def p(m: LogisticModel, X: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.clip(m.intercept + ((X - m.mean) / m.scale) @ m.coef, -50, 50)))
    out = {}
    for g in t.rows:
        rl, rt = t.rule_probs(g)
        out[g] = (p(models["repetition"], t.X(g, "loop")) if "repetition" in parts else rl,
                  p(models["truncated"], t.X(g, "trunc")) if "truncated" in parts else rt)
    return out


def choose(tables: dict[str, SourceTable], models: dict[str, LogisticModel],
           parts: tuple[str, ...]) -> tuple[float, float, float]:
    """Thresholds (loop, truncation) with the least total shortfall on `tables` (0.5 for a rule).

    The shortfall is flat over a wide range (clean rejections below 3% cost nothing in it, and
    recall above its target gains nothing), and ties once went to the lowest threshold: the most
    rejecting one on the plateau (issue 31, session 5: loop thresholds 0.10-0.20, and 4 of
    Debian's 12 clean rejections were code-heavy Node.js docs scored 0.32-0.54 by the loop model fit
    without Debian). Ties now go (1) to the fewest clean rejections on `tables` (each one removes
    real data, below 3% too), then (2) to the middle of the thresholds still tied, which leaves the
    same margin to both ends of the range the training sources cannot tell apart."""
    probs = {s: model_probs(t, models, parts) for s, t in tables.items()}
    scored = []
    for a in GRID if "repetition" in parts else (0.5,):
        for b in GRID if "truncated" in parts else (0.5,):
            cells = [t.cells(probs[s], a, b) for s, t in tables.items()]
            scored.append((round(sum(tl.shortfall(c) for c in cells), 9),
                           round(sum(c["clean_rejected"] for c in cells), 9), a, b))
    best = min(x[:2] for x in scored)
    tied = [x for x in scored if x[:2] == best]
    mid_a = (min(x[2] for x in tied) + max(x[2] for x in tied)) / 2
    mid_b = (min(x[3] for x in tied) + max(x[3] for x in tied)) / 2
    pick_ = min(tied, key=lambda x: (abs(x[2] - mid_a) + abs(x[3] - mid_b), x[2], x[3]))
    return pick_[2], pick_[3], pick_[0]


def fold(tables: dict[str, SourceTable], train: list[str], parts: tuple[str, ...]) -> tuple[dict[str, LogisticModel], float]:
    """Both models fit on `train`; thresholds of the `parts` chosen there (the others: the rules)."""
    sub = {s: tables[s] for s in train}
    models = {"repetition": fit(sub, "loop"), "truncated": fit(sub, "trunc")}
    a, b, sf = choose(sub, models, parts)
    models["repetition"].threshold, models["truncated"].threshold = a, b
    return models, sf


def pick(rows: list[dict]) -> str:
    """The variant to write: among those whose left-out shortfall is <= the rules' on EVERY source
    (clean rejected not higher, no target cell newly missed), the one with the least total
    left-out shortfall; "none" when no variant qualifies. This compares three candidates on the
    left-out figures themselves, a choice made on the test folds (said so in the results)."""
    ok: dict[str, float] = {}
    for v in VARIANTS:
        total, good = 0.0, True
        for r in (r for r in rows if r["combination"] == "rules"):
            mine = next(x for x in rows if x["source"] == r["source"] and x["combination"].startswith(f"learned {v} "))
            newly_missed = any(mine[k] < t <= r[k] for k, t in tl.TARGETS.items() if k in r)
            good &= (tl.shortfall(mine) <= tl.shortfall(r) + 1e-9 and mine["clean_rejected"] <= r["clean_rejected"] + 1e-9
                     and not newly_missed)
            total += tl.shortfall(mine)
        if good:
            ok[v] = total
    return min(ok, key=ok.get) if ok else "none"


COLS = ["clean_rejected", "truncation", "near_dup@0.05", "near_dup@0.1", "loop", "refusal", "empty", "garbage",
        "exact_dup", "template", "sibling"]


def md_table(rows: list[dict], first: list[str]) -> list[str]:
    out = ["| " + " | ".join(first + COLS) + " |", "|" + "---|" * (len(first) + len(COLS))]
    for r in rows:
        cells = [str(r[c]) for c in first]
        for c in COLS:
            v = r[c]
            miss = (c == "clean_rejected" and v > tl.CLEAN_MAX) or (c in tl.TARGETS and v < tl.TARGETS[c])
            txt = f"{v:.1%}" if c == "clean_rejected" else f"{v:.3f}"
            cells.append(f"**{txt}**" if miss else txt)
        out.append("| " + " | ".join(cells) + " |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--write", action="store_true", help=f"write the fold models and the all-source model to {WEIGHTS}")
    ap.add_argument("--tag", default="")
    ap.add_argument("--parts", choices=["auto", *VARIANTS], default="auto",
                    help="which defects the written models decide (the rest stay rules); auto: `pick`")
    args = ap.parse_args()
    from _common import RESULTS, machine_info
    import sklearn

    # the rules' verdicts are the baseline rows and the codes the features sit beside: explicit, since
    # the filter's default became the learned combination (session 4), which made the "rules" rows
    # the checked-in all-source model's - fit on the left-out source too (found in session 5)
    tf = TruthFilter(min_quality_score=0.7, combine="rules")
    dd = Deduplicator(DedupConfig(ngram=tl.DEFAULT_DEDUP[0], threshold=tl.DEFAULT_DEDUP[1]))
    tables = {}
    for s in corpus.SOURCES:
        groups, _st = corpus.build_source(s, args.seed)
        tables[s] = SourceTable(groups, record_rows(groups, tf, dd))
        print(s, "rows done", flush=True)
    rows, folds = [], {v: {} for v in VARIANTS}
    for held in corpus.SOURCES:
        train = [s for s in corpus.SOURCES if s != held]
        t = tables[held]
        rules = {g: t.rule_probs(g) for g in t.rows}
        rows.append({"source": held, "combination": "rules", **t.cells(rules, 0.5, 0.5)})
        for v, parts in VARIANTS.items():
            models, sf = fold(tables, train, parts)
            folds[v][held] = models
            a, b = models["repetition"].threshold, models["truncated"].threshold
            rows.append({"source": held, "combination": f"learned {v} ({a:.3f} / {b:.3f}; train shortfall {sf:.3f})",
                         **t.cells(model_probs(t, models, parts), a, b)})
        print("\n".join(str(r) for r in rows[-4:]), flush=True)
    picked = pick(rows) if args.parts == "auto" else args.parts
    print("picked:", picked, flush=True)
    # nothing better everywhere: the full models are written for study (the filter's default stays
    # the rules; docs/truth_filter.md says which combination ships)
    args.parts = "both" if picked == "none" else picked
    ship = VARIANTS[args.parts]
    folds[args.parts]["all"], sf_all = fold(tables, list(corpus.SOURCES), ship)
    meta = machine_info()
    doc = {"meta": {**meta, "sklearn": sklearn.__version__, "seed": args.seed, "C": C,
                    "fit": "bench/truth_loso_learned.py", "all_sources_shortfall": round(sf_all, 4),
                    "picked": picked},
           "parts": list(ship), "folds": {k: {n: m.to_dict() for n, m in v.items()} for k, v in folds[args.parts].items()}}
    md = ["# truth_loso_learned", "", "Machine: " + ", ".join(f"{k}={v}" for k, v in meta.items()), "",
          f"Command: `python bench/truth_loso_learned.py {' '.join(sys.argv[1:])}` (scikit-learn {sklearn.__version__})", "",
          "Rules vs learned combination per left-out source, same harness (thresholds loop / truncation "
          "chosen on the other sources). Bold: misses issue 31's target.", ""] + md_table(rows, ["source", "combination"])
    md += ["", f"Better than the rules on every left-out source (`pick`, a choice among three made on the "
           f"left-out figures): **{picked}**."]
    md += ["", f"Coefficients (standardised features) of the models fit on all sources (`--parts {args.parts}`: "
           f"thresholds chosen for {', '.join(ship)}):", ""]
    for n, m in folds[args.parts]["all"].items():
        order = np.argsort(-np.abs(m.coef))
        md.append(f"- {n} (threshold {m.threshold:.3f}): " + ", ".join(f"{m.features[i]} {m.coef[i]:+.2f}" for i in order))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"truth_loso_learned{args.tag}.md").write_text("\n".join(md) + "\n")
    (RESULTS / f"truth_loso_learned{args.tag}.json").write_text(json.dumps({"rows": rows, **doc}, indent=1, default=str))
    if args.write:
        tmp = WEIGHTS.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"written_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
                                   **doc}, indent=1))
        tmp.replace(WEIGHTS)
    print("\n".join(md))


if __name__ == "__main__":
    main()
