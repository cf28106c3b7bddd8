"""LoRA training on MLX (Apple silicon; `mlx[cpu]` on Linux for tests), on iceburg's own data.

The same encoded examples, assistant-only masks, per-token curriculum weights, deterministic step
plan (`trainer.plan_steps`), loss (weighted cross-entropy over supervised tokens, normalised per
optimizer step), AdamW with linear warm-up/decay and gradient clipping as the torch trainer; the
model and LoRA layers are mlx-lm's (`mlx_lm.utils.load_model`, `tuner.utils.linear_to_lora_layers`).
The adapter is written in PEFT format (`save_peft_adapter`), so the merge and every exporter run
unchanged on torch. mlx-lm's own GGUF writer is not used (it labels byte-level BPE tokenizers as
SentencePiece; STACK.md).

The training loop, packing (a block-diagonal mask through mlx-lm's cache protocol) and
checkpoints live in mlx_trainer.py. DoRA and QLoRA stay on torch (docs/training.md, "Backends").

On Linux, mlx[cpu] bundles a reference BLAS: a 1024^3 fp32 matmul takes 0.60 s against 0.025 s
with Debian's OpenBLAS (measured here, 1 thread). `_mlx()` therefore loads libopenblas
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
import shutil
import sys
from pathlib import Path

import numpy as np

from ..errors import MissingDependencyError

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


def _mlx():
    preload_openblas()
    try:
        import mlx.core as mx
        import mlx_lm  # noqa: F401
    except (ImportError, OSError) as e:  # `mlx` without its CPU/Metal library fails with OSError
        raise MissingDependencyError("mlx and mlx-lm (for --backend mlx)", MLX_INSTALL) from e
    return mx


def mlx_model_folder(src: Path, dest: Path) -> Path:
    """A view of the HF folder `src` that mlx-lm 0.32.2 reads correctly: it takes only a top-level
    `rope_theta` (default 10000) and ignores transformers 5's `rope_parameters`, which generates
    garbage for any other base (STACK.md). Weights are linked, not copied."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in Path(src).iterdir():
        if f.name != "config.json" and not (dest / f.name).exists():
            (dest / f.name).symlink_to(f.resolve())
    cfg = json.loads((Path(src) / "config.json").read_text(encoding="utf-8"))
    rope = cfg.get("rope_parameters") or {}
    if "rope_theta" not in cfg and "rope_theta" in rope:
        cfg["rope_theta"] = rope["rope_theta"]
    (dest / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    return dest


def load_mlx_model(src: Path, work_dir: Path):
    _mlx()
    from mlx_lm.utils import load_model

    model, _ = load_model(mlx_model_folder(Path(src), Path(work_dir) / "mlx-base"))
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


def lora_layers(model) -> dict[str, object]:
    from mlx_lm.tuner.lora import LoRALinear

    return {k: m for k, m in model.named_modules() if isinstance(m, LoRALinear)}


def load_peft_weights(model, tensors: dict[str, np.ndarray]) -> None:
    """Set mlx LoRA weights from PEFT tensors (same init as a torch run; tests use it)."""
    mx = _mlx()
    for name, layer in lora_layers(model).items():
        layer.lora_a = mx.array(tensors[f"base_model.model.{name}.lora_A.weight"].T)
        layer.lora_b = mx.array(tensors[f"base_model.model.{name}.lora_B.weight"].T)


def peft_tensors(model) -> dict[str, np.ndarray]:
    """The mlx LoRA weights under PEFT's names and layouts: PEFT's A is (r, in) and B (out, r),
    mlx-lm's lora_a is (in, r) and lora_b (r, out)."""
    tensors = {}
    for name, layer in lora_layers(model).items():
        tensors[f"base_model.model.{name}.lora_A.weight"] = np.ascontiguousarray(np.array(layer.lora_a).T)
        tensors[f"base_model.model.{name}.lora_B.weight"] = np.ascontiguousarray(np.array(layer.lora_b).T)
    return tensors


def save_peft_adapter(model, out_dir: Path, r: int, alpha: int, targets: list[str], rslora: bool,
                      base_path: Path) -> Path:
    """Write the mlx LoRA weights as a PEFT adapter (scale: PEFT's alpha/r, or alpha/sqrt(r))."""
    from peft import LoraConfig, TaskType
    from safetensors.numpy import save_file

    out_dir = Path(out_dir)
    tensors = peft_tensors(model)
    LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), use_rslora=rslora, bias="none",
               task_type=TaskType.CAUSAL_LM, base_model_name_or_path=str(base_path)).save_pretrained(out_dir)
    save_file(tensors, str(out_dir / "adapter_model.safetensors"))
    return out_dir


def fused_logits(model, ids: list[int]) -> np.ndarray:
    """Logits of mlx-lm's own fused model (LoRA folded in by `LoRALinear.fuse`)."""
    mx = _mlx()
    from mlx.utils import tree_unflatten

    fused = [(k, m.fuse()) for k, m in lora_layers(model).items()]
    model.update_modules(tree_unflatten(fused))
    model.eval()
    return np.array(model(mx.array([ids])).astype(mx.float32))[0]


def remove_work_dir(work_dir: Path) -> None:
    shutil.rmtree(Path(work_dir) / "mlx-base", ignore_errors=True)
