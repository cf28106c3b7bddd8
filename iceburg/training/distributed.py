"""Data-parallel LoRA training on torch.distributed: one process per device.

Launchers: `iceburg-train ... --nproc N` (spawns torchrun for one node), or the same command
under `torchrun` / `accelerate launch` (both set RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous
address; iceburg reads only those). Backend: NCCL on CUDA, gloo on CPU (every path here is tested
on CPU with gloo, see docs/distributed.md).

How a step is shared (the trainer's deterministic step plan stays global):
- every rank builds the same global plan: each optimizer step holds `grad_accum x world` micro-
  batches of packed rows in the curriculum's order; rank r takes micro-batches r, r+W, r+2W, ...
  (`shard_micro_batches`), so at each accumulation slot the W ranks run W consecutive micro-
  batches and ordered curricula stay ordered globally;
- every rank runs the same number of micro-batches per step (collectives must match: DDP's
  gradient all-reduce, FSDP's all-gathers); a rank short of data in a ragged last step runs a
  copy of a real micro-batch with weight 0 (zero gradient, not counted);
- the loss is normalised by the step's *global* supervised-token count (known to every rank
  from the plan) and multiplied by W, because DDP and FSDP average gradients over ranks: the
  summed gradient is then exactly the 1-process gradient of the same global batch.

Modes: "ddp" (DistributedDataParallel; LoRA gradients only are all-reduced, the frozen base is
replicated) and "fsdp" (FSDP2 `fully_shard` per decoder layer, then the root: the frozen base is
sharded across ranks, for bases that do not fit one device).
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from ..errors import IceburgError

logger = logging.getLogger(__name__)

T = TypeVar("T")
MODES = ("ddp", "fsdp")


@dataclass(frozen=True)
class World:
    """This process's place in the job. `World()` is a plain single-process run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    mode: str = "ddp"
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64, so token counts stay exact)."""
        if not self.active:
            return list(values)
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64)
        if self.backend == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
        return t.cpu().tolist()

    def broadcast(self, obj: T | None) -> T:
        """Rank 0's `obj` on every rank (pickled; rank 0's value is returned unchanged)."""
        if not self.active:
            return obj  # type: ignore[return-value]
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def env_world_size() -> int:
    """WORLD_SIZE set by torchrun / accelerate launch (1 when not launched)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def init_world(device: str, mode: str = "ddp", timeout_s: float = 1800) -> World:
    """Join the process group the launcher describes (no-op for a single process).

    `timeout_s` bounds every collective: a rank that dies or hangs makes the others fail with an
    error after at most this long instead of waiting forever (gloo notices a dead peer's closed
    socket at once; the timeout covers a peer that hangs). Rank 0 prepares the data while the
    others wait in a broadcast, so it must exceed the data preparation time."""
    size = env_world_size()
    if size <= 1:
        return World(mode=mode)
    import torch
    import torch.distributed as dist

    if mode not in MODES:
        raise IceburgError(f"distributed (--distributed): unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if device.startswith("mps"):
        raise IceburgError("--nproc / torchrun: torch.distributed has no backend for Apple MPS; train "
                           "with one process on a Mac (drop --nproc)")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)  # so "cuda" means this rank's device everywhere
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    world = World(rank=rank, size=size, local_rank=local_rank, mode=mode, backend=backend)
    logger.info("rank %d of %d (%s, %s)", rank, size, backend, mode)
    return world


def shutdown(world: World) -> None:
    if world.active:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def shard_micro_batches(micro_batches: list[T], rank: int, size: int) -> list[tuple[T, float]]:
    """This rank's micro-batches of one global step, as (micro-batch, weight) pairs.

    Rank r takes micro-batches r, r+W, ...; every rank gets ceil(n / W) entries, the missing ones
    filled with a copy of the step's first micro-batch at weight 0 (see the module docstring)."""
    mine = [(mb, 1.0) for mb in micro_batches[rank::size]]
    need = math.ceil(len(micro_batches) / size) if micro_batches else 0
    while len(mine) < need:
        mine.append((micro_batches[0], 0.0))
    return mine


def wrap_model(model, world: World):
    """DDP or FSDP2 around the (PEFT) model; the model itself when single-process."""
    if not world.active:
        return model
    if world.mode == "fsdp":
        return _fully_shard(model)
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [world.local_rank] if world.backend == "nccl" else None
    # broadcast_buffers=False: the only buffers are rotary frequencies, identical on every rank
    return DDP(model, device_ids=ids, broadcast_buffers=False)


def _fully_shard(model):
    """FSDP2: shard every decoder layer, then the root (the layout measured to train with PEFT
    LoRA on CPU/gloo, STACK.md)."""
    from torch.distributed.fsdp import fully_shard

    layers = _decoder_layers(model)
    for layer in layers:
        fully_shard(layer)
    fully_shard(model)
    return model


def _decoder_layers(model) -> list:
    """The repeated transformer blocks (`model.layers` in Llama/Qwen/Mistral/Gemma)."""
    import torch

    for module in model.modules():
        layers = getattr(module, "layers", None)
        if isinstance(layers, torch.nn.ModuleList) and len(layers) > 0:
            return list(layers)
    raise IceburgError(f"--distributed fsdp: found no decoder layers (a `layers` ModuleList) in "
                       f"{type(model).__name__}; use --distributed ddp")


