"""About how long a plan trains: a CPU time estimate from a measured matmul and a measured efficiency.

`--detect-hardware --base-model B` answers "fits, with which settings, and about how long". The
"how long" is an estimate, stated as one: LoRA training costs about 4N FLOPs per processed token
(forward 2N, backward input-gradients 2N through the frozen weights), and iceburg's CPU loop reaches
a share of this machine's 2048x2048 fp32 matmul rate (the probe) that grows with the model's width.
Measured on the project's 2-core Xeon (AMX), the share of 4N work against the probe taken just before:

- SmolLM2-135M: 46.5% with glibc's allocator (bench/results/training_throughput.md at 73a80fd, issue 26
  run: 128.5 of 276.1 GFLOP/s); the fixed mmap threshold at 0.61x that (planner CPU_COST_MODEL);
- Llama-3.2-1B shape, 1 x 512 (bench/results/hardware_measured.md): 54.8% fixed threshold
  (14.75 s/step at a 313 GFLOP/s probe), 77.0% glibc (10.16 s at 324).

Between the two sizes the share is interpolated in log(parameters); beyond them the nearest is
used (the 3B rows ran at 0.46-0.53 of their probes, inside the probe's own spread). Gradient
checkpointing costs 1.2x per token (measured 1.22x at 1B, 1.17x at 3B; the 6N textbook figure
over-counts), QLoRA's 4-bit CPU path 1.18x fp32 LoRA (1.04x at 1B 1 x 512, 1.18x at 3B 1 x 1024 with
checkpointing). Against the seven 1B/3B fp32 rows, each with its own probe, the estimate is within
-17%..+31%; the 0.4 s probe alone read 241-384 GFLOP/s within that quiet sitting, which bounds how close
any probe-based estimate gets. No GPU efficiency has been measured by this project, so CUDA/MPS get
no time estimate.
"""

from __future__ import annotations

import math
import time

# (parameters, share of the probe per allocator): the two measured sizes (module docstring)
EFFICIENCY_POINTS = ((134.5e6, {"glibc default": 0.465, "fixed mmap threshold": 0.465 * 0.61}),
                     (1.2358e9, {"glibc default": 0.770, "fixed mmap threshold": 0.548}))
CHECKPOINTING_COST = 1.2  # per-token cost of gradient checkpointing's second forward, measured 1.17-1.22x
QLORA_CPU_COST = 1.18  # bitsandbytes' 4-bit CPU path vs fp32 LoRA, measured 1.04-1.18x
SEED_RECORDS = 1000  # the original design's table: "time for 3 epochs of 1000 samples"
SEED_EPOCHS = 3


def matmul_gflops(threads: int | None = None, n: int = 2048, reps: int = 5) -> float:
    """This CPU's fp32 matmul rate (GFLOP/s), measured the way bench/training_throughput.py does."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def cpu_efficiency(param_count: float, allocator: str) -> float | None:
    """The loop's share of the matmul probe at this size (None: an allocator never measured)."""
    (n0, small), (n1, large) = EFFICIENCY_POINTS
    if allocator not in small:
        return None
    t = min(1.0, max(0.0, (math.log(param_count) - math.log(n0)) / (math.log(n1) - math.log(n0))))
    return small[allocator] + t * (large[allocator] - small[allocator])


def estimate_cpu_time(plan: dict, max_seq_length: int, gflops: float) -> dict | None:
    """Seconds per optimizer step and for the seed's 3 epochs of 1,000 full-length records, or None
    where no measured efficiency applies (not CPU, or an allocator never measured)."""
    if plan.get("device", "cpu") != "cpu" or not plan.get("fits", True):
        return None
    n = plan["model"]["param_count"]
    eff = cpu_efficiency(n, plan.get("cpu_allocator") or "glibc default")
    if eff is None:
        return None
    cost = (CHECKPOINTING_COST if plan["gradient_checkpointing"] else 1.0) * (QLORA_CPU_COST if plan.get("use_qlora") else 1.0)
    tok_per_s = eff * gflops * 1e9 / (4 * n * cost)
    step_tokens = plan["micro_batch_size"] * plan["gradient_accumulation_steps"] * plan.get("world_size", 1) * max_seq_length
    extras = (" x1.2 checkpointing" if plan["gradient_checkpointing"] else "") + (" x1.18 QLoRA" if plan.get("use_qlora") else "")
    return {"matmul_gflops": round(gflops, 1), "efficiency": round(eff, 3), "tokens_per_s": round(tok_per_s, 1),
            "seconds_per_step": round(step_tokens / tok_per_s, 1),
            "seed_table_seconds": round(SEED_EPOCHS * SEED_RECORDS * max_seq_length / tok_per_s),
            "basis": f"4N FLOPs/token{extras} at {eff:.1%} of a measured {gflops:.0f} GFLOP/s matmul (efficiency "
                     "measured at SmolLM2-135M and Llama-3.2-1B shapes on a 2-core Xeon, hardware/timing.py); "
                     "full-length records, an estimate, not a measurement at this shape"}
