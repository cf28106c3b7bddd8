"""Hardware stage: detect the device and plan a training configuration that fits it.

    from iceburg.hardware import get_m4_optimizer, plan_training
    hw = get_m4_optimizer().detect_hardware()
    plan = plan_training(model_dir, config, hw)

("M4 Optimizer" is the original design's name; it plans for CUDA, Apple MPS/MLX and CPU alike.)
"""

from __future__ import annotations

from pathlib import Path

from ..config import TrainingConfig
from .detect import (CudaDevice, HardwareInfo, MpsDevice, SystemDescription, describe_hardware,
                     probe_system)
from .memory import MemoryEstimate, configure_cpu_allocator, estimate_training_memory
from .model_shape import ModelShape, read_model_shape
from .planner import TrainingPlan, plan_training, recommend_lora, resolve_targets


class M4Optimizer:
    """Detects hardware once per call; `system` injects a machine description (tests, what-ifs)."""

    def __init__(self, prefer_mlx: bool = False, system: SystemDescription | None = None):
        self.prefer_mlx = prefer_mlx
        self.system = system

    def detect_hardware(self, model_dir: str | Path | None = None, config: TrainingConfig | None = None,
                        device: str | None = None) -> HardwareInfo:
        """The device to train on; with `model_dir`, also the micro-batch planned for that model."""
        system = self.system or probe_system()
        hw = describe_hardware(system, self.prefer_mlx, device or (config.device if config else None))
        if model_dir is not None:
            hw.recommended_batch_size = plan_training(model_dir, config or TrainingConfig(), hw).micro_batch_size
        return hw

    def plan(self, model_dir: str | Path, config: TrainingConfig, num_examples: int | None = None) -> TrainingPlan:
        return plan_training(model_dir, config, self.detect_hardware(config=config), num_examples)


def get_m4_optimizer(prefer_mlx: bool = False, system: SystemDescription | None = None) -> M4Optimizer:
    return M4Optimizer(prefer_mlx=prefer_mlx, system=system)


__all__ = ["CudaDevice", "HardwareInfo", "M4Optimizer", "MemoryEstimate", "ModelShape", "MpsDevice",
           "SystemDescription", "TrainingPlan", "configure_cpu_allocator",
           "describe_hardware", "estimate_training_memory", "get_m4_optimizer", "plan_training", "probe_system", "read_model_shape", "recommend_lora",
           "resolve_targets"]