def unwrap(model):
    """The PEFT model inside a DDP wrapper (FSDP2 shards in place: the model itself)."""
    return getattr(model, "module", model)


def no_sync(model, world: World, last: bool):
    """Skip the gradient all-reduce on all but the last micro-batch of a step (both modes)."""
    import contextlib

    if not world.active:
        return contextlib.nullcontext()
    if world.mode == "fsdp":
        model.set_requires_gradient_sync(last)
        return contextlib.nullcontext()
    return contextlib.nullcontext() if last else model.no_sync()


def trainable_bytes(model) -> int:
    """Bytes of the gradients DDP all-reduces per optimizer step (trainable parameters only)."""
    return sum(p.numel() * p.element_size() for p in unwrap(model).parameters() if p.requires_grad)


def launch(argv: list[str], nproc: int, module: str | None = "iceburg.cli") -> int:
    """Run `python -m module argv` (or the script argv[0] when `module` is None) in `nproc`
    processes on this node under torchrun; returns its exit status.

    torchrun (max restarts 0) stops every rank as soon as one fails and prints which rank failed
    and why; we add one line saying how to continue."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "--max_restarts=0"]
    # children get their world size from torchrun; "--nproc" would also be taken by torchrun's own
    # parser as an abbreviation of --nproc-per-node
    argv = _without_flag(list(argv), "--nproc")
    cmd += ["-m", module, *argv] if module else argv
    env = dict(os.environ)
    # one process per core by default: N processes x all cores each would oversubscribe the CPU
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    logger.info("launching %d processes: %s", nproc, " ".join(cmd))
    rc = subprocess.call(cmd, env=env)
    if rc != 0:
        sys.stderr.write(f"error: a training process failed (exit status {rc}; torchrun's report above "
                         "names the rank). Every rank was stopped; continue from the last checkpoint "
                         "with the same command plus --resume\n")
    return rc


def _without_flag(argv: list[str], flag: str) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == flag:
            skip = True
        elif not a.startswith(flag + "="):
            out.append(a)
    return out


def describe(world: World) -> dict[str, Any]:
    """What the run folder records about the job."""
    return {"world_size": world.size, "mode": world.mode if world.active else None,
            "backend": world.backend, "launcher_env": {k: os.environ[k] for k in
                                                       ("MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE")
                                                       if k in os.environ}}


def gather_full_model(model, world: World, build):
    """FSDP: the full trained weights in a fresh unsharded model on rank 0 (`build()` makes one;
    other ranks take part in the gather and get None). Every rank must call this."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not world.is_main:
        return None
    fresh = build()
    missing, unexpected = fresh.load_state_dict(full, strict=False)
    if unexpected or any("lora_" in k for k in missing):
        raise RuntimeError(f"FSDP gather: state dict does not match the model (missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]})")
    return fresh


# -- FSDP checkpoints: full (unsharded) trainable weights and optimizer state, written by rank 0 --
# The same files as a single-process checkpoint (adapter.safetensors, optimizer.pt, state.json),
# keyed by the model's parameter names instead of PEFT's adapter names; state.json says which.

def save_fsdp_checkpoint(model, opt, sched, ckpt_dir, step: int, world: World, plan_id: str | None = None) -> None:
    """Every rank takes part in the gather; rank 0 writes."""
    import json
    import shutil
    from pathlib import Path

    import torch
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    msd, osd = get_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not world.is_main:
        return
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    ckpt_dir = Path(ckpt_dir)
    tmp = ckpt_dir.with_name(ckpt_dir.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in msd.items() if k in trainable}, str(tmp / "adapter.safetensors"))
    torch.save({"optimizer": osd, "scheduler": sched.state_dict()}, tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, "format": "fsdp-full", "plan": plan_id}))
    if ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    os.replace(tmp, ckpt_dir)
    logger.info("checkpoint saved at step %d (FSDP, gathered)", step)


def load_fsdp_checkpoint(model, opt, sched, ckpt_dir) -> int:
    """Every rank reads the full files and keeps its shard."""
    import json
    from pathlib import Path

    import torch
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
    from torch.distributed.tensor import distribute_tensor

    ckpt_dir = Path(ckpt_dir)
    if not (ckpt_dir / "state.json").exists():
        return 0
    state = json.loads((ckpt_dir / "state.json").read_text())
    if state.get("format") != "fsdp-full":
        raise IceburgError(f"{ckpt_dir} was written by a --distributed ddp (or single-process) run; "
                           "resume it with the same --distributed mode")
    weights = load_file(str(ckpt_dir / "adapter.safetensors"))
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, _ in trainable if n not in weights]
    if missing:
        raise IceburgError(f"{ckpt_dir}: checkpoint lacks {len(missing)} trainable weights ({missing[0]}, ...); "
                           "was it written with other LoRA settings?")
    # each rank keeps its shard of the full tensor (set_state_dict with strict=False tried to
    # copy plain tensors into the frozen DTensors the file does not hold; torch 2.13)
    with torch.no_grad():
        for n, p in trainable:
            p.copy_(distribute_tensor(weights[n].to(p.dtype), p.device_mesh, p.placements))
    st = torch.load(ckpt_dir / "optimizer.pt", weights_only=True)
    set_optimizer_state_dict(model, opt, st["optimizer"], options=StateDictOptions(full_state_dict=True))
    sched.load_state_dict(st["scheduler"])
    logger.info("resuming from step %d (FSDP)", state["step"])
    return int(state["step"])
