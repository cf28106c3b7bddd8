"""Choose micro-batch, accumulation, checkpointing, precision, QLoRA and LoRA settings that fit.

The planner searches the settings from fastest to most frugal and keeps the first whose
estimated peak (`memory.estimate_training_memory`, computed from the real model's shape) fits
the memory the device has free:

1. precision: the configured one, else the best the device supports (bf16 > fp16; fp32 on CPU);
2. without gradient checkpointing, the largest power-of-two micro-batch up to the effective batch
   (on CPU: up to the smallest one with CPU_SATURATING_TOKENS tokens, the fastest there);
3. with gradient checkpointing (about 33% more compute: one extra forward, Chen et al. 2016);
4. with bitsandbytes (CUDA or CPU), QLoRA (4-bit NF4 weights), as in QLoRA's recipe.

Values the user set explicitly are kept as they are; if they do not fit, the planner says so
instead of silently changing them. When nothing fits, it stops before any weights are loaded.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import RECOMMENDED, ModelType, TrainingConfig
from ..errors import IceburgError
from .detect import HardwareInfo
from .memory import DYNAMIC_HEAP_FACTOR, MemoryEstimate, estimate_training_memory, fixed_mmap_threshold_needed
from .model_shape import ModelShape, read_model_shape

logger = logging.getLogger(__name__)

# Default effective batch (sequences per optimizer step): QLoRA's recipe used 16 for its 7B-13B
# models (Dettmers et al. 2023, appendix B.2).
DEFAULT_EFFECTIVE_BATCH = 16
MAX_MICRO_BATCH = 64
# Share of the free memory the plan may use: the rest covers allocator fragmentation (CUDA's
# caching allocator) and other processes on the machine. Our choice; the CPU figures in
# docs/hardware.md were within this margin.
MEMORY_HEADROOM = 0.85
# Below 1B parameters the table's ranks are scaled by sqrt(params / 1B); the table was written
# for 3B-7B bases. LoRA paper (Hu et al. 2021, table 6): ranks of 1-8 already match larger ranks,
# so small models lose little and the adapters stay proportionate to the layers. Our rule.
LORA_FULL_RANK_PARAMS = 1e9
MIN_LORA_R = 8


@dataclass
class TrainingPlan:
    device: str
    precision: str  # "fp32" | "bf16" | "fp16"
    micro_batch_size: int
    gradient_accumulation_steps: int
    gradient_checkpointing: bool
    use_qlora: bool
    lora_r: int
    lora_alpha: int
    lora_target_modules: list[str]
    estimated_peak_bytes: int
    notes: list[str] = field(default_factory=list)
    available_bytes: int = 0
    memory: dict[str, int] = field(default_factory=dict)  # the estimate, term by term
    model: dict[str, Any] = field(default_factory=dict)  # parameter count, shape, projection names
    world_size: int = 1  # data-parallel processes; micro-batch and accumulation are per process
    # CPU: "glibc default" (faster, peak ~ memory["glibc_total"]) or "fixed mmap threshold" (peak ~ the
    # estimate); run_parts.plan_run applies it with the same test (memory.fixed_mmap_threshold_needed)
    cpu_allocator: str = ""

    @property
    def effective_batch_size(self) -> int:
        """Rows per optimizer step over all processes (the global batch)."""
        return self.micro_batch_size * self.gradient_accumulation_steps * self.world_size

    @property
    def expected_peak_bytes(self) -> int:
        """The peak the run should reach with the allocator it uses: under glibc's default (CPU) the
        estimate plus the heap glibc keeps (`memory["glibc_total"]`), else `estimated_peak_bytes`.
        Measured for the README main command: 13,676 MiB vs 13,215 MiB (+3.5%, docs/using.md)."""
        if self.cpu_allocator == "glibc default" and "glibc_total" in self.memory:
            return self.memory["glibc_total"]
        return self.estimated_peak_bytes

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["effective_batch_size"] = self.effective_batch_size
        d["expected_peak_bytes"] = self.expected_peak_bytes
        return d


def recommend_lora(model_type: ModelType, shape: ModelShape) -> tuple[int, int]:
    """(r, alpha) from the original per-type table, scaled down for bases under 1B parameters."""
    rec = RECOMMENDED[model_type]
    r = rec["lora_r"]
    if shape.param_count < LORA_FULL_RANK_PARAMS:
        scaled = r * math.sqrt(shape.param_count / LORA_FULL_RANK_PARAMS)
        r = max(MIN_LORA_R, 2 ** round(math.log2(max(scaled, 1))))
    r = min(r, max(MIN_LORA_R, shape.hidden_size // 8))
    return r, r * rec["lora_alpha"] // rec["lora_r"]  # keep the table's alpha/r ratio (2)


def resolve_targets(shape: ModelShape, requested: list[str]) -> list[str]:
    """Projection names to adapt: all the model has, or the requested ones if the model has them."""
    available = shape.linear_names
    if not requested:
        return available
    unknown = [t for t in requested if t not in available]
    if unknown:
        raise IceburgError(f"lora_target_modules (--lora-target-modules): {', '.join(unknown)} not in "
                           f"this {shape.architecture}; its projections are: {', '.join(available)} "
                           "(or leave it empty to adapt them all)")
    return list(requested)


def _precision(config: TrainingConfig, hw: HardwareInfo) -> str:
    if config.precision is None:
        return hw.best_precision()
    if config.precision not in hw.supported_precisions:
        raise IceburgError(f"precision (--precision): {config.precision} is not supported on "
                           f"{hw.device_kind} ({hw.device_name}); it supports "
                           f"{', '.join(hw.supported_precisions)}")
    return config.precision


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


# Devices bitsandbytes 0.50.2 runs 4-bit NF4 layers on: CUDA, and CPU (measured here: a QLoRA run
# on iceburg-tiny trains on CPU, tests/training/test_qlora.py). Apple MPS/MLX are not among them.
QLORA_DEVICES = ("cuda", "cpu")


def _qlora_options(config: TrainingConfig, hw: HardwareInfo) -> list[bool]:
    if config.use_qlora and hw.device_kind not in QLORA_DEVICES:
        raise IceburgError(f"use_qlora (--qlora): 4-bit QLoRA (bitsandbytes) runs on CUDA or CPU; this "
                           f"machine trains on {hw.device_kind}; drop --qlora or pass --device cpu")
    if config.use_qlora and not hw.bitsandbytes_available:
        raise IceburgError("use_qlora (--qlora): bitsandbytes is not installed; install it with: "
                           "pip install 'iceburg[qlora]'")
    if config.use_qlora is not None:
        return [config.use_qlora]
    return [False, True] if hw.device_kind in QLORA_DEVICES and hw.bitsandbytes_available else [False]


def plan_training(model_dir: str | Path, config: TrainingConfig, hw: HardwareInfo | None = None,
                  num_examples: int | None = None, world_size: int = 1,
                  supervised_fraction: float = 1.0, prompt_length: int | None = None) -> TrainingPlan:
    """Settings for training `model_dir` with `config` on `hw` (detected when None).

    `num_examples` (packed rows or examples, when known) caps the effective batch so one epoch
    has at least one optimizer step. `supervised_fraction` (share of tokens carrying loss, known
    once the data is encoded; 1.0 = upper bound) sizes the logits our loop computes. `prompt_length`
    (GRPO: the longest prompt in tokens, when known) sizes GRPO's prompt part.
    Raises IceburgError when nothing fits.

    `world_size` data-parallel processes share each step: the effective (global) batch is
    micro x accumulation x world_size, and on CPU the processes share the machine's memory, so
    each may plan with 1/world_size of it (on GPUs each process has its own device).
    """
    if hw is None:
        from .detect import describe_hardware, probe_system

        hw = describe_hardware(probe_system(), device=config.device)
    shape = read_model_shape(model_dir, config.trust_remote_code)
    r, alpha = _lora_rank(config, shape)
    targets = resolve_targets(shape, config.lora_target_modules)
    precision = _precision(config, hw)
    notes = [f"{shape.architecture}: {shape.param_count / 1e6:.1f}M parameters, LoRA r={r} alpha={alpha} "
             f"on {', '.join(targets)}"]
    effective, micros = _batch_options(config, num_examples, world_size)
    micros = _cpu_speed_order(micros, config, hw)
    gcs = [config.gradient_checkpointing] if config.gradient_checkpointing is not None else [False, True]
    shared = world_size if hw.device_kind == "cpu" else 1
    budget = int(hw.available_memory * MEMORY_HEADROOM / shared)

    loop = _loop(config)
    if loop == "mlx":  # the MLX loop has no checkpointing or QLoRA (config.py refuses --qlora with mlx)
        gcs = [False]

    def estimate(micro: int, gc: bool, qlora: bool) -> MemoryEstimate:
        return estimate_training_memory(shape, micro_batch=micro, seq_len=config.max_seq_length,
                                        precision=precision, lora_r=r, targets=targets,
                                        gradient_checkpointing=gc, qlora=qlora,
                                        lora_dropout=config.lora_dropout, device_kind=hw.device_kind,
                                        trust_remote_code=config.trust_remote_code,
                                        supervised_fraction=supervised_fraction, world_size=world_size,
                                        loop=loop, packing=config.packing, grpo_group=config.grpo_group,
                                        completion_length=config.max_completion_length, prompt_length=prompt_length)

    for qlora in ([False] if loop == "mlx" else _qlora_options(config, hw)):
        # the allocator choice is glibc's under torch; MLX keeps its own buffer cache
        for fast_alloc in ([True, False] if hw.device_kind == "cpu" and loop != "mlx" else [False]):
            # glibc's allocator is tried without checkpointing only (its recompute cost is not
            # in the measured cost model); checkpointing comes with the fixed threshold, as before
            for gc in ([g for g in gcs if not g] if fast_alloc else gcs):
                for micro in micros:
                    est = estimate(micro, gc, qlora)
                    fits = (not fixed_mmap_threshold_needed(est.total, budget) if fast_alloc
                            else est.training_bytes <= budget)
                    if fits:
                        return _plan(hw, config, precision, micro, effective, world_size, gc, qlora, r, alpha,
                                     targets, est, notes, budget, shared, shape, fast_alloc)
    raise _nothing_fits(shape, config, hw, estimate(micros[-1], gcs[-1], _qlora_options(config, hw)[-1]),
                        budget, model_dir)


def _loop(config: TrainingConfig) -> str:
    """Which training loop's memory to estimate (hardware/memory.py `loop`)."""
    if config.objective in PREFERENCE_OBJECTIVES:
        return "preference"
    mlx = config.resolved_backend() == "mlx"
    if config.objective == "grpo" and not mlx:
        return "grpo"
    # GRPO on mlx samples and scores as training/mlx_grpo.py does; only SFT's MLX step is probed, and
    # MLX's GRPO step is estimated as SFT's torch loop (not measured against it)
    return "mlx" if config.objective == "sft" and mlx else "sft"


