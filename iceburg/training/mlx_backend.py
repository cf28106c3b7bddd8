"""LoRA training on MLX (Apple silicon; `mlx[cpu]` on Linux for tests), on iceburg's own data.

The same encoded examples, assistant-only masks, per-token curriculum weights, deterministic step
plan (`trainer.plan_steps`), loss (weighted cross-entropy over supervised tokens, normalised per
optimizer step), AdamW with linear warm-up/decay and gradient clipping as the torch trainer; the
model and LoRA layers are mlx-lm's (`mlx_lm.utils.load_model`, `tuner.utils.linear_to_lora_layers`).
The adapter is written in PEFT format (`save_peft_adapter`), so the merge and every exporter run
unchanged on torch. mlx-lm's own GGUF writer is not used (it labels byte-level BPE tokenizers as
SentencePiece; STACK.md).

Not yet at parity (docs/training.md, "Backends"): rows are not packed (mlx-lm's Llama takes no
position ids, so packed transcripts would attend to each other); no checkpoints/resume; DoRA and
QLoRA stay on torch.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import MissingDependencyError
from .encoding import Example
from .packing import pack
from .trainer import TrainArgs, TrainOutput, plan_steps

MLX_INSTALL = "pip install 'mlx[cpu]==0.32.4' 'mlx-lm==0.32.2'  (on a Mac: pip install mlx mlx-lm)"


def _mlx():
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


def save_peft_adapter(model, out_dir: Path, r: int, alpha: int, targets: list[str], rslora: bool,
                      base_path: Path) -> Path:
    """Write the mlx LoRA weights as a PEFT adapter: PEFT's A is (r, in) and B (out, r), mlx-lm's
    lora_a is (in, r) and lora_b (r, out); the scale is PEFT's alpha/r (or alpha/sqrt(r))."""
    from peft import LoraConfig, TaskType
    from safetensors.numpy import save_file

    out_dir = Path(out_dir)
    tensors = {}
    for name, layer in lora_layers(model).items():
        tensors[f"base_model.model.{name}.lora_A.weight"] = np.ascontiguousarray(np.array(layer.lora_a).T)
        tensors[f"base_model.model.{name}.lora_B.weight"] = np.ascontiguousarray(np.array(layer.lora_b).T)
    LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), use_rslora=rslora, bias="none",
               task_type=TaskType.CAUSAL_LM, base_model_name_or_path=str(base_path)).save_pretrained(out_dir)
    save_file(tensors, str(out_dir / "adapter_model.safetensors"))
    return out_dir


def _batch_arrays(rows, pad_id: int):
    mx = _mlx()
    n = max(len(r) for r in rows)
    ids = np.full((len(rows), n), pad_id, dtype=np.int32)
    mask = np.zeros((len(rows), n), dtype=np.float32)
    w = np.zeros((len(rows), n), dtype=np.float32)
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)], w[i, :len(r)] = r.input_ids, r.mask, r.weights
    # position t predicts token t+1 (as in trainer._forward_loss)
    return mx.array(ids[:, :-1]), mx.array(ids[:, 1:]), mx.array(mask[:, 1:] * w[:, 1:]), int(mask[:, 1:].sum())


def _loss_sum(model, inputs, targets, weights):
    import mlx.core as mx
    import mlx.nn as nn

    logits = model(inputs).astype(mx.float32)
    return (nn.losses.cross_entropy(logits, targets, reduction="none") * weights).sum()


def evaluate_mlx(model, examples: list[Example], args: TrainArgs) -> float:
    """Mean cross-entropy per supervised token (unweighted), as `trainer.evaluate`."""
    if not examples:
        return float("nan")
    model.eval()
    unit = [Example(e.input_ids, e.mask, e.id, 1.0) for e in examples]
    rows = pack(unit, args.max_length, packing=False)
    total, count = 0.0, 0
    for i in range(0, len(rows), args.micro_batch_size):
        inputs, targets, weights, n = _batch_arrays(rows[i:i + args.micro_batch_size], args.pad_id)
        total += float(_loss_sum(model, inputs, targets, weights))
        count += n
    model.train()
    return total / max(count, 1)


def _lr(step: int, total: int, args: TrainArgs) -> float:
    """transformers' get_linear_schedule_with_warmup, as the torch trainer uses it."""
    warm = int(math.ceil(args.warmup_ratio * total))
    if step < warm:
        return args.learning_rate * step / max(1, warm)
    return args.learning_rate * max(0.0, (total - step) / max(1, total - warm))


def train_mlx(model, examples: list[Example], order_fn: Callable[[int], list[int]],
              eval_examples: list[Example], args: TrainArgs, callbacks=()) -> TrainOutput:
    """The torch trainer's step plan and loss on an mlx-lm model with LoRA layers."""
    mx = _mlx()
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx.utils import tree_map

    if args.packing:
        args = TrainArgs(**{**args.__dict__, "packing": False})  # see module docstring
    steps, epoch_ends = plan_steps(examples, order_fn, args)
    if not steps:
        raise ValueError("nothing to train on: the step plan is empty")
    mx.random.seed(args.seed)
    opt = optim.AdamW(learning_rate=args.learning_rate, weight_decay=args.weight_decay, bias_correction=True)
    grad_fn = nn.value_and_grad(model, lambda m, i, t, w, scale: _loss_sum(m, i, t, w) * scale)
    out = TrainOutput(steps=len(steps), train_loss=float("nan"), last_loss=float("nan"))
    started, loss_sum = time.time(), 0.0
    model.train()
    for idx, micro_batches in enumerate(steps):
        n_sup = sum(sum(sum(r.mask) for r in mb) for mb in micro_batches)  # as the torch trainer
        grads, step_loss = None, 0.0
        for mb in micro_batches:
            for cb in callbacks:
                cb.on_batch([eid for r in mb for eid in r.example_ids])
            inputs, targets, weights, n = _batch_arrays(mb, args.pad_id)
            loss, g = grad_fn(model, inputs, targets, weights, 1.0 / max(n_sup, 1))
            grads = g if grads is None else tree_map(lambda a, b: a + b, grads, g)
            step_loss += float(loss)
            out.supervised_tokens += n
            out.total_tokens += int(inputs.size)
        grads, _ = optim.clip_grad_norm(grads, args.max_grad_norm)
        opt.learning_rate = _lr(idx, len(steps), args)
        opt.update(model, grads)
        mx.eval(model.parameters(), opt.state)
        if not math.isfinite(step_loss):
            raise FloatingPointError(f"training diverged at step {idx + 1}: loss is {step_loss}; "
                                     "lower --learning-rate")
        loss_sum += step_loss
        out.last_loss, done = step_loss, idx + 1
        for cb in callbacks:
            cb.on_step(done, {"step": done, "loss": step_loss, "lr": float(opt.learning_rate),
                              "supervised_tokens": out.supervised_tokens,
                              "elapsed_s": round(time.time() - started, 2)})
        at_eval = done % args.eval_steps == 0 if args.eval_steps else done in epoch_ends
        if at_eval or done == len(steps):
            ev = evaluate_mlx(model, eval_examples, args)
            out.eval_history.append((done, ev))
            for cb in callbacks:
                cb.on_eval(done, ev)
    out.train_loss = loss_sum / len(steps)
    out.wall_seconds = time.time() - started
    return out


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
