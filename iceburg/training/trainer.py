"""The training loop: a function with injected parts (mlx-lm's `train` shape).

`train(model, examples, curriculum_order, eval_examples, args, loss=weighted_token_loss,
callbacks=[...])` runs LoRA training on already-encoded examples. Written as a plain torch loop
rather than HF `Trainer`/TRL because it is measurably faster here (STACK.md: plain loop 17.5k
tok/s vs SFTTrainer 12.7k on CPU) and because the curriculum needs exact control of order and
per-example weights, which would otherwise mean subclassing a sampler and the loss.

- Order: for each epoch, `order_fn(epoch)` gives the example indices; examples are packed in that
  order (greedy), or best-fit (`best_fit`, for shuffled epochs: rows keep the order of their
  earliest example), and micro-batches are consumed in that order (no reshuffle). Callbacks see every
  micro-batch's example ids (`on_batch`).
- Loss: cross-entropy on supervised (assistant) tokens only, each token multiplied by its
  example's weight, normalised by the number of supervised tokens in the optimizer step (so
  gradient accumulation gives the same loss as one big batch). Logits are computed only at
  supervised positions (`logits_to_keep`), which saves most of the lm-head cost on large vocabs.
- Resume: the whole step plan is a deterministic function of (examples, order, args), so a
  checkpoint stores adapter weights, optimizer, scheduler and the step index; resuming rebuilds
  the plan and continues from that step.
- The loop itself (resume and the plan check, evaluation and save cadence, metrics lines,
  callbacks, the divergence check, the progress bar) is the step engine's (`iceburg/engine.py:
  run_plan`); this module supplies the SFT step (`sft_step`, ending in the engine's one torch
  optimizer step `OptimizerStep`) and the torch checkpointer (`TorchCheckpointer`).
- Distributed (`world`, see distributed.py): the plan is global (`grad_accum x world_size`
  micro-batches per step); each rank runs its share, rank 0 alone writes checkpoints.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch

from .. import families
from .distributed import (World, load_fsdp_checkpoint, no_sync, save_fsdp_checkpoint, shard_micro_batches,
                          unwrap)
from .encoding import Example
from ..engine import (Cadence, OptimizerStep, StepResult, TrainingCallback, TrainOutput, make_plan,  # noqa: F401
                      peak_rss_mib, plan_fingerprint, run_plan)
from .lora_dropout import lora_dropout_on_cpu
from .packing import Row, collate, pack
from .segment_attention import segment_attention, supports_segments

SINGLE = World()

logger = logging.getLogger(__name__)


@dataclass
class TrainArgs:
    epochs: int = 1
    max_steps: int | None = None
    learning_rate: float = 2e-4
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    micro_batch_size: int = 1
    grad_accum: int = 1
    max_length: int = 1024
    packing: bool = True
    best_fit: bool = False  # best-fit decreasing packing (shuffled epochs only; packing.py)
    eval_steps: int | None = None  # None = end of each epoch
    save_steps: int | None = None  # None = end of each epoch
    seed: int = 42
    device: str = "cpu"
    precision: str = "fp32"
    pad_id: int = 0
    checkpoint_dir: Path | None = None
    resume: bool = False
    show_progress: bool | None = None  # None = only on a terminal
    max_grad_norm: float = 1.0
    world_size: int = 1  # processes sharing each optimizer step (micro-batches per step x this)
    varlen: bool = False  # a micro-batch as one padding-free row (flash-attention varlen; accel.py)
    liger: bool = False  # Liger's fused lm head + cross-entropy (accel.py)
    # causal attention per packed example instead of sdpa's block-diagonal mask (segment_attention.py);
    # None = on CPU when the model's attention allows it
    segment_attention: bool | None = None


def weighted_token_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                        weights: torch.Tensor) -> torch.Tensor:
    """Sum over supervised tokens of weight * cross-entropy (normalised by the caller)."""
    ce = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)),
                                           targets.reshape(-1), reduction="none")
    return (ce * weights.reshape(-1) * mask.reshape(-1).float()).sum()


def plan_steps(examples: list[Example], order_fn: Callable[[int], list[int]],
               args: TrainArgs) -> tuple[list[list[list[Row]]], set[int]]:
    """Optimizer steps -> micro-batches -> rows for the whole run (deterministic), and the step
    numbers (1-based) that end an epoch. Epochs may differ in length (progressive curricula).
    With `max_steps` beyond the configured epochs, further epochs follow the same order rule."""
    steps: list[list[list[Row]]] = []
    epoch_ends: set[int] = set()
    epoch = 0
    while epoch < args.epochs or (args.max_steps is not None and len(steps) < args.max_steps):
        rows = pack([examples[i] for i in order_fn(epoch)], args.max_length, args.packing, args.best_fit)
        micro = [rows[i:i + args.micro_batch_size] for i in range(0, len(rows), args.micro_batch_size)]
        per_step = args.grad_accum * args.world_size
        steps.extend(micro[i:i + per_step] for i in range(0, len(micro), per_step))
        epoch_ends.add(len(steps))
        epoch += 1
        if not micro and epoch > args.epochs:  # an order rule that yields nothing cannot reach max_steps
            break
    if args.max_steps is not None:
        steps = steps[: args.max_steps]
    return steps, {e for e in epoch_ends if e <= len(steps)}


def _autocast(args: TrainArgs):
    if args.precision == "bf16" and args.device == "cpu":
        # bf16 matmuls through oneDNN (AMX / AVX512-BF16 where the CPU has them; the planner
        # offers bf16 on CPU only there, hardware/detect.py); LoRA adapters stay fp32 (peft)
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    if args.precision in ("bf16", "fp16") and args.device != "cpu":
        dtype = torch.bfloat16 if args.precision == "bf16" else torch.float16
        return torch.autocast(device_type=args.device.split(":")[0], dtype=dtype)
    return torch.autocast(device_type="cpu", enabled=False)


def _collate(rows: list[Row], args: TrainArgs) -> dict[str, torch.Tensor]:
    if args.varlen:
        from .accel import collate_varlen

        return collate_varlen(rows)
    return collate(rows, args.pad_id)


def _use_segments(model, args: TrainArgs) -> bool:
    """Whether the trainer's forwards run through segment attention (decided once per model): on
    CPU by default, wherever the model's attention allows it. Measured per micro-batch (forward +
    backward, 2 threads, bench/training_step_ab.py): SmolLM2-135M at 4 x 512 with rows of mostly
    one example (work share 0.855) 1.14x faster than the mask, at share 0.70 1.2x (attention
    alone); iceburg-tiny at 4 x 2048 (share ~0.2) 1.5x. (Before segments split the tensors instead
    of indexing them and shared grouped KV heads in the kernel, they lost below share 0.5.)"""
    if args.segment_attention is False or args.varlen:
        return False
    cached = getattr(model, "_iceburg_segments", None)
    if cached is None:
        why = supports_segments(model, args.max_length)
        cached = why is None and (args.segment_attention or args.device == "cpu")
        if why and args.segment_attention:
            logger.warning("segment attention is off for this model: %s", why)
        model._iceburg_segments = cached
    return cached


# Causal LMs whose forward is `lm_head(decoder(...).last_hidden_state[:, keep])` and nothing more (no
# final soft-capping or logit scale): the trainer may call their decoder and head apart. Which
# model_types those are is each family record's `Architecture.head_apart` (iceburg/families/).


def _head_apart(model, args: TrainArgs):
    """The causal LM whose decoder and plain linear head the trainer calls apart (to run the head
    only at supervised row positions), or None: single-process CPU training of a head-apart model
    whose head is not adapted. Decided once per model."""
    if args.device != "cpu" or args.world_size != 1 or hasattr(model, "module"):
        return None
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    ok = getattr(model, "_iceburg_head_apart", None)
    if ok is None:
        cfg = getattr(inner, "config", None)
        ok = model._iceburg_head_apart = bool(
            families.head_apart(getattr(cfg, "model_type", None)) and hasattr(inner, "model")
            and type(inner.get_output_embeddings()) is torch.nn.Linear
            and not getattr(cfg, "final_logit_softcapping", None) and not getattr(cfg, "logits_scaling", None))
    return inner if ok else None


class _HeadCrossEntropy(torch.autograd.Function):
    """sum_i w_i * cross_entropy(h_i @ W^T + b, t_i) for a frozen head, in chunks of HEAD_CHUNK rows,
    with the gradient for h computed in the forward (softmax - one-hot, times w, times W): only a
    chunk's logits are ever alive, instead of the logits, their log-softmax and their gradient
    for every supervised position (3 x 300 MB for SmolLM2's 49k vocabulary at 4 x 512), and
    nothing is recomputed. Written by hand: Liger's fused linear cross-entropy does this on CUDA
    (Triton) only."""

    @staticmethod
    def forward(ctx, h, weight, bias, targets, weights):
        grad_h = torch.empty_like(h) if ctx.needs_input_grad[0] else None
        loss = torch.zeros((), dtype=torch.float32, device=h.device)
        for s in range(0, h.shape[0], HEAD_CHUNK):
            e = min(s + HEAD_CHUNK, h.shape[0])
            logits = torch.nn.functional.linear(h[s:e], weight, bias).float()
            lse = torch.logsumexp(logits, dim=-1)
            idx = targets[s:e, None]
            w = weights[s:e].float()
            loss += ((lse - logits.gather(1, idx).squeeze(1)) * w).sum()
            if grad_h is not None:
                p = logits.sub_(lse[:, None]).exp_()  # softmax, in place
                p.scatter_add_(1, idx, torch.full_like(idx, -1.0, dtype=p.dtype))
                grad_h[s:e] = (p.mul_(w[:, None])).to(weight.dtype) @ weight
        ctx.save_for_backward(grad_h if grad_h is not None else h.new_empty(0))
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        (grad_h,) = ctx.saved_tensors
        return grad_h * grad_loss.to(grad_h.dtype), None, None, None, None


HEAD_CHUNK = 256  # rows of logits alive at once: 256 x 49k x 4 bytes = 50 MB for SmolLM2


def _forward_loss(model, batch: dict[str, torch.Tensor], args: TrainArgs, loss_fn) -> tuple[torch.Tensor, int]:
    if args.liger and loss_fn is weighted_token_loss:
        from .accel import liger_forward_loss

        return liger_forward_loss(model, batch, args.device, _autocast(args))
    ids = batch["input_ids"].to(args.device)
    pos = batch["position_ids"].to(args.device)
    # position t predicts token t+1: keep logits only where some row supervises t+1
    tgt_mask = batch["loss_mask"][:, 1:]
    keep = tgt_mask.any(dim=0).nonzero().squeeze(-1)
    if keep.numel() == 0:
        return torch.zeros((), device=args.device, requires_grad=True), 0
    split = _head_apart(model, args) if loss_fn is weighted_token_loss else None
    with _autocast(args), segment_attention(model, _use_segments(model, args)):
        if split is not None:
            # the head only at the supervised (row, position) pairs: `logits_to_keep` can only
            # pick positions for every row at once (their union, ~all positions with 4 rows)
            sel = tgt_mask.to(args.device)
            hidden = split.model(input_ids=ids, position_ids=pos, use_cache=False).last_hidden_state
            head = split.get_output_embeddings()
            weights = batch["token_weights"][:, 1:].to(args.device)[sel]
            targets = ids[:, 1:][sel]
            if not head.weight.requires_grad and (head.bias is None or not head.bias.requires_grad):
                return _HeadCrossEntropy.apply(hidden[:, :-1][sel], head.weight, head.bias, targets,
                                               weights), int(sel.sum())
            logits = head(hidden[:, :-1][sel])
            ones = torch.ones_like(weights, dtype=torch.bool)
            return loss_fn(logits[None], targets[None], ones[None], weights[None]), int(sel.sum())
        out = model(input_ids=ids, position_ids=pos, use_cache=False, logits_to_keep=keep.to(args.device))
    targets = ids[:, 1:][:, keep.to(args.device)]
    mask = tgt_mask[:, keep].to(args.device)
    weights = batch["token_weights"][:, 1:][:, keep].to(args.device)
    return loss_fn(out.logits, targets, mask, weights), int(mask.sum())


@torch.no_grad()
def evaluate(model, examples: list[Example], args: TrainArgs, world: World = SINGLE) -> float:
    """Mean cross-entropy per supervised token (unweighted) over `examples` (shared over ranks)."""
    if not examples:
        return float("nan")
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    unit = [Example(e.input_ids, e.mask, e.id, 1.0) for e in examples]
    # the order of held-out rows cannot change a mean over tokens: always pack them best-fit
    rows = pack(unit, args.max_length, args.packing, best_fit=True)
    micro = [rows[i:i + args.micro_batch_size] for i in range(0, len(rows), args.micro_batch_size)]
    for mb, w in shard_micro_batches(micro, world.rank, world.size):
        loss, n = _forward_loss(model, _collate(mb, args), args, weighted_token_loss)
        total += w * float(loss)
        count += int(w) * n
    total, count = world.all_reduce_sum([total, count])
    if was_training:
        model.train()
    return total / max(count, 1)


def default_optimizer(params: list[torch.nn.Parameter], args: TrainArgs) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay)


def warmup_steps(total_steps: int, args: TrainArgs) -> int:
    """Whole warm-up steps: `warmup_ratio` of the steps, rounded down.

    transformers rounds up, and its linear warm-up runs the first step at a learning rate of 0:
    on the short runs a CPU fine-tune makes (12 steps at the 5% default), that is one step of
    compute in twelve that moves no weight. Measured on SmolLM2-135M, one epoch of the surveyor
    samples: held-out loss 3.3591-3.3610 with that step (3 seeds) vs 3.3506 without it, against
    3.3513-3.3542 for TRL's bfd packing (no warm-up) on the same tokens (docs/training.md). Rounding down
    drops a warm-up shorter than one step (below 20 steps at 5%) and keeps it for longer runs."""
    return int(math.floor(args.warmup_ratio * total_steps + 1e-9))


def default_scheduler(opt: torch.optim.Optimizer, total_steps: int, args: TrainArgs):
    """Linear warm-up over `warmup_steps` (`warmup_ratio` of the steps, rounded down), then linear
    decay to 0."""
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(opt, warmup_steps(total_steps, args), total_steps)


def train(model, examples: list[Example], order_fn: Callable[[int], list[int]], eval_examples: list[Example],
          args: TrainArgs, *, loss_fn=weighted_token_loss, callbacks: Iterable[TrainingCallback] = (),
          make_optimizer: Callable = default_optimizer, make_scheduler: Callable = default_scheduler,
          world: World = SINGLE) -> TrainOutput:
    """Train on the deterministic step plan. The optimizer and schedule are injected
    (`make_optimizer(params, args)`, `make_scheduler(opt, total_steps, args)`); their state must
    round-trip through `state_dict` for resume. Under `world`, `model` is the wrapped (DDP/FSDP)
    model and `args.world_size` must equal `world.size`. On CPU the LoRA dropout masks are drawn
    by `lora_dropout.CpuLoraDropout` (same distribution, cheaper), PEFT's modules restored after."""
    with lora_dropout_on_cpu(model, args.device == "cpu"):
        return _train(model, examples, order_fn, eval_examples, args, loss_fn=loss_fn, callbacks=callbacks,
                      make_optimizer=make_optimizer, make_scheduler=make_scheduler, world=world)


def _train(model, examples: list[Example], order_fn: Callable[[int], list[int]], eval_examples: list[Example],
           args: TrainArgs, *, loss_fn, callbacks: Iterable[TrainingCallback], make_optimizer: Callable,
           make_scheduler: Callable, world: World) -> TrainOutput:
    if args.world_size != world.size:
        raise ValueError(f"args.world_size={args.world_size} but {world.size} processes are running")
    plan = make_plan(*plan_steps(examples, order_fn, args))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, args)
    sched = make_scheduler(opt, len(plan), args)
    stepper = OptimizerStep(params, opt, sched, args.max_grad_norm,
                            fp16=args.precision == "fp16" and args.device.startswith("cuda"))
    ckpt = None if args.checkpoint_dir is None else TorchCheckpointer(model, opt, sched, args.checkpoint_dir, world)
    model.train()
    return run_plan(plan, sft_step(model, args, loss_fn, stepper, world),
                    lambda step: evaluate(model, eval_examples, args, world),
                    cadence=Cadence(args.eval_steps, args.save_steps), checkpointer=ckpt, resume=args.resume,
                    callbacks=callbacks, show_progress=args.show_progress, desc="training")


