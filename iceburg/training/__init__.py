"""Public API, as in the original design:

    from iceburg.training import (get_m4_optimizer, TruthFilter, EmergenceProcessor,
                                  ICEBURGFineTuner, TrainingConfig, ModelType)

Names resolve lazily so `import iceburg.training` stays cheap (and `ICEBURGFineTuner`, which lives
in `iceburg.recipes`, a layer above, is reached without an upward import).
"""

from __future__ import annotations

import importlib
from typing import Any

from ..config import ModelType, TrainingConfig

_LAZY = {
    "get_m4_optimizer": "iceburg.hardware",
    "TruthFilter": "iceburg.truth",
    "EmergenceProcessor": "iceburg.emergence",
    "ICEBURGFineTuner": "iceburg.recipes.finetuner",  # the recipes sit above training (layers)
    "TrainingResult": "iceburg.training.result",
}

__all__ = ["ModelType", "TrainingConfig", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'iceburg.training' has no attribute {name!r}")