# Objectives trained by training/preference.py (padded chosen/rejected rows, logits at every position):
# the memory estimate models that loop (hardware/memory.py, loop="preference").
PREFERENCE_OBJECTIVES = ("dpo", "orpo", "kto")


# CPU cost model, measured by bench/memory_planner.py (bench/results/memory_planner_smollm2_grid.md;
# SmolLM2-135M shape, LoRA r16 on every projection, iceburg's loop, 2 threads, load 1.3-2.0):
# tokens/s of a step by micro-batch x 512 tokens. The micro-batch size hardly matters; the allocator
# does (glibc's default keeps freed activation memory for reuse, the fixed threshold page-faults it
# back every step). So on CPU the planner first looks for settings whose peak fits under glibc's
# allocator, and only then falls back to the fixed threshold (the slower, smaller footprint).
CPU_COST_MODEL = {"fixed mmap threshold": {1: 150, 2: 156, 4: 155, 8: 156},
                  "glibc default": {2: 238, 4: 254, 8: 259}}
# Tokens per micro-batch from which a CPU step's tokens/s stops rising: SmolLM2-135M (hidden 576)
# 1,024 tokens ran 6% below 2,048 and 4,096 within 2% of it (CPU_COST_MODEL, glibc); on the real
# surveyor data 4 x 512 (x 2 accumulation) was faster than 8 x 512 in all three same-sitting rounds
# (bench/results/training_throughput*.md: 212 / 194 / 201 vs 198 / 183 / 186 supervised tok/s); a
# 1B model is flat from 512 tokens (35 tok/s at 1 x 512, 1 x 1024 and 2 x 1024, docs/hardware.md).
# Above it a bigger micro-batch only adds memory (and first-touch page faults), so on CPU the
# planner takes the smallest micro-batch with this many tokens and accumulates the rest.
CPU_SATURATING_TOKENS = 2048


