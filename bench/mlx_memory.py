"""The planner's MLX step memory (hardware/mlx_memory.py) against the MLX trainer's own step on
published model shapes (random weights, cut to a few layers so a step stays seconds on a CPU).

Each cell saves a random-weight checkpoint of the shape, loads it as the MLX backend does
(`load_mlx_model` in fp32, LoRA r8 on every projection), runs `mlx_step` on 2 accumulated
micro-batches of `rows` packed rows (two examples each, 3/4 of each supervised) and compares MLX's
peak above the weights (`mx.get_peak_memory`) with `estimate_training_memory(..., loop="mlx")` for
one micro-batch. bench/planner_cells.py measures the same through the CLI (peak RSS, SmolLM2 only).

    cpurun .venv/bin/python bench/mlx_memory.py                    # every cell
    cpurun .venv/bin/python bench/mlx_memory.py --cells qwen2.5-0.5b:6:2x512

Writes bench/results/mlx_memory.md and .json (machine, threads, load per cell).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, save  # noqa: E402

from iceburg.training.mlx_backend import preload_openblas  # noqa: E402

preload_openblas()  # before anything imports mlx

ROPE = {"rope_type": "default"}
# config.json values of the published models (Hugging Face repos of these names)
SHAPES = {
    "smollm2-135m": dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=576,
                         intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         vocab_size=49152, tie_word_embeddings=True, rms_norm_eps=1e-5,
                         rope_parameters={**ROPE, "rope_theta": 100000.0}),
    "qwen2.5-0.5b": dict(model_type="qwen2", architectures=["Qwen2ForCausalLM"], hidden_size=896,
                         intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         vocab_size=151936, tie_word_embeddings=True, rms_norm_eps=1e-6,
                         rope_parameters={**ROPE, "rope_theta": 1000000.0}),
    "llama3.2-1b": dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=2048,
                        intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                        head_dim=64, vocab_size=128256, tie_word_embeddings=True, rms_norm_eps=1e-5,
                        rope_parameters={**ROPE, "rope_theta": 500000.0}),
}
# name:layers:rows x length
CELLS = ["smollm2-135m:8:2x512", "smollm2-135m:8:1x1024", "qwen2.5-0.5b:6:2x512", "llama3.2-1b:4:2x512"]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def rows_of(n: int, seq: int, seed: int, vocab: int):
    import numpy as np

    from iceburg.training.packing import Row

    rng, half = np.random.default_rng(seed), seq // 2
    pos = [i % half for i in range(seq)]
    return [Row(rng.integers(0, vocab, seq).tolist(), pos, [p >= half // 4 for p in pos], [1.0] * seq,
                [f"{seed}-{i}-a", f"{seed}-{i}-b"]) for i in range(n)]


def run_cell(cell: str, tmp: Path) -> dict:
    import mlx.core as mx
    import torch
    from mlx.optimizers import AdamW
    from transformers import AutoConfig, AutoModelForCausalLM

    from iceburg.hardware.memory import estimate_training_memory
    from iceburg.hardware.model_shape import read_model_shape
    from iceburg.training.mlx_backend import apply_lora_mlx, load_mlx_model
    from iceburg.training.mlx_trainer import mlx_step
    from iceburg.training.trainer import TrainArgs

    name, layers, size = cell.split(":")
    rows, seq = (int(x) for x in size.split("x"))
    folder = tmp / cell.replace(":", "_")
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.for_model(**{**SHAPES[name], "num_hidden_layers": int(layers)}),
                                     dtype=torch.float32).save_pretrained(folder)
    shape = read_model_shape(folder)
    supervised = 0.75 + 0.5 / seq  # rows_of: positions >= half // 4 of each half
    load0, t0 = os.getloadavg()[0], time.time()
    planned = estimate_training_memory(shape, micro_batch=rows, seq_len=seq, precision="fp32", lora_r=8, targets=TARGETS,
                                       gradient_checkpointing=False, supervised_fraction=supervised, loop="mlx")
    probe_s = time.time() - t0
    model = apply_lora_mlx(load_mlx_model(folder, tmp / f"{folder.name}-mlx", "fp32"), 8, 16, TARGETS, 0.05)
    step = mlx_step(model, AdamW(learning_rate=1e-4), TrainArgs(micro_batch_size=rows, grad_accum=2, max_length=seq), 2)
    mx.eval(model.parameters())
    mx.reset_peak_memory()
    before, t1 = mx.get_active_memory(), time.time()
    step(0, [rows_of(rows, seq, 1, shape.vocab_size), rows_of(rows, seq, 2, shape.vocab_size)], lambda ids: None)
    measured = mx.get_peak_memory() - before
    return {"cell": cell, "layers": int(layers), "rows x length": size, "planned_mib": planned.activations >> 20,
            "measured_mib": measured >> 20, "error_pct": round(100 * (planned.activations - measured) / measured, 1),
            "probe_s": round(probe_s, 1), "step_s": round(time.time() - t1, 1), "load_start": round(load0, 2),
            "load_end": round(os.getloadavg()[0], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", nargs="+", default=CELLS)
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="iceburg-mlx-memory-") as tmp:
        for cell in a.cells:
            rows.append(run_cell(cell, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    meta = {**machine_info(), "lora": "r8 on every projection", "accumulation": 2, "precision": "fp32"}
    print(save("mlx_memory: the planner's MLX step estimate vs MLX's measured peak", rows, meta,
               ["cell", "layers", "rows x length", "planned_mib", "measured_mib", "error_pct", "probe_s", "step_s",
                "load_start", "load_end"]))


if __name__ == "__main__":
    main()
