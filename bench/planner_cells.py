"""The planner against the product: `iceburg-train` itself, a few steps per cell, plan.json's expected
peak against the run's own measured peak RSS (metrics.jsonl `peak_rss_mib`, ru_maxrss of the training
process; with --nproc, the largest rank's).

bench/memory_planner.py measures the planner on a hand-written copy of the SFT loop; this bench runs
the CLI, so the cells the issue names beside SFT (DPO, `--nproc 2`, `--backend mlx`) are measured
through the code that trains them. Base: the embedded SmolLM2-135M (real weights); data: the bundled
surveyor transcripts, and for DPO pairs built from them (each prompt's own answer twice as chosen, a
neighbour's answer twice as rejected) so that sequences reach --max-seq-length as SFT's packed rows do.

    cpurun --exclusive .venv/bin/python bench/planner_cells.py                 # every cell
    cpurun --exclusive .venv/bin/python bench/planner_cells.py --cells dpo:b2 sft:nproc2
    cpurun .venv/bin/python bench/planner_cells.py --tag mlx --cells sft:mlx sft:mlx:b1 sft:mlx:1024:b1
    .venv/bin/python bench/planner_cells.py --list

Writes bench/results/planner_cells.md and .json (machine, threads, load per cell).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, save  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "iceburg" / "data" / "sample" / "surveyor.jsonl"
BASE = ["--model-type", "surveyor", "--base-model", "smollm2-135m", "--max-steps", "2", "--compare", "0",
        "--eval-fraction", "0.1", "--formats", "huggingface"]
# name -> (extra CLI flags, which data)
CELLS = {
    "sft:default": (["--max-seq-length", "512"], "sft"),
    "sft:b1": (["--max-seq-length", "512", "--batch-size", "1"], "sft"),
    "sft:1024": (["--max-seq-length", "1024"], "sft"),
    "sft:2048": (["--max-seq-length", "2048"], "sft"),
    "sft:nproc2": (["--max-seq-length", "512", "--nproc", "2"], "sft"),
    "sft:nproc2:b2": (["--max-seq-length", "512", "--nproc", "2", "--batch-size", "2"], "sft"),
    "sft:mlx": (["--max-seq-length", "512", "--backend", "mlx"], "sft"),
    "sft:mlx:b1": (["--max-seq-length", "512", "--backend", "mlx", "--batch-size", "1"], "sft"),
    "sft:mlx:1024:b1": (["--max-seq-length", "1024", "--backend", "mlx", "--batch-size", "1",
                         "--gradient-accumulation-steps", "2"], "sft"),
    "dpo:b1": (["--max-seq-length", "512", "--objective", "dpo", "--batch-size", "1"], "pairs"),
    "dpo:b2": (["--max-seq-length", "512", "--objective", "dpo", "--batch-size", "2"], "pairs"),
    "dpo:b4": (["--max-seq-length", "512", "--objective", "dpo", "--batch-size", "4"], "pairs"),
    "dpo:default": (["--max-seq-length", "512", "--objective", "dpo"], "pairs"),
    "grpo:96": (["--max-seq-length", "512", "--objective", "grpo", "--max-completion-length", "96"], "sft"),
    "grpo:default": (["--max-seq-length", "512", "--objective", "grpo"], "sft"),
}


def pairs_file(folder: Path) -> Path:
    """LLaMA-Factory OpenAI-style pairs from the surveyor sample: the prompt, its own answer (twice)
    as chosen, the next record's answer (twice) as rejected: long enough to fill 512-token rows."""
    recs = []
    for line in SAMPLE.read_text().split("\n"):  # the sample holds deliberate bad lines: skipped here
        try:
            recs.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    recs = [r for r in recs if isinstance(r, dict) and isinstance(r.get("messages"), list) and r["messages"]
            and all(isinstance(m, dict) and "role" in m for m in r["messages"])]
    recs = [r for r in recs if r["messages"][-1]["role"] == "assistant" and isinstance(r["messages"][-1]["content"], str)
            and len(r["messages"][-1]["content"].strip()) > 200
            and [m["role"] for m in r["messages"][:-1]] in (["system", "user"], ["user"])]
    out = folder / "surveyor_long_pairs.jsonl"
    with out.open("w") as f:
        for i, r in enumerate(recs):
            other = recs[(i + 1) % len(recs)]["messages"][-1]["content"]
            own = r["messages"][-1]["content"]
            f.write(json.dumps({"messages": r["messages"][:-1], "agent_type": "surveyor",
                                "chosen": {"role": "assistant", "content": own + "\n\n" + own},
                                "rejected": {"role": "assistant", "content": other + "\n\n" + other}}) + "\n")
    return out