def sft_step(model, args: TrainArgs, loss_fn, stepper: "OptimizerStep", world: World) -> Callable:
    """The engine's step function for supervised fine-tuning: forward/backward over this rank's
    share of the step's micro-batches (loss normalised by the step's supervised tokens over all
    ranks), then one optimizer step."""

    def step(index: int, micro_batches: list[list[Row]], on_batch: Callable) -> StepResult:
        # the global count: every rank knows the whole plan, so no communication is needed
        n_sup = sum(sum(sum(r.mask) for r in mb) for mb in micro_batches)
        step_loss, n_step, tok_step = 0.0, 0, 0
        mine = shard_micro_batches(micro_batches, world.rank, world.size)
        for k, (mb, w) in enumerate(mine):
            if w:
                on_batch([eid for r in mb for eid in r.example_ids])
            batch = _collate(mb, args)
            with no_sync(model, world, last=k == len(mine) - 1):
                loss, n = _forward_loss(model, batch, args, loss_fn)
                loss = loss * (w / max(n_sup, 1))
                # DDP/FSDP average gradients over ranks; x size makes the result the global sum
                stepper.backward(loss * world.size)
            step_loss += float(loss.detach())
            n_step += int(w) * n
            tok_step += int(w) * batch["input_ids"].numel()
            # Free this micro-batch's graph before the next forward: alive, its autograd nodes (small
            # mallocs among the freed activations) pinned glibc's heap, so the next micro-batch grew it:
            # SmolLM2-135M 4 x 512 x 2 accumulation peaked at 10,118 MiB with them, 7,864 without
            # (planner 7,217; docs/hardware.md, "accumulation").
            del loss, batch
        if world.active:
            step_loss, n_step, tok_step = world.all_reduce_sum([step_loss, n_step, tok_step])
        return StepResult(step_loss, {"lr": stepper.step()}, int(n_step), int(tok_step))

    return step


