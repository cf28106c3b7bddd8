"""MLX LoRA training on Linux CPU with mlx-cpu's bundled reference BLAS vs the system OpenBLAS that
`mlx_backend.preload_openblas` binds in-process (ICEBURG_MLX_OPENBLAS=0 switches it off).

Each mode runs in its own process (the BLAS binding is per process). Reports a 1024^3 fp32 matmul,
then `train_mlx` on the base (`--base`, default iceburg-tiny; `--base smollm2-135m` for the real
shape) for `--steps` steps of one `--seq-len` row: wall seconds, supervised tokens/s, and the per-step
losses, which must agree between the two modes (same arithmetic, different BLAS).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python bench/mlx_openblas.py --base smollm2-135m
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def child(base: str, steps: int, seq_len: int) -> dict:
    from iceburg.base_models.resolve import resolve_base_model
    from iceburg.training.mlx_backend import _mlx, apply_lora_mlx, load_mlx_model, preload_openblas
    from iceburg.training.encoding import Example

    blas = preload_openblas()
    mx = _mlx()
    a, b = mx.random.normal((1024, 1024)), mx.random.normal((1024, 1024))
    mx.eval(a @ b)
    t = time.perf_counter()
    for _ in range(3):
        mx.eval(a @ b)
    matmul = (time.perf_counter() - t) / 3
    from iceburg.training.mlx_trainer import train_mlx
    from iceburg.training.trainer import TrainArgs

    path = resolve_base_model(base).path
    cfg = json.loads((Path(path) / "config.json").read_text())
    mx.random.seed(0)
    model = apply_lora_mlx(load_mlx_model(path, Path(tempfile.mkdtemp())), 8, 16,
                           ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], 0.0)
    import numpy as np

    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg["vocab_size"], size=seq_len).tolist()
    mask = [i >= seq_len // 2 for i in range(seq_len)]  # the second half supervised
    examples = [Example(ids, mask, f"e{i}", 1.0) for i in range(steps)]
    args = TrainArgs(max_steps=steps, learning_rate=1e-3, warmup_ratio=0.0, max_length=seq_len,
                     show_progress=False, eval_steps=10**9)
    t = time.perf_counter()
    out = train_mlx(model, examples, lambda e: list(range(steps)), [], args)
    wall = time.perf_counter() - t
    return {"blas": blas or "bundled reference", "matmul_1024_s": round(matmul, 4), "train_s": round(wall, 2),
            "sup_tok_s": round(out.supervised_tokens / wall, 1), "train_loss": out.train_loss}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="iceburg-tiny")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a.base, a.steps, a.seq_len)))
        return
    from _common import machine_info, save

    rows = []
    for mode in ("0", "1"):
        env = {**os.environ, "ICEBURG_MLX_OPENBLAS": mode}
        res = subprocess.run([sys.executable, __file__, "--child", "--base", a.base, "--steps", str(a.steps),
                              "--seq-len", str(a.seq_len)], env=env, capture_output=True, text=True, check=True)
        rows.append({"base": a.base, "steps": a.steps, "seq_len": a.seq_len,
                     **json.loads(res.stdout.strip().splitlines()[-1])})
    rows.append({"base": "ratio", "matmul_1024_s": round(rows[0]["matmul_1024_s"] / rows[1]["matmul_1024_s"], 1),
                 "train_s": round(rows[0]["train_s"] / rows[1]["train_s"], 1),
                 "train_loss": abs(rows[0]["train_loss"] - rows[1]["train_loss"])})
    meta = {**machine_info(), "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS")}
    print(save(f"mlx_openblas_{a.base.replace('/', '_')}", rows, meta,
               ["base", "blas", "steps", "seq_len", "matmul_1024_s", "train_s", "sup_tok_s", "train_loss"]))


if __name__ == "__main__":
    main()
