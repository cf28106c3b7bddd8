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

Loading, the OpenBLAS binding on Linux, LoRA layers and the loss are the model's own
(iceburg/models/mlx.py, shared with the planner's MLX memory probe); re-exported here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ..models.mlx import apply_lora_mlx, load_mlx_model, preload_openblas  # noqa: F401 (re-exported)
from ..models.mlx import mlx_core as _mlx


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