# -- checkpoints (our own files: adapter weights as safetensors, optimizer via weights_only load) --

@dataclass
class TorchCheckpointer:
    """The engine's checkpointer for torch: PEFT adapter, optimizer, scheduler and RNG state in
    `path` (FSDP: gathered full state, every rank taking part; DDP: rank 0 writes). Every rank
    waits at a save, so none runs ahead of a checkpoint it might have to resume from."""

    model: object
    opt: torch.optim.Optimizer
    sched: object
    path: Path
    world: World = SINGLE

    def _fsdp(self) -> bool:
        return self.world.mode == "fsdp" and self.world.active

    def saved_plan(self) -> str | None:
        state = Path(self.path) / "state.json"
        return json.loads(state.read_text()).get("plan") if state.exists() else None

    def load(self) -> int:
        if self._fsdp():
            return load_fsdp_checkpoint(self.model, self.opt, self.sched, self.path)
        return load_checkpoint(unwrap(self.model), self.opt, self.sched, self.path)

    def save(self, step: int, plan_id: str) -> None:
        if self._fsdp():
            save_fsdp_checkpoint(self.model, self.opt, self.sched, self.path, step, self.world, plan_id)
        elif self.world.is_main:
            save_checkpoint(unwrap(self.model), self.opt, self.sched, self.path, step, plan_id)
        self.world.barrier()


