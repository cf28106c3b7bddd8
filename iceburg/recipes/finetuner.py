"""`ICEBURGFineTuner`: the one-command API of the original design, over the recipes.

    ICEBURGFineTuner(cfg).train()  ->  sft (iceburg/recipes/sft.py), dpo|orpo|kto
                                       (iceburg/recipes/preference.py) or grpo
                                       (iceburg/recipes/grpo.py)  ->  TrainingResult
"""

from __future__ import annotations

import time
from typing import Any, Iterable

from ..config import TrainingConfig
from ..training.result import TrainingResult


class ICEBURGFineTuner:
    """Runs the full recipe for one `TrainingConfig`.

    `callbacks` are extra training callbacks (`on_batch/on_step/on_eval`), e.g. to observe the
    exact order examples reach the model.
    """

    def __init__(self, config: TrainingConfig | None = None, callbacks: Iterable[Any] = ()):
        self.config = config or TrainingConfig()
        self.callbacks = list(callbacks)

    def train(self) -> TrainingResult:
        import torch

        cfg, started = self.config.validate(), time.time()
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        if cfg.continue_from:  # the next version of a run (docs/loop.md)
            from .continual import train_continual

            return train_continual(cfg, self.callbacks, started)
        if cfg.objective == "grpo":  # online RL with verifiable rewards: one process (docs/grpo.md)
            from .grpo import train_grpo_run

            return train_grpo_run(cfg, self.callbacks, started)
        if cfg.objective != "sft":  # preference tuning: one process (docs/preference.md)
            from .preference import train_preference_run

            return train_preference_run(cfg, self.callbacks, started)
        from .sft import train_sft

        return train_sft(cfg, self.callbacks, started)
