"""About how long a plan trains: a CPU time estimate from a measured matmul and a measured efficiency.

`--detect-hardware --base-model B` answers "fits, with which settings, and about how long". The
"how long" is an estimate, stated as one: LoRA training costs about 4N FLOPs per processed token
(forward 2N, backward input-gradients 2N through the frozen weights; +2N with gradient checkpointing's
second forward), and iceburg's CPU loop reached 46.5% of this machine's 2048x2048 fp32 matmul rate at
SmolLM2-135M with glibc's allocator (bench/results/training_throughput.md, issue 26 run: 128.5 of
276.1 GFLOP/s, the bench's own 4N definition). The fixed mmap threshold ran at 0.61x glibc's speed in
the planner's cost model (hardware/planner.py CPU_COST_MODEL: ~153 vs ~250 tok/s). Wider models use
larger matmuls and usually reach a higher share, so at 1B+ shapes this tends to over-estimate time.
No GPU efficiency has been measured by this project, so CUDA/MPS get no time estimate.
"""

from __future__ import annotations

import time

CPU_EFFICIENCY = {"glibc default": 0.465, "fixed mmap threshold": 0.465 * 0.61}
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


def estimate_cpu_time(plan: dict, max_seq_length: int, gflops: float) -> dict | None:
    """Seconds per optimizer step and for the seed's 3 epochs of 1,000 full-length records, or None
    where no measured efficiency applies (not CPU, or QLoRA, whose 4-bit kernels were not measured)."""
    if plan.get("device", "cpu") != "cpu" or plan.get("use_qlora") or not plan.get("fits", True):
        return None
    eff = CPU_EFFICIENCY.get(plan.get("cpu_allocator") or "glibc default")
    if eff is None:
        return None
    n = plan["model"]["param_count"]
    flops_per_token = (6 if plan["gradient_checkpointing"] else 4) * n
    tok_per_s = eff * gflops * 1e9 / flops_per_token
    step_tokens = plan["micro_batch_size"] * plan["gradient_accumulation_steps"] * plan.get("world_size", 1) * max_seq_length
    return {"matmul_gflops": round(gflops, 1), "efficiency": round(eff, 3), "tokens_per_s": round(tok_per_s, 1),
            "seconds_per_step": round(step_tokens / tok_per_s, 1),
            "seed_table_seconds": round(SEED_EPOCHS * SEED_RECORDS * max_seq_length / tok_per_s),
            "basis": f"{'6' if plan['gradient_checkpointing'] else '4'}N FLOPs/token at {eff:.1%} of a measured "
                     f"{gflops:.0f} GFLOP/s matmul (efficiency measured at SmolLM2-135M, hardware/timing.py); "
                     "full-length records, an estimate, not a measurement at this shape"}
