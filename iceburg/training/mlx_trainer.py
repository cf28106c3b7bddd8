"""The MLX step for the step engine (`engine.run_plan`, the loop `trainer.train` runs too), on an
mlx-lm model with LoRA layers.

Same step plan (`trainer.plan_steps`), packing, loss (weighted cross-entropy over supervised
tokens, normalised per optimizer step), AdamW with linear warm-up/decay and gradient clipping,
callbacks, evaluation and checkpoint semantics as the torch trainer.

Packing: mlx-lm 0.32.2's models take no position ids and build their own causal mask, but they
ask the per-layer KV cache for a mask (`base.create_attention_mask` calls `cache.make_mask`) and
rotate queries/keys at `cache.offset`. `models.mlx.SegmentMask` stands in for that cache: offset 0, keys and
values passed through, and a block-diagonal causal mask so packed examples never attend to each
other. Positions then run on across a row instead of restarting per example, which gives the same
attention scores: RoPE makes q_i . k_j depend only on i - j, and the mask keeps i and j in one
example (measured against torch's restarting-position packed rows in tests/training/test_mlx.py).

Checkpoints (`checkpoint/` of the run folder, as torch): `adapter.safetensors` (PEFT key names, as
torch writes; its header carries the step plan's fingerprint, so a resume with another plan is
refused as on torch), `optimizer.safetensors` (mlx AdamW state) and `state.json` with the step and
`"format": "mlx"`. The schedule is a pure function of the step and the random key is re-seeded
from (seed, step) at every step, so neither needs saving and a resumed run replays the same steps.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import IceburgError
from .encoding import Example
from ..engine import Cadence, StepResult, TrainOutput, make_plan, run_plan
from ..models.mlx import HEAD_AT_KEPT, segment_mask  # noqa: F401 (HEAD_AT_KEPT re-exported)
from ..models.mlx import loss_sum as _loss_sum
from .mlx_backend import _mlx, load_peft_weights, peft_tensors
from .packing import Row, collate, pack
from .trainer import TrainArgs, plan_steps, warmup_steps

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "mlx"


def batch_arrays(rows: list[Row], pad_id: int):
    """(inputs, targets, token weights, supervised count, per-layer cache or None, kept positions).
    Targets and weights are already cut to the kept positions: those where some row supervises
    the next token (as trainer._forward_loss's `logits_to_keep`)."""
    mx = _mlx()
    batch = {k: v.numpy() for k, v in collate(rows, pad_id).items()}  # the torch trainer's padding
    ids, pos = batch["input_ids"].astype(np.int32), batch["position_ids"]
    mask, w = batch["loss_mask"].astype(np.float32), batch["token_weights"]
    packed = any(len(r.example_ids) > 1 for r in rows)
    seg = mx.array(segment_mask(pos[:, :-1])) if packed else None
    # position t predicts token t+1 (as in trainer._forward_loss)
    keep = np.nonzero(mask[:, 1:].any(axis=0))[0]
    if keep.size == 0:  # nothing supervised: one position at weight 0 keeps the gradient tree whole
        keep = np.zeros(1, dtype=np.int64)
    return (mx.array(ids[:, :-1]), mx.array(ids[:, 1:][:, keep]), mx.array((mask[:, 1:] * w[:, 1:])[:, keep]),
            int(mask[:, 1:].sum()), seg, mx.array(keep))


def evaluate_mlx(model, examples: list[Example], args: TrainArgs) -> float:
    """Mean cross-entropy per supervised token (unweighted), as `trainer.evaluate`."""
    if not examples:
        return float("nan")
    model.eval()
    unit = [Example(e.input_ids, e.mask, e.id, 1.0) for e in examples]
    rows = pack(unit, args.max_length, args.packing)
    total, count = 0.0, 0
    for i in range(0, len(rows), args.micro_batch_size):
        inputs, targets, weights, n, seg, keep = batch_arrays(rows[i:i + args.micro_batch_size], args.pad_id)
        total += float(_loss_sum(model, inputs, targets, weights, seg, keep))
        count += n
    model.train()
    return total / max(count, 1)


def _lr(step: int, total: int, args: TrainArgs) -> float:
    """transformers' get_linear_schedule_with_warmup over `warmup_steps`, as the torch trainer uses it."""
    warm = warmup_steps(total, args)
    if step < warm:
        return args.learning_rate * step / max(1, warm)
    return args.learning_rate * max(0.0, (total - step) / max(1, total - warm))


def train_mlx(model, examples: list[Example], order_fn: Callable[[int], list[int]],
              eval_examples: list[Example], args: TrainArgs, callbacks=()) -> TrainOutput:
    """The torch trainer's step plan, loss, schedule, evaluation and checkpoints on mlx, run by the
    step engine (`engine.run_plan`): this module supplies only the step and the checkpoints."""
    _mlx()
    import mlx.optimizers as optim

    plan = make_plan(*plan_steps(examples, order_fn, args))
    opt = optim.AdamW(learning_rate=args.learning_rate, weight_decay=args.weight_decay, bias_correction=True)
    ckpt = None if args.checkpoint_dir is None else MlxCheckpointer(model, opt, Path(args.checkpoint_dir))
    model.train()
    return run_plan(plan, mlx_step(model, opt, args, len(plan)), lambda step: evaluate_mlx(model, eval_examples, args),
                    cadence=Cadence(args.eval_steps, args.save_steps), checkpointer=ckpt, resume=args.resume,
                    callbacks=callbacks, show_progress=args.show_progress, desc="training (mlx)")


def mlx_step(model, opt, args: TrainArgs, total: int) -> Callable:
    """The engine's step function on mlx: gradients summed over the step's micro-batches (loss
    normalised by the step's supervised tokens, as torch), clipped, one AdamW update."""
    mx = _mlx()
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx.utils import tree_map

    grad_fn = nn.value_and_grad(model, lambda m, i, t, w, s, k, scale: _loss_sum(m, i, t, w, s, k) * scale)

    def step(index: int, micro_batches: list[list[Row]], on_batch: Callable) -> StepResult:
        mx.random.seed(args.seed * 1_000_003 + index)  # dropout masks depend on (seed, step) only
        n_sup = sum(sum(sum(r.mask) for r in mb) for mb in micro_batches)  # as the torch trainer
        grads, step_loss, sup, tokens = None, 0.0, 0, 0
        for mb in micro_batches:
            on_batch([eid for r in mb for eid in r.example_ids])
            inputs, targets, weights, n, seg, keep = batch_arrays(mb, args.pad_id)
            loss, g = grad_fn(model, inputs, targets, weights, seg, keep, 1.0 / max(n_sup, 1))
            grads = g if grads is None else tree_map(lambda a, b: a + b, grads, g)
            # evaluated per micro-batch (as mlx-lm's trainer does): left lazy, the summed gradients keep
            # every earlier micro-batch's graph and activations alive until the update (measured: 2
            # accumulation steps held 2x one micro-batch's activations; docs/hardware.md, MLX)
            mx.eval(loss, grads)
            step_loss += float(loss)
            sup += n
            tokens += int(inputs.size) + len(mb)  # + the last token of each row, as torch counts
        grads, _ = optim.clip_grad_norm(grads, args.max_grad_norm)
        opt.learning_rate = _lr(index, total, args)
        opt.update(model, grads)
        mx.eval(model.parameters(), opt.state)
        # "lr": the rate the next step will use, as torch's OptimizerStep reports it (and mlx_grpo)
        return StepResult(step_loss, {"lr": _lr(index + 1, total, args)}, sup, tokens)

    return step


class MlxCheckpointer:
    """The engine's checkpointer on mlx. The step plan's fingerprint rides in the adapter file's
    safetensors header (`{"plan": ...}`): `state.json` keeps exactly the step and the format,
    as MLX checkpoints have always written it."""

    def __init__(self, model, opt, path: Path):
        self.model, self.opt, self.path = model, opt, path

    def saved_plan(self) -> str | None:
        return saved_mlx_plan(self.path)

    def load(self) -> int:
        return load_mlx_checkpoint(self.model, self.opt, self.path)

    def save(self, step: int, plan_id: str) -> None:
        save_mlx_checkpoint(self.model, self.opt, self.path, step, plan_id)


def save_mlx_checkpoint(model, opt, ckpt_dir: Path, step: int, plan_id: str | None = None) -> None:
    """Written to a sibling folder and swapped in, so an interrupted save leaves the last one whole."""
    mx = _mlx()
    from mlx.utils import tree_flatten
    from safetensors.numpy import save_file

    ckpt_dir = Path(ckpt_dir)
    tmp = ckpt_dir.with_name(ckpt_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(peft_tensors(model), str(tmp / "adapter.safetensors"),
              metadata=None if plan_id is None else {"plan": plan_id})
    mx.save_safetensors(str(tmp / "optimizer.safetensors"), dict(tree_flatten(opt.state)))
    (tmp / "state.json").write_text(json.dumps({"step": step, "format": CHECKPOINT_FORMAT}))
    if ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    os.replace(tmp, ckpt_dir)
    logger.info("checkpoint saved at step %d", step)


def saved_mlx_plan(ckpt_dir: Path) -> str | None:
    """The plan fingerprint of the MLX checkpoint in `ckpt_dir` (None: no MLX checkpoint there, or
    one written before fingerprints)."""
    from safetensors import safe_open

    ckpt_dir = Path(ckpt_dir)
    state = ckpt_dir / "state.json"
    if not state.exists() or json.loads(state.read_text()).get("format") != CHECKPOINT_FORMAT:
        return None  # load_mlx_checkpoint says which backend to resume another format with
    with safe_open(str(ckpt_dir / "adapter.safetensors"), framework="np") as f:
        return (f.metadata() or {}).get("plan")


def load_mlx_checkpoint(model, opt, ckpt_dir: Path) -> int:
    mx = _mlx()
    from mlx.utils import tree_unflatten
    from safetensors.numpy import load_file

    ckpt_dir = Path(ckpt_dir)
    if not (ckpt_dir / "state.json").exists():
        logger.info("no checkpoint in %s: starting from step 0", ckpt_dir)
        return 0
    state = json.loads((ckpt_dir / "state.json").read_text())
    if state.get("format") != CHECKPOINT_FORMAT:
        raise IceburgError(f"{ckpt_dir} was written by the torch backend (format "
                           f"{state.get('format', 'torch')!r}); resume it with --backend torch")
    load_peft_weights(model, load_file(str(ckpt_dir / "adapter.safetensors")))
    opt.state = tree_unflatten(list(mx.load(str(ckpt_dir / "optimizer.safetensors")).items()))
    logger.info("resuming from step %d", state["step"])
    return int(state["step"])
