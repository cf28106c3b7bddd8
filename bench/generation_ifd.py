"""Instruction-following difficulty: two forward passes per record vs one batched pass of two rows.

`iceburg generate` scores each curated record's IFD (loss of the answer given the prompt / loss of the
answer alone). The two-pass version runs `HfModel.record_losses` (prompt + answer) and
`HfModel.text_losses` (answer alone), one forward pass each; `iceburg/generation/difficulty.py` puts
both sequences into one right-padded batch. This bench times both (and a third way, both sequences packed in
one row) on the bundled surveyor sample, in rotating order, and checks that they give the same losses.

    cpurun --exclusive .venv/bin/python bench/generation_ifd.py --students iceburg-tiny smollm2-135m

Writes bench/results/generation_ifd.{md,json}. Threads: torch.set_num_threads(--threads), recorded
with the machine's load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _records(n: int):
    from iceburg.config import ModelType
    from iceburg.data import sample_data_path
    from iceburg.data.loader import read_records
    from iceburg.records import RejectWriter

    return list(read_records([str(sample_data_path(ModelType.SURVEYOR))], RejectWriter(None)))[:n]


def _two_pass(hf, records, max_length):
    cond = hf.record_losses(records, max_length)
    plain = hf.text_losses([r.assistant_text() for r in records], max_length)
    return [None if c is None else (c, p) for c, p in zip(cond, plain)]


def _one_pass(hf, records, max_length):
    from iceburg.generation.difficulty import record_pair

    return [record_pair(hf, r, max_length) for r in records]


def _packed(hf, records, max_length):
    from iceburg.generation.difficulty import record_pair

    return [record_pair(hf, r, max_length, packed=True) for r in records]


VARIANTS = {"two_pass": _two_pass, "padded": _one_pass, "packed": _packed}


def _max_diff(ref, got) -> tuple[float, int, int]:
    """Largest relative loss difference from the two-pass reference; records and tokens scored."""
    diff, scored, tokens = 0.0, 0, 0
    for a, b in zip(ref, got):
        assert (a is None) == (b is None)
        if a is None:
            continue
        scored += 1
        tokens += a[0][1] + a[1][1]
        assert a[0][1] == b[0][1] and a[1][1] == b[1][1]
        diff = max(diff, abs(a[0][0] - b[0][0]) / a[0][0], abs(a[1][0] - b[1][0]) / a[1][0])
    return diff, scored, tokens


def bench_student(student: str, records, max_length: int, repeats: int, threads: int) -> dict:
    from iceburg.base_models import resolve_base_model
    from iceburg.evaluation.models import HfModel

    hf = HfModel(resolve_base_model(student).path, records, threads=threads)
    for fn in VARIANTS.values():
        fn(hf, records[:2], max_length)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in VARIANTS}
    results = {}
    for rep in range(repeats):
        names = list(VARIANTS)
        for name in names[rep % len(names):] + names[:rep % len(names)]:  # rotate the order
            t = time.perf_counter()
            results[name] = VARIANTS[name](hf, records, max_length)
            times[name].append(time.perf_counter() - t)
    row = {"student": student, "records": len(records), "max_length": max_length, "repeats": repeats}
    two = statistics.median(times["two_pass"])
    for name in VARIANTS:
        diff, row["scored"], row["scored_tokens"] = _max_diff(results["two_pass"], results[name])
        med = statistics.median(times[name])
        row[name] = {"runs_s": [round(t, 3) for t in times[name]], "median_s": round(med, 3),
                     "saved": round(1 - med / two, 4), "max_rel_loss_diff": diff}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--students", nargs="+", default=["iceburg-tiny", "smollm2-135m"])
    ap.add_argument("--records", type=int, default=24)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    ap.add_argument("--out", default=str(RESULTS / "generation_ifd"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    records = _records(args.records)
    meta = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads": args.threads,
            "torch": torch.__version__, "load_before": os.getloadavg()}
    rows = [bench_student(s, records, args.max_length, args.repeats, args.threads) for s in args.students]
    meta["load_after"] = os.getloadavg()
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [f"# IFD: two forward passes vs one batched pass per record\n",
             f"{len(records)} surveyor sample records, max_length {args.max_length}, median of {args.repeats} "
             f"runs in rotating order; torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} cores; load "
             f"average before {meta['load_before'][0]:.2f}, after {meta['load_after'][0]:.2f}.\n",
             "| student | records scored | tokens scored | variant | forward passes per record | median (s) | "
             "saved vs two passes | max rel loss diff vs two passes |",
             "|---|---|---|---|---|---|---|---|"]
    passes = {"two_pass": "2 (prompt+answer, answer)", "padded": "1 (batch of 2, right-padded)",
              "packed": "1 (both packed in one row, block-diagonal mask)"}
    for r in rows:
        for name in VARIANTS:
            v = r[name]
            lines.append(f"| {r['student']} | {r['scored']} | {r['scored_tokens']} | {name} | {passes[name]} | "
                         f"{v['median_s']} | {v['saved']:.1%} | {v['max_rel_loss_diff']:.1e} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
