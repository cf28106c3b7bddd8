"""Hardware stage: detect the device and plan a training configuration that fits it.

    from iceburg.hardware import get_m4_optimizer, plan_training
    hw = get_m4_optimizer().detect_hardware()
    plan = plan_training(model_dir, config, hw)

("M4 Optimizer" is the original design's name; it plans for CUDA, Apple MPS/MLX and CPU alike.)
"""

from __future__ import annotations

from pathlib import Path

from ..config import EMBEDDED_BASE, TrainingConfig
from .detect import (CudaDevice, HardwareInfo, MpsDevice, SystemDescription, describe_hardware,
                     probe_system)
from .memory import MemoryEstimate, configure_cpu_allocator, estimate_training_memory, fixed_mmap_threshold_needed
from .model_shape import ModelShape, read_model_shape
from .planner import TrainingPlan, plan_training, recommend_lora, resolve_targets


class M4Optimizer:
    """Detects hardware once per call; `system` injects a machine description (tests, what-ifs)."""

    def __init__(self, prefer_mlx: bool = False, system: SystemDescription | None = None):
        self.prefer_mlx = prefer_mlx
        self.system = system

    def detect_hardware(self, model_dir: str | Path | None = None, config: TrainingConfig | None = None,
                        device: str | None = None) -> HardwareInfo:
        """The device to train on and the micro-batch planned for `model_dir` (default: the config's
        base model, iceburg-tiny by default, when its shape can be read locally)."""
        system = self.system or probe_system()
        hw = describe_hardware(system, self.prefer_mlx, device or (config.device if config else None))
        given = config is not None
        config = config or TrainingConfig()
        label = (config.base_model if model_dir is None else f"{config.base_model} ({model_dir})" if given
                 else str(model_dir))
        model_dir = model_dir if model_dir is not None else _known_base(config)
        if model_dir is None:
            hw.notes.append(f"recommended micro-batch: not planned for {config.base_model} (plan_training "
                            "reads a local model folder; pass its path)")
        else:
            hw.recommended_batch_size = plan_training(model_dir, config, hw).micro_batch_size
            hw.notes.append(f"recommended micro-batch planned for {label} at --max-seq-length "
                            f"{config.max_seq_length}")
        return hw

    def plan(self, model_dir: str | Path, config: TrainingConfig, num_examples: int | None = None) -> TrainingPlan:
        return plan_training(model_dir, config, self.detect_hardware(config=config), num_examples)


def _known_base(config: TrainingConfig) -> Path | None:
    """The folder whose shape the planner reads for `config.base_model` without resolving it over
    the network: the embedded default (config only), or a local HF folder."""
    if config.base_model == EMBEDDED_BASE:
        from ..models.tiny import shape_folder

        return shape_folder()
    folder = Path(config.base_model).expanduser()
    return folder if (folder / "config.json").is_file() else None


def get_m4_optimizer(prefer_mlx: bool = False, system: SystemDescription | None = None) -> M4Optimizer:
    return M4Optimizer(prefer_mlx=prefer_mlx, system=system)


__all__ = ["CudaDevice", "HardwareInfo", "M4Optimizer", "MemoryEstimate", "ModelShape", "MpsDevice",
           "SystemDescription", "TrainingPlan", "configure_cpu_allocator", "fixed_mmap_threshold_needed",
           "describe_hardware", "estimate_training_memory", "get_m4_optimizer", "plan_training", "probe_system", "read_model_shape", "recommend_lora",
           "resolve_targets"]