def _cpu_speed_order(micros: list[int], config: TrainingConfig, hw: HardwareInfo) -> list[int]:
    """Micro-batches to try, fastest first. CPU supervised training with accumulation free to
    choose: the smallest with CPU_SATURATING_TOKENS tokens, then smaller ones; elsewhere the largest
    first (GPUs gain from bigger batches; an explicit --batch-size or --gradient-accumulation-steps is
    kept; the preference objectives and GRPO were not measured under the rule, and GRPO samples its
    answers a micro-batch at a time, where more rows per decode step are faster)."""
    if (hw.device_kind != "cpu" or config.batch_size or config.gradient_accumulation_steps
            or config.objective != "sft"):
        return micros
    enough = [m for m in micros if m * config.max_seq_length >= CPU_SATURATING_TOKENS]
    preferred = min(enough) if enough else micros[0]
    return [m for m in micros if m <= preferred]


def _plan(hw: HardwareInfo, config: TrainingConfig, precision: str, micro: int, effective: int, world_size: int,
          gc: bool, qlora: bool, r: int, alpha: int, targets: list[str], est: MemoryEstimate, notes: list[str],
          budget: int, shared: int, shape: ModelShape, fast_alloc: bool) -> TrainingPlan:
    accum = config.gradient_accumulation_steps or max(1, effective // (micro * world_size))
    if qlora:
        notes.append(f"full {precision} weights do not fit in {_gib(budget)}; using 4-bit QLoRA")
    if gc and config.gradient_checkpointing is None:
        notes.append("gradient checkpointing on: activations of micro-batch 1 do not fit without it")
    if hw.device_kind == "cpu" and not config.batch_size and config.objective == "sft":
        notes.append(f"micro-batch {micro} ({micro * config.max_seq_length:,} tokens) x {accum} accumulation: on CPU "
                     f"tokens/s stops rising at about {CPU_SATURATING_TOKENS:,} tokens per micro-batch (measured, "
                     "hardware/planner.py CPU_SATURATING_TOKENS), so the smallest micro-batch that reaches it (or "
                     "the largest that fits) is the fastest; more rows would only add memory"
                     + (" (measured on torch's loop; the MLX step was not timed under this rule)"
                        if est.loop == "mlx" else ""))
    if config.objective in PREFERENCE_OBJECTIVES:
        notes.append(f"{config.objective}: memory of the preference loop (micro-batch {micro} rows = {max(1, micro // 2)} "
                     "example(s) x 2 sequences - chosen/rejected, or KTO's answer/KL mismatch - padded to the longest, "
                     "logits at every position; hardware/memory.py loop='preference')")
    if est.loop == "grpo":
        notes.append(f"grpo: memory of GRPO's step (micro-batch {micro} rows = {max(1, micro // config.grpo_group)} "
                     f"prompt(s) x {config.grpo_group} answers of up to {config.max_completion_length} tokens; the "
                     "prompt run once, logits at every answer position, the merged sampling copy of the weights "
                     "and the sampling KV cache; hardware/memory.py loop='grpo')")
    if fast_alloc:
        notes.append(f"glibc's allocator: the peak under it (up to {DYNAMIC_HEAP_FACTOR:g}x the estimate) fits, "
                     "and it is ~1.6x the fixed mmap threshold's speed (measured, SmolLM2-135M, 2 threads: "
                     "hardware/planner.py CPU_COST_MODEL)")
    notes.append(f"estimated peak {_gib(est.total)} of {_gib(hw.available_memory // shared)} "
                 f"available on {hw.device_kind}" + (f" per process ({world_size} processes)"
                                                     if world_size > 1 else ""))
    if est.loop == "mlx":
        notes.append("MLX step memory measured by MLX on copies of the model cut to 2 and 4 layers "
                     "(hardware/mlx_memory.py); MLX keeps its own buffer cache")
    allocator = ("" if hw.device_kind != "cpu" or est.loop == "mlx" else "glibc default" if fast_alloc
                 else "fixed mmap threshold")
    return TrainingPlan(hw.device_kind, precision, micro, accum, gc, qlora, r, alpha, targets,
                        est.total, notes, hw.available_memory, est.to_dict(), shape.to_dict(), world_size,
                        allocator)


def _lora_rank(config: TrainingConfig, shape: ModelShape) -> tuple[int, int]:
    """(r, alpha): --lora-r / --lora-alpha when given (alpha 2r by default), else recommended."""
    r, alpha = recommend_lora(config.model_type, shape)
    if config.lora_r:
        return config.lora_r, config.lora_alpha or 2 * config.lora_r
    return r, config.lora_alpha or alpha


def _batch_options(config: TrainingConfig, num_examples: int | None, world_size: int) -> tuple[int, list[int]]:
    """(effective global batch, micro-batch sizes to try, largest first)."""
    effective = DEFAULT_EFFECTIVE_BATCH
    if config.batch_size and config.gradient_accumulation_steps:
        effective = config.batch_size * config.gradient_accumulation_steps * world_size
    if num_examples:
        effective = max(1, min(effective, num_examples))
    if config.batch_size:
        return effective, [config.batch_size]
    # With only --gradient-accumulation-steps given, micro x accumulation aims at the effective batch.
    top = min(max(1, effective // ((config.gradient_accumulation_steps or 1) * world_size)), MAX_MICRO_BATCH)
    return effective, [2 ** k for k in range(int(math.log2(top)), -1, -1)]


def _nothing_fits(shape: ModelShape, config: TrainingConfig, hw: HardwareInfo, smallest: MemoryEstimate,
                  budget: int, model_dir: str | Path) -> IceburgError:
    options = [f"a smaller base model (--base-model; this one has {shape.param_count / 1e9:.2f}B parameters)"]
    if hw.device_kind == "cuda" and not hw.bitsandbytes_available:
        options.append("4-bit QLoRA: pip install 'iceburg[qlora]' (bitsandbytes), then --use-qlora")
    elif hw.device_kind == "cpu" and not hw.bitsandbytes_available:
        options.append("4-bit QLoRA: pip install 'iceburg[qlora]' (bitsandbytes), then --qlora")
    elif hw.device_kind not in QLORA_DEVICES:
        options.append("4-bit QLoRA on a CUDA GPU or on the CPU (--device cpu --qlora)")
    if config.max_seq_length > 256:
        options.append(f"a shorter --max-seq-length (now {config.max_seq_length}; try "
                       f"{config.max_seq_length // 2})")
    for flag, value in (("--batch-size", config.batch_size), ("--gradient-checkpointing",
                                                                 config.gradient_checkpointing)):
        if value is not None:
            options.append(f"drop {flag} and let the planner choose")
    terms = ", ".join(f"{k} {_gib(v)}" for k, v in smallest.to_dict().items()
                      if k not in ("total", "lora_params") and v)
    return IceburgError(
        f"{model_dir} does not fit for training on {hw.device_kind} ({hw.device_name}): the smallest "
        f"setting needs {_gib(smallest.training_bytes)} ({terms}), {_gib(hw.available_memory)} is "
        f"available and the plan may use {int(MEMORY_HEADROOM * 100)}% of it ({_gib(budget)}). "
        "Options: " + "; ".join(options))