def save_checkpoint(model, opt, sched, ckpt_dir: Path, step: int, plan_id: str | None = None) -> None:
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    ckpt_dir = Path(ckpt_dir)
    tmp = ckpt_dir.with_name(ckpt_dir.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    save_file(state, str(tmp / "adapter.safetensors"))
    # the RNG state too: LoRA dropout draws from it, so a resumed run drops the same units
    rng = {"cpu": torch.get_rng_state(), **({"cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() else {})}
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": rng}, tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, "plan": plan_id}))
    if ckpt_dir.exists():
        import shutil

        shutil.rmtree(ckpt_dir)
    os.replace(tmp, ckpt_dir)
    logger.info("checkpoint saved at step %d", step)


def load_checkpoint(model, opt, sched, ckpt_dir: Path) -> int:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    ckpt_dir = Path(ckpt_dir)
    if not (ckpt_dir / "state.json").exists():
        logger.info("no checkpoint in %s: starting from step 0", ckpt_dir)
        return 0
    fmt = json.loads((ckpt_dir / "state.json").read_text()).get("format")
    if fmt in ("fsdp-full", "mlx"):
        from ..errors import IceburgError

        writer, how = {"fsdp-full": ("--distributed fsdp", "--distributed fsdp and the same number of processes"),
                       "mlx": ("--backend mlx", "--backend mlx")}[fmt]
        raise IceburgError(f"{ckpt_dir} was written by a {writer} run; resume it with {how}")
    set_peft_model_state_dict(model, load_file(str(ckpt_dir / "adapter.safetensors")))
    # weights_only=True: a restricted unpickler that only rebuilds tensors and plain containers
    st = torch.load(ckpt_dir / "optimizer.pt", weights_only=True)
    opt.load_state_dict(st["optimizer"])
    sched.load_state_dict(st["scheduler"])
    if "rng" in st:  # checkpoints written before the RNG was saved resume without it
        torch.set_rng_state(st["rng"]["cpu"])
        if "cuda" in st["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(st["rng"]["cuda"])
    step = json.loads((ckpt_dir / "state.json").read_text())["step"]
    logger.info("resuming from step %d", step)
    return int(step)
