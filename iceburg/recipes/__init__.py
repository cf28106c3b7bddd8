"""The recipes wing: each recipe is a short function composing the run folder (`open_run`), the
data pipeline, the training mechanics (`iceburg.training`) and `finish_run` (save, merge, export,
report). docs/ARCHITECTURE.md, "The recipes wing".

- `sft.train_sft(cfg)`: `--objective sft` (torchrun-aware: prepare on rank 0, train everywhere).
- `preference.train_preference_run(cfg)`: `--objective dpo|orpo|kto`.
- `grpo.train_grpo_run(cfg)`: `--objective grpo` (docs/grpo.md).
- `hpo.prepare_study_data` / `hpo.train_trial`: one search trial (the study itself: `iceburg.hpo`).
- `finetuner.ICEBURGFineTuner`: the original one-command API, dispatching on the objective.
- `run`: `open_run`, `run_metrics`, `make_result`, `finish_run`, `export_run`.

Names resolve lazily so `import iceburg.recipes` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ICEBURGFineTuner": "iceburg.recipes.finetuner",
    "train_sft": "iceburg.recipes.sft",
    "train_prepared": "iceburg.recipes.sft",
    "train_preference_run": "iceburg.recipes.preference",
    "train_grpo_run": "iceburg.recipes.grpo",
    "train_trial": "iceburg.recipes.hpo",
    "open_run": "iceburg.recipes.run",
    "finish_run": "iceburg.recipes.run",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'iceburg.recipes' has no attribute {name!r}")