def run_cell(name: str, folder: Path, pairs: Path) -> dict:
    flags, data = CELLS[name]
    out = folder / name.replace(":", "_")
    cmd = [sys.executable, "-m", "iceburg.cli", *BASE, *flags, "--output-dir", str(out), "--output-name", "run",
           "--data-path", str(pairs if data == "pairs" else SAMPLE)]
    load0, t0 = os.getloadavg()[0], time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    row = {"cell": name, "flags": " ".join(flags), "seconds": round(time.time() - t0), "load_start": round(load0, 2),
           "load_end": round(os.getloadavg()[0], 2)}
    run = out / "run"
    failed = f"failed rc={p.returncode}: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ''}"
    if not (run / "plan.json").exists():
        return {**row, "status": failed}
    plan = json.loads((run / "plan.json").read_text())
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().split("\n")
             if line.strip()] if (run / "metrics.jsonl").exists() else []
    peaks = [m["peak_rss_mib"] for m in lines if m.get("peak_rss_mib")]
    est = plan.get("expected_peak_bytes", plan.get("estimated_peak_bytes", 0)) / 2**20
    measured = max(peaks) if peaks else None
    steps = max((m.get("step", 0) for m in lines if m.get("type") == "train"), default=0)
    status = ("ok" if p.returncode == 0 else f"{failed} (peak of the {steps} step(s) it ran)") if measured \
        else "no peak_rss_mib in metrics.jsonl"
    return {**row, "status": status,
            "plan": f"{plan.get('micro_batch_size')} x {plan.get('gradient_accumulation_steps')}"
                    + (f" x {plan.get('world_size')} ranks" if plan.get("world_size", 1) > 1 else ""),
            "allocator": plan.get("cpu_allocator") or "", "device": plan.get("device"),
            "estimate_mib": round(est), "measured_mib": round(measured) if measured else None,
            "error_pct": round(100 * (est - measured) / measured, 1) if measured else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--keep", type=Path, help="keep the run folders here (default: a temporary folder)")
    ap.add_argument("--tag", default="", help="names the run and its results file (planner_cells_TAG.md), so a "
                                             "run of a few cells does not replace the table of all of them")
    a = ap.parse_args()
    if a.list:
        print("\n".join(f"{k}: {' '.join(v[0])} ({v[1]})" for k, v in CELLS.items()))
        return
    with tempfile.TemporaryDirectory(prefix="iceburg-planner-cells-") as tmp:
        folder = a.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        pairs = pairs_file(folder)
        rows = []
        for name in a.cells:
            rows.append(run_cell(name, folder, pairs))
            print(json.dumps(rows[-1]), flush=True)
    meta = {**machine_info(), "base": "smollm2-135m (real weights)", "steps": 2}
    print(save("planner_cells" + (f" ({a.tag})" if a.tag else "") + ": plan.json's expected peak vs the run's "
               "measured peak RSS", rows, meta,
               ["cell", "flags", "plan", "allocator", "estimate_mib", "measured_mib", "error_pct", "seconds",
                "load_start", "load_end", "status"], part=a.tag or None))


if __name__ == "__main__":
    main()
