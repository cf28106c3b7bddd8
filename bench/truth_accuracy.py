"""Truth-filter accuracy on a labelled set with planted defects: precision and recall per class.

    python bench/truth_accuracy.py

Labelled set (bench/truth_corpus.py, seed 7): clean transcripts of every role; the same kind of
transcripts with one planted defect each (generation loops, refusals, cut-off answers, empty
answers, boilerplate-only answers; half of them carry a high producer `quality_score`, as a
careless producer would give); exact copies (re-spaced, sometimes upper-cased) and near copies
with 2/5/10/20/30% of words substituted, inserted or deleted. Defect records are built on their own
base transcripts, so each is judged alone.

Scoring: a defect record is detected when the filter rejects it *with that class among its
reasons*; precision of a class = records given that reason that carry that label. A duplicate pair
is detected when exactly one member is dropped with the right reason and `duplicate_of` names the
other. Clean rejection rate = clean singles rejected for any reason. Targets (issue 4): exact
recall 1.0; near (<= 10% words changed) recall >= 0.9; loops, refusals, empty recall >= 0.9; at
most 5% of clean records rejected. Results: bench/results/truth_accuracy.{md,json}.
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections import Counter, defaultdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from truth_corpus import clean_record, exact_copy, near_copy, plant  # noqa: E402

from iceburg.data.loader import normalise, read_records  # noqa: E402
from iceburg.records import RejectWriter  # noqa: E402
from iceburg.truth import DedupConfig, TruthFilter  # noqa: E402
from iceburg.truth.dedup import record_words, shingles  # noqa: E402

ROLES = ["surveyor", "dissident", "synthesist", "oracle", "base"]
DEFECTS = {"loop": "repetition", "refusal": "refusal", "refusal_heldout": "refusal", "refusal_heldout2": "refusal",
           "truncation": "truncated", "empty": "empty", "boilerplate": "boilerplate"}
RATES = [0.02, 0.05, 0.10, 0.20, 0.30]
TARGETS = {"exact_dup": 1.0, "near_dup@0.02": 0.9, "near_dup@0.05": 0.9, "near_dup@0.1": 0.9,
           "loop": 0.9, "refusal": 0.9, "refusal_heldout": 0.9, "refusal_heldout2": 0.9, "empty": 0.9}


def build(seed: int = 7, n_clean: int = 1000, n_defect: int = 200, n_exact: int = 200, n_near: int = 100):
    rng = random.Random(seed)
    items: list[tuple[dict, str, int | None]] = []  # (record, label, partner index)

    def fresh() -> dict:
        return clean_record(rng, rng.choice(ROLES), rng.randint(1800, 7600))

    for _ in range(n_clean):
        items.append((fresh(), "clean", None))
    for defect in DEFECTS:
        for _ in range(n_defect):
            items.append((plant(fresh(), defect, rng), defect, None))
    for _ in range(n_exact):
        base = fresh()
        i = len(items)
        items.append((base, "dup_original", i + 1))
        items.append((exact_copy(base, rng), "exact_dup", i))
    for rate in RATES:
        for _ in range(n_near):
            base = fresh()
            i = len(items)
            items.append((base, f"dup_original@{rate}", i + 1))
            items.append((near_copy(base, rate, rng), f"near_dup@{rate}", i))
    order = list(range(len(items)))
    rng.shuffle(order)
    return [items[i] for i in order], order


def evaluate(tf: TruthFilter, items, order) -> dict:
    pos = {orig: new for new, orig in enumerate(order)}  # original index -> shuffled position
    records = [normalise(rec, source="eval", line=i + 1) for i, (rec, _l, _p) in enumerate(items)]
    rw = RejectWriter(None)
    kept, stats = tf.filter(records, rejects=rw)
    kept_ids = {r.id for r in kept}
    preds: list[set[str]] = []
    dup_of: dict[int, str] = {}
    for i, r in enumerate(records):
        if r.id in kept_ids:
            preds.append(set())
            continue
        preds.append(set(r.metadata["truth_codes"]))  # Reason.code of each reason
        if r.metadata.get("truth_category") == "DUPLICATE":
            dup_of[i] = r.metadata["duplicate_of"]
    return {"records": records, "preds": preds, "dup_of": dup_of, "stats": stats, "pos": pos}


def score(items, ev) -> tuple[list[dict], dict]:
    records, preds, dup_of, pos = ev["records"], ev["preds"], ev["dup_of"], ev["pos"]
    rows = []
    labels = [lab for _r, lab, _p in items]
    n_clean = sum(1 for lab in labels if lab == "clean")
    clean_rej = [i for i, lab in enumerate(labels) if lab == "clean" and preds[i]]
    why = Counter(next(iter(sorted(preds[i]))) for i in clean_rej)
    for defect, reason in DEFECTS.items():
        lab = [i for i, x in enumerate(labels) if x == defect]
        flagged = [i for i, p in enumerate(preds) if reason in p]
        tp = sum(1 for i in lab if reason in preds[i])
        rejected = sum(1 for i in lab if preds[i])
        same = {d for d, r in DEFECTS.items() if r == reason}  # both refusal sets count for "refusal"
        rows.append({"class": defect, "reason": reason, "n": len(lab), "recall": tp / len(lab),
                     "rejected_any_reason": rejected / len(lab), "excluded_pairs": None,
                     "precision": (sum(1 for i in flagged if labels[i] in same) / len(flagged)) if flagged else None,
                     "target_recall": TARGETS.get(defect)})
    for cls, reason in [("exact_dup", "exact_duplicate")] + [(f"near_dup@{r}", "near_duplicate") for r in RATES]:
        dup_reasons = {"exact_duplicate", "near_duplicate"}
        all_pairs = [(i, pos[items[i][2]]) for i, x in enumerate(labels) if x == cls]
        # pairs where a member failed the quality stage (e.g. the copy became a loop) are not
        # duplicates the dedup stage could see; they are counted separately
        pairs = [(i, j) for i, j in all_pairs if not ((preds[i] | preds[j]) - dup_reasons)]
        ok = 0
        for i, j in pairs:
            a, b = i in dup_of, j in dup_of
            if a != b:
                lost, other = (i, j) if a else (j, i)
                ok += reason in preds[lost] and dup_of[lost] == records[other].id
        flagged = [i for i, p in enumerate(preds) if reason in p]
        cluster = {}
        for i, x in enumerate(labels):
            if items[i][2] is not None:
                cluster[records[i].id] = min(i, pos[items[i][2]])
        correct = sum(1 for i in flagged if records[i].id in cluster
                      and cluster.get(dup_of.get(i, "")) == cluster[records[i].id])
        rows.append({"class": cls, "reason": reason, "n": len(pairs), "recall": ok / len(pairs),
                     "rejected_any_reason": None, "excluded_pairs": len(all_pairs) - len(pairs),
                     "precision": (correct / len(flagged)) if flagged else None,
                     "target_recall": TARGETS.get(cls)})
    summary = {"clean_records": n_clean, "clean_rejected": len(clean_rej),
               "clean_rejection_rate": len(clean_rej) / n_clean, "clean_rejected_by_reason": dict(why),
               "target_clean_rejection_rate": 0.05}
    return rows, summary


def jaccard_table(items, ngram: int) -> list[dict]:
    out = []
    by_label = defaultdict(list)
    for i, (rec, lab, partner) in enumerate(items):
        if lab.startswith("near_dup") or lab == "exact_dup":
            by_label[lab].append((rec, items_by_old[partner]))
    for lab, pairs in sorted(by_label.items()):
        js = []
        for a, b in pairs:
            sa = set(shingles(record_words(normalise(a)), ngram))
            sb = set(shingles(record_words(normalise(b)), ngram))
            js.append(len(sa & sb) / len(sa | sb))
        js.sort()
        out.append({"pairs": lab, f"mean_J_{ngram}gram": sum(js) / len(js), "min": js[0],
                    "p10": js[len(js) // 10], "p99": js[int(0.99 * len(js))], "max": js[-1]})
    return out


def unrelated_jaccard(items, ngram: int, rng: random.Random, n: int = 3000) -> dict:
    clean = [rec for rec, lab, _p in items if lab == "clean"]
    sets = [set(shingles(record_words(normalise(r)), ngram)) for r in clean[:400]]
    js = sorted(len(a & b) / len(a | b) for a, b in (rng.sample(sets, 2) for _ in range(n)))
    return {"pairs": f"unrelated clean ({n} random pairs)", f"mean_J_{ngram}gram": sum(js) / len(js),
            "min": js[0], "p10": js[n // 10], "p99": js[int(0.99 * n)], "max": js[-1]}


def sample_table() -> list[dict]:
    from iceburg.data import SAMPLE_DIR

    rows = []
    for p in sorted(SAMPLE_DIR.glob("*.jsonl")):
        rw = RejectWriter(None)
        recs = list(read_records([p], rw))
        kept, st = TruthFilter().filter(recs, agent_type=None if p.stem == "base" else p.stem)
        rows.append({"file": p.name, "valid_records": len(recs), "kept": st.final_output,
                     "rejected": st.total_input - st.final_output,
                     "reasons": ", ".join(f"{k} {v}" for k, v in sorted(st.reasons.items())),
                     "verified/high/standard": f"{st.verified}/{st.high_quality}/{st.standard}"})
    return rows


from _common import md_table  # noqa: E402  (bench/ is on sys.path above)


items_by_old: dict[int, dict] = {}


def main() -> None:
    from _common import RESULTS, machine_info

    items, order = build()
    global items_by_old
    items_by_old = {old: items[new][0] for new, old in enumerate(order)}
    # partner indices in `items` are pre-shuffle indices; evaluate() maps them
    tf = TruthFilter(min_quality_score=0.7)
    ev = evaluate(tf, items, order)
    rows, summary = score(items, ev)
    print("\n".join(md_table(rows)))
    print(json.dumps(summary, indent=1))
    rng = random.Random(1)
    jac2 = jaccard_table(items, 2) + [unrelated_jaccard(items, 2, rng)]
    jac5 = jaccard_table(items, 5) + [unrelated_jaccard(items, 5, rng)]
    # the same near-duplicate pairs under the usual web-dedup setting (word 5-grams, Jaccard 0.8)
    alt = TruthFilter(dedup=DedupConfig(ngram=5, threshold=0.8))
    alt_rows, _ = score(items, evaluate(alt, items, order))
    alt_cmp = [{"class": a["class"], "recall 2-gram@0.5 (default)": a["recall"],
                "recall 5-gram@0.8": b["recall"], "precision 2-gram@0.5": a["precision"],
                "precision 5-gram@0.8": b["precision"]}
               for a, b in zip(rows, alt_rows) if a["class"].startswith(("near", "exact"))]
    samples = sample_table()
    meta = machine_info()
    md = ["# truth_accuracy", "", "Machine: " + ", ".join(f"{k}={v}" for k, v in meta.items()), "",
          f"Labelled set: {len(items)} records (seed 7). min_quality_score 0.7, default DedupConfig "
          "(word 2-grams, Jaccard 0.5, 160 permutations, 32 bands x 5 rows).", "",
          "## Precision / recall per class", ""] + md_table(rows) + [
          "", f"Clean records rejected: {summary['clean_rejected']} of {summary['clean_records']} "
          f"({summary['clean_rejection_rate']:.1%}, target <= 5%); by reason: {summary['clean_rejected_by_reason']}",
          "", "## Near-duplicate setting: word 2-grams @ 0.5 vs word 5-grams @ 0.8", ""] + md_table(alt_cmp) + [
          "", "## True Jaccard of the planted pairs (what the MinHash estimates)", ""] + md_table(jac2) + [
          ""] + md_table(jac5) + ["", "## Bundled sample transcripts (iceburg/data/sample)", ""] + md_table(samples) + [""]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "truth_accuracy.md").write_text("\n".join(md))
    (RESULTS / "truth_accuracy.json").write_text(json.dumps(
        {"meta": meta, "rows": rows, "summary": summary, "dedup_setting_comparison": alt_cmp,
         "jaccard_2gram": jac2, "jaccard_5gram": jac5, "samples": samples}, indent=2, default=str))
    print("\n".join(md))


if __name__ == "__main__":
    main()
