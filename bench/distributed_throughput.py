"""Data-parallel training throughput: 1 vs N processes, and the bytes all-reduced per step.

Runs the real CLI (`iceburg-train --nproc N`, torchrun + gloo on CPU) on the bundled sample
transcripts of every model type, --max-steps optimizer steps, the same global batch for every N (--batch-size 1,
--grad-accum G/N), and reads the run's result.json: supervised tokens / training-loop seconds.
Threads per process = --threads-total / N, so the runs use the same cores.

Also reports what DDP all-reduces per optimizer step: the LoRA gradients only (fp32), against
the full-model figure a full fine-tune would all-reduce, for iceburg-tiny and for the shape of
Llama 3.2 3B (built on the meta device, no weights).

    python bench/distributed_throughput.py [--nprocs 1 2] [--threads-total 2] [--global-batch 4] [--max-steps 12]
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parent.parent


def run(nproc: int, threads_total: int, global_batch: int, max_len: int, steps: int, out: Path) -> dict:
    threads = max(1, threads_total // nproc)
    flags = ["--model-type", "base", "--data-path", str(ROOT / "iceburg" / "data" / "sample"),
             "--output-dir", str(out), "--output-name", f"n{nproc}", "--max-steps", str(steps), "--batch-size", "1",
             "--grad-accum", str(max(1, global_batch // nproc)), "--max-seq-length", str(max_len),
             "--no-emergence", "--threads", str(threads), "--nproc", str(nproc), "--lora-r", "8", "--json"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    load = os.getloadavg()[0]  # per row: the load moves between runs on a shared machine
    t = time.time()
    done = subprocess.run([sys.executable, "-m", "iceburg.cli", *flags], env=env, capture_output=True, text=True)
    wall = time.time() - t
    if done.returncode != 0:
        raise SystemExit(f"nproc={nproc} failed:\n{done.stderr[-3000:]}")
    r = json.loads((out / f"n{nproc}" / "result.json").read_text())
    return {"processes": nproc, "threads_per_process": threads, "global_batch": global_batch,
            "steps": r["steps"], "supervised_tokens": r["supervised_tokens"],
            "train_loop_s": round(r["training_seconds"], 2),
            "supervised_tok_per_s": round(r["supervised_tokens"] / r["training_seconds"], 1),
            "command_wall_s": round(wall, 1), "train_loss": round(r["train_loss"], 4),
            "load_avg_1m_before": round(load, 2), "load_avg_1m_after": round(os.getloadavg()[0], 2)}


def allreduce_bytes(name: str, config, r: int) -> dict:
    """fp32 bytes of trainable (LoRA) gradients vs all parameters, counted on the meta device."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear"))
    lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    full = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return {"model": name, "lora_r": r, "lora_params": lora, "allreduce_MB_per_step_lora": round(lora * 4 / 2**20, 2),
            "allreduce_MB_per_step_full_finetune": round(full * 4 / 2**20, 1), "ratio": round(full / lora, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nprocs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads-total", type=int, default=2)
    ap.add_argument("--global-batch", type=int, default=4)
    ap.add_argument("--max-seq-length", type=int, default=1024)
    ap.add_argument("--max-steps", type=int, default=12)
    ap.add_argument("--name", default="distributed_throughput", help="result file name under bench/results")
    a = ap.parse_args()
    from _common import machine_info, save
    from transformers import AutoConfig, LlamaConfig

    from iceburg.models.tiny import ensure_tiny_model

    meta = dict(machine_info(), threads_total=a.threads_total, backend="gloo (CPU)")
    with tempfile.TemporaryDirectory() as d:
        rows = [run(n, a.threads_total, a.global_batch, a.max_seq_length, a.max_steps, Path(d)) for n in a.nprocs]
    print(save(a.name, rows, meta, list(rows[0])))
    llama3b = LlamaConfig(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
                          num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True)
    comm = [allreduce_bytes("iceburg-tiny", AutoConfig.from_pretrained(ensure_tiny_model()), 8),
            allreduce_bytes("llama-3.2-3b shape", llama3b, 16)]
    print(save("distributed_allreduce_bytes", comm, meta, list(comm[0]), part="allreduce_bytes"))


if __name__ == "__main__":
    main()
