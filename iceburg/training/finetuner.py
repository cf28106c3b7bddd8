"""Moved: the recipe is `iceburg.recipes` (docs/ARCHITECTURE.md, "The recipes wing").

`from iceburg.training.finetuner import ICEBURGFineTuner, train_prepared, TrainingResult,
MIN_STEPS_PER_EPOCH` keeps working: the recipes sit above `iceburg.training` in the layer contract,
so these names resolve at first use through `importlib` (no import of the upper layer here).
"""

from __future__ import annotations

import importlib
from typing import Any

_MOVED = {
    "ICEBURGFineTuner": "iceburg.recipes.finetuner",
    "train_prepared": "iceburg.recipes.sft",
    "TrainingResult": "iceburg.training.result",
    "MIN_STEPS_PER_EPOCH": "iceburg.training.run_parts",
}

__all__ = list(_MOVED)


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'iceburg.training.finetuner' has no attribute {name!r}")
