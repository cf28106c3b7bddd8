"""The mlx-lm model as iceburg trains it: loading (with OpenBLAS bound on Linux, the config fixed
for mlx-lm, the weights in the plan's precision), LoRA layers, and the masked, weighted loss. Used by
the MLX backend (training/mlx_*.py) and by the planner's MLX memory probe (hardware/mlx_memory.py).

On Linux, mlx[cpu] bundles a reference BLAS: a 1024^3 fp32 matmul takes 0.60 s against 0.025 s
with Debian's OpenBLAS (measured here, 1 thread). `mlx_core()` therefore loads libopenblas
process-wide (RTLD_GLOBAL) before mlx is first imported, which binds mlx's BLAS calls to it
exactly as `LD_PRELOAD` does (same timing measured), without re-executing the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import math
import os
import platform
import sys
from pathlib import Path

import numpy as np

from ..errors import IceburgError, MissingDependencyError

logger = logging.getLogger(__name__)

MLX_INSTALL = "pip install 'mlx[cpu]==0.32.4' 'mlx-lm==0.32.2'  (on a Mac: pip install mlx mlx-lm)"


def preload_openblas() -> str | None:
    """Bind mlx-cpu's BLAS calls to the system OpenBLAS on Linux (module docstring). Returns the
    library loaded, or None: not Linux, mlx already imported (too late to rebind), switched off
    with ICEBURG_MLX_OPENBLAS=0, or no libopenblas found (then mlx runs on its reference BLAS)."""
    if platform.system() != "Linux" or "mlx.core" in sys.modules or os.environ.get("ICEBURG_MLX_OPENBLAS") == "0":
        return None
    name = ctypes.util.find_library("openblas")
    if name is None:
        logger.warning("mlx on Linux CPU uses its bundled reference BLAS (about 25x slower matmuls); "
                       "install OpenBLAS to speed it up: apt-get install libopenblas0-pthread")
        return None
    try:
        ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
    except OSError as e:  # e.g. libgfortran.so.5 missing: mlx still works, only slower
        logger.warning("could not load %s for mlx (%s); mlx uses its reference BLAS", name, e)
        return None
    logger.info("mlx: BLAS calls bound to %s", name)
    return name


def mlx_core():
    preload_openblas()
    try:
        import mlx.core as mx
        import mlx_lm  # noqa: F401
    except (ImportError, OSError) as e:  # `mlx` without its CPU/Metal library fails with OSError
        raise MissingDependencyError("mlx and mlx-lm (for --backend mlx)", MLX_INSTALL) from e
    return mx


def mlx_config(cfg: dict) -> dict:
    """The HF config as mlx-lm 0.32.2 reads it correctly: a top-level `rope_theta` (mlx-lm ignores
    transformers 5's `rope_parameters`; see mlx_model_folder)."""
    cfg = dict(cfg)
    rope = cfg.get("rope_parameters") or {}
    if "rope_theta" not in cfg and "rope_theta" in rope:
        cfg["rope_theta"] = rope["rope_theta"]
    return cfg


def mlx_model_folder(src: Path, dest: Path) -> Path:
    """A view of the HF folder `src` that mlx-lm 0.32.2 reads correctly: it takes only a top-level
    `rope_theta` (default 10000) and ignores transformers 5's `rope_parameters`, which generates
    garbage for any other base (STACK.md). Weights are linked, not copied."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in Path(src).iterdir():
        if f.name != "config.json" and not (dest / f.name).exists():
            (dest / f.name).symlink_to(f.resolve())
    cfg = mlx_config(json.loads((Path(src) / "config.json").read_text(encoding="utf-8")))
    (dest / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    return dest


# The plan's precision (hardware/planner.py) as mlx dtypes.
MLX_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def load_mlx_model(src: Path, work_dir: Path, precision: str | None = None):
    """mlx-lm's model for the HF folder `src`, its floating weights cast to the plan's `precision`
    (None: as stored). mlx-lm keeps the stored dtype, so an fp16 base (the embedded SmolLM2's
    folder is fp16) trained in fp16 on a CPU planned for fp32: mlx-cpu's fp16 matmuls run in its own
    simd_gemm, not BLAS (measured: 80 s against 6.8 s for one 512-token step, SmolLM2-135M, 1 thread),
    and the memory was not the plan's. As torch, which loads in the planned dtype."""
    mx = mlx_core()
    from mlx_lm.utils import load_model

    model, _ = load_model(mlx_model_folder(Path(src), Path(work_dir) / "mlx-base"))
    if precision is not None:
        model.set_dtype(getattr(mx, MLX_DTYPES[precision]))
    return model


def lora_scale(r: int, alpha: int, rslora: bool) -> float:
    return alpha / math.sqrt(r) if rslora else alpha / r  # PEFT's scaling, rsLoRA or not


def apply_lora_mlx(model, r: int, alpha: int, targets: list[str], dropout: float, rslora: bool = False):
    """mlx-lm LoRA layers on every linear whose last name is in `targets`, base frozen."""
    import mlx.nn as nn
    from mlx_lm.tuner.utils import linear_to_lora_layers

    keys = {k for k, m in model.layers[0].named_modules()
            if isinstance(m, nn.Linear) and k.rsplit(".", 1)[-1] in targets}
    model.freeze()
    linear_to_lora_layers(model, len(model.layers), {"rank": r, "scale": lora_scale(r, alpha, rslora),
                                                     "dropout": dropout, "keys": sorted(keys)})
    return model


class SegmentMask:
    """mlx-lm's KV-cache protocol, used only to hand every layer a block-diagonal causal mask
    (see the module docstring). Holds no keys or values, so nothing accumulates across calls."""

    offset = 0

    def __init__(self, mask):
        self.mask = mask

    def make_mask(self, n: int, return_array: bool = False, window_size: int | None = None):
        if window_size is not None:
            raise IceburgError("--backend mlx packs rows with a block-diagonal mask, which this sliding-window "
                               "model's layers do not take; add --no-packing (or use --backend torch)")
        return self.mask

    def update_and_fetch(self, keys, values):
        return keys, values


def segment_mask(position_ids: np.ndarray) -> np.ndarray:
    """(B, 1, L, L) bool: token i sees token j when j <= i and both lie in one example (a new
    example starts where its position restarts at 0, as packing.collate lays rows out)."""
    seg = np.cumsum(position_ids == 0, axis=1)
    same = seg[:, :, None] == seg[:, None, :]
    causal = np.tril(np.ones((position_ids.shape[1],) * 2, dtype=bool))
    return (same & causal)[:, None]


# Model types whose mlx-lm 0.32.2 `Model.__call__` is exactly "lm head over self.model(...)" (read
# in models/llama.py, qwen2.py, qwen3.py): for them the head runs only at the kept positions, which
# saves most of the head's time and memory on large vocabularies (Qwen2.5: 152k), as on torch.
HEAD_AT_KEPT = {"llama", "qwen2", "qwen3"}


def head_logits(model, inputs, cache, keep):
    if getattr(model, "model_type", None) not in HEAD_AT_KEPT:
        return model(inputs, cache=cache)[:, keep]
    h = model.model(inputs, cache)[:, keep]
    return model.model.embed_tokens.as_linear(h) if model.args.tie_word_embeddings else model.lm_head(h)


def loss_sum(model, inputs, targets, weights, seg, keep):
    import mlx.core as mx
    import mlx.nn as nn

    cache = None if seg is None else [SegmentMask(seg)] * len(model.layers)
    logits = head_logits(model, inputs, cache, keep).astype(mx.float32)
    return (nn.losses.cross_entropy(logits, targets, reduction="none") * weights).sum()
