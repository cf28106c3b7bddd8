"""Training mechanics every recipe shares (iceburg/recipes/: sft, preference, hpo): the base's
tokenizer and end-of-turn ids, the hardware plan, and `TrainArgs` from the config and the plan.
Opening the run folder and finishing it (save, exports, result.json) are the recipes' own
(`iceburg.recipes.run`)."""

from __future__ import annotations

import math
from pathlib import Path

from ..config import TrainingConfig
from ..errors import ConfigError
from ..run_folder import RunFolder

# Below this many optimizer steps per epoch, small data sets barely train (measured: 3 steps/epoch
# on the 53 surveyor transcripts moved eval loss by 0.1; 8+ steps gave several times more).
MIN_STEPS_PER_EPOCH = 8


def run_tokenizer(path: Path, cfg: TrainingConfig):
    """The base's tokenizer with a chat template, and the end-of-turn ids training supervises."""
    from .encoding import ensure_chat_template, eos_ids
    from .model import generation_config, load_tokenizer

    tokenizer = load_tokenizer(path, cfg)
    added = ensure_chat_template(tokenizer)
    return tokenizer, eos_ids(tokenizer, generation_config(path)), added


def plan_run(path: Path, cfg: TrainingConfig, examples: list, world_size: int = 1):
    """The hardware plan, from the config on the meta device before any weight is loaded. Small
    data sets need enough optimizer steps: the effective batch is capped so an epoch has at
    least MIN_STEPS_PER_EPOCH steps when the data allows (counted in packed rows)."""
    from ..hardware import configure_cpu_allocator, fixed_mmap_threshold_needed, plan_training
    from ..hardware.planner import MEMORY_HEADROOM

    tokens = sum(len(e.input_ids) for e in examples)
    rows = tokens / cfg.max_seq_length if cfg.packing else len(examples)
    supervised = sum(e.supervised for e in examples) / max(1, tokens)  # sizes the logits (planner)
    # GRPO's planning examples are prompt + a full answer: the longest prompt sizes its prompt part
    longest_prompt = max((len(e.input_ids) - e.supervised for e in examples), default=None) \
        if cfg.objective == "grpo" else None
    plan = plan_training(Path(path), cfg, num_examples=max(1, math.ceil(rows / MIN_STEPS_PER_EPOCH)),
                         world_size=world_size, supervised_fraction=supervised, prompt_length=longest_prompt)
    if plan.device == "cpu" and plan.cpu_allocator:  # torch on CPU (an MLX plan has no glibc choice)
        budget = int(plan.available_bytes * MEMORY_HEADROOM / max(1, world_size))
        if fixed_mmap_threshold_needed(plan.estimated_peak_bytes, budget):
            configure_cpu_allocator()  # the planner's CPU estimate assumes freed memory is returned
            plan.notes.append("freed memory is returned to the OS (fixed mmap threshold): twice the "
                              "estimate would not fit, and the estimate assumes it")
        else:
            plan.notes.append("glibc's allocator keeps freed memory for reuse (faster steps, up to ~2x the "
                              "estimated peak, which fits)")
    from .accel import gpu_option_problems

    problems = gpu_option_problems(cfg.attn_implementation, bool(cfg.use_liger), plan.device)
    if problems:
        raise ConfigError(problems)
    return plan


def train_args(cfg: TrainingConfig, plan, tokenizer, eos: set[int], run: RunFolder, world_size: int = 1):
    from .trainer import TrainArgs

    return TrainArgs(
        epochs=cfg.epochs, max_steps=cfg.max_steps,
        learning_rate=cfg.resolved_learning_rate(plan.model.get("hidden_size")),
        warmup_ratio=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
        micro_batch_size=plan.micro_batch_size, grad_accum=plan.gradient_accumulation_steps,
        max_length=cfg.max_seq_length, packing=cfg.packing, eval_steps=cfg.eval_steps,
        save_steps=cfg.save_steps, seed=cfg.seed, device=plan.device, precision=plan.precision,
        pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos),
        checkpoint_dir=run.checkpoint, resume=cfg.resume, world_size=world_size,
        varlen=cfg.attn_implementation.startswith("flash_attention"), liger=bool(cfg.use_liger))
