"""GRPO on `--backend mlx` against `--backend torch`: the same recipe, base, data, G, lengths, LoRA,
seed and threads, a few steps each, each backend in its own process through the CLI (so its peak
RSS is its own and mlx binds OpenBLAS before it loads). Reports seconds per step, sampled answer
tokens per second, per-reward means and peak RSS. The answers differ between backends (each samples
with its own RNG), so time per sampled token is the fairer figure. Writes bench/results/grpo_mlx.{json,md}.
On Linux mlx[cpu] the MLX half is very slow on SmolLM2-135M (a 300-token prefill took 21 s here,
docs/grpo.md): use --base-model iceburg-tiny there, or run it on a Mac.

    cpurun --exclusive .venv/bin/python bench/grpo_mlx.py [--steps 6] [--base-model smollm2-135m]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, machine_info  # noqa: E402


def run_backend(a, backend: str, out: Path) -> dict:
    from iceburg.data import SAMPLE_DIR

    cmd = [sys.executable, "-m", "iceburg.cli", "--objective", "grpo", "--backend", backend, "--base-model",
           a.base_model, "--model-type", a.types[0], "--data-path", *[str(SAMPLE_DIR / f"{t}.jsonl") for t in a.types],
           "--eval-fraction", "0.25", "--max-steps", str(a.steps), "--grpo-group", "4", "--batch-size", "4",
           "--grad-accum", "1", "--max-completion-length", str(a.completion), "--max-seq-length",
           str(a.max_seq_length), "--threads", str(a.threads), "--output-dir", str(out), "--output-name", backend,
           "--formats", "huggingface"]
    started = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - started
    if p.returncode != 0:
        return {"failed": p.returncode, "stderr": p.stderr[-3000:]}
    run = out / backend
    train = [m for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if m.get("type") == "train"]
    elapsed = [m["elapsed_s"] for m in train]
    per_step = [b - e for e, b in zip([0.0, *elapsed], elapsed)]
    answer_tokens = [4 * m["completions/mean_length"] for m in train]
    result = json.loads((run / "result.json").read_text())
    return {"wall_s": round(wall, 1), "step_s": [round(x, 2) for x in per_step],
            "median_step_s": round(statistics.median(per_step), 2),
            "answer_tokens_per_s": round(sum(answer_tokens) / max(elapsed[-1], 1e-9), 1),
            "mean_answer_tokens": round(statistics.mean(m["completions/mean_length"] for m in train), 1),
            "peak_rss_mib": train[-1]["peak_rss_mib"],
            "rewards": {k.split("/")[1]: round(statistics.mean(m[k] for m in train if k in m), 4)
                        for k in sorted({k for m in train for k in m if k.startswith("rewards/")})},
            "held_out_after": result.get("preference", {}).get("after"), "lr": result.get("learning_rate")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--completion", type=int, default=64)
    ap.add_argument("--max-seq-length", type=int, default=512)
    ap.add_argument("--types", nargs="+", default=["surveyor", "dissident"])
    ap.add_argument("--base-model", default="smollm2-135m")
    a = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="grpo_mlx_"))
    res = {"machine": machine_info(), "config": vars(a)}
    for backend in ("torch", "mlx"):
        res[backend] = run_backend(a, backend, out)
    res["machine"]["load_avg_1m_end"] = os.getloadavg()[0]
    write(a, res)
    print(json.dumps(res, indent=1))


def write(a, res: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "grpo_mlx.json").write_text(json.dumps(res, indent=1))
    m = res["machine"]
    lines = [f"# GRPO, --backend torch vs mlx ({a.base_model}, {a.steps} steps, G=4, 1 prompt/step)", "",
             f"machine: {m['cpu']} ({m['cores']} cores), --threads {a.threads}, OMP_NUM_THREADS="
             f"{m['OMP_NUM_THREADS']}, load {m['load_avg_1m']:.2f} at start / {m['load_avg_1m_end']:.2f} at end, "
             f"{m['date_utc']} UTC; max completion {a.completion} tokens, --max-seq-length {a.max_seq_length}", "",
             "| backend | median s/step | sampled answer tokens/s | mean answer tokens | peak RSS MiB | rewards (mean over steps) |",
             "|---|---|---|---|---|---|"]
    for b in ("torch", "mlx"):
        r = res[b]
        if "failed" in r:
            lines.append(f"| {b} | failed (exit {r['failed']}) | | | | |")
            continue
        lines.append(f"| {b} | {r['median_step_s']} | {r['answer_tokens_per_s']} | {r['mean_answer_tokens']} | "
                     f"{r['peak_rss_mib']} | {r['rewards']} |")
    (RESULTS / "grpo_mlx.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
