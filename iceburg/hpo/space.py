"""The search space: which config keys a trial varies, and over which per-type ranges.

Ranges are centred on what a plain run would use, so the search explores around the recipe's
defaults rather than replacing them (docs/hpo.md has the table):

- learning_rate: log-uniform in [lr0 / 4, lr0 * 4], lr0 = the width-scaled default of
  `TrainingConfig.resolved_learning_rate` (2e-4 at hidden 4096). A factor of 4 each way covers
  the spread of LoRA rates reported for one model size (QLoRA, Dettmers et al. 2023, App. B:
  1e-4 .. 2e-4 by size; the LoRA paper's GPT-2 runs 2e-4; PEFT examples up to 1e-3).
- lora_r: the model type's rank from the original design's table (RECOMMENDED: 16 for
  surveyor/dissident, 32 for base/synthesist, 64 for oracle) halved, kept or doubled, never above
  the base's hidden size.
- lora_alpha: alpha / r in {1, 2, 4} (the original table uses 2; rsLoRA-style scaling argues
  larger ratios for larger ranks, Kalajdzievski 2023).
- lora_dropout: uniform [0, 0.1] (the LoRA/QLoRA papers use 0.05-0.1).
- epochs in [1, 2 * epochs] or, when the config fixes --max-steps S, max_steps in [S / 2, S].
- curriculum_strategy: every strategy (only with emergence weighting on).
- max_seq_length: powers of two from 256 up to the config's --max-seq-length (the memory ceiling
  the user chose); fixed when only one fits.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ..config import CURRICULUM_STRATEGIES, RECOMMENDED, TrainingConfig

# Search keys in a stable order (the table's columns, the YAML's keys).
SEARCHED = ("learning_rate", "lora_r", "lora_alpha", "lora_dropout", "epochs", "max_steps",
            "curriculum_strategy", "max_seq_length")
MIN_SEARCH_SEQ = 256  # below this the sample transcripts are mostly truncated (encode stage)


def lora_r_choices(cfg: TrainingConfig, hidden_size: int | None) -> list[int]:
    r0 = RECOMMENDED[cfg.model_type]["lora_r"]
    choices = [r for r in (r0 // 2, r0, r0 * 2) if not hidden_size or r <= hidden_size]
    return choices or [min(r0, hidden_size or r0)]


def seq_choices(cfg: TrainingConfig) -> list[int]:
    out = [2 ** k for k in range(8, 16) if MIN_SEARCH_SEQ <= 2 ** k <= cfg.max_seq_length]
    return out or [cfg.max_seq_length]


def ranges(cfg: TrainingConfig, hidden_size: int | None) -> dict[str, Any]:
    """The per-key range for this config and base (for the docs table and the study report)."""
    lr0 = cfg.resolved_learning_rate(hidden_size)
    out: dict[str, Any] = {
        "learning_rate": (lr0 / 4, min(lr0 * 4, 0.5)),
        "lora_r": lora_r_choices(cfg, hidden_size),
        "lora_alpha": "alpha / r in [1, 2, 4]",
        "lora_dropout": (0.0, 0.1),
    }
    if cfg.max_steps is not None:
        out["max_steps"] = (max(1, math.ceil(cfg.max_steps / 2)), cfg.max_steps)
    else:
        out["epochs"] = (1, 2 * cfg.epochs)
    if cfg.use_emergence_weighting:
        out["curriculum_strategy"] = list(CURRICULUM_STRATEGIES)
    out["max_seq_length"] = seq_choices(cfg)
    return out


def suggest(trial, cfg: TrainingConfig, hidden_size: int | None) -> dict[str, Any]:
    """Ask the trial for one value of each searched key; returns the config overrides."""
    rng = ranges(cfg, hidden_size)
    p: dict[str, Any] = {
        "learning_rate": trial.suggest_float("learning_rate", *rng["learning_rate"], log=True),
        "lora_r": trial.suggest_categorical("lora_r", rng["lora_r"]),
        "lora_dropout": trial.suggest_float("lora_dropout", *rng["lora_dropout"]),
    }
    p["lora_alpha"] = p["lora_r"] * trial.suggest_categorical("lora_alpha_ratio", [1, 2, 4])
    for key in ("max_steps", "epochs"):
        if key in rng:
            p[key] = trial.suggest_int(key, *rng[key])
    if "curriculum_strategy" in rng:
        p["curriculum_strategy"] = trial.suggest_categorical("curriculum_strategy", rng["curriculum_strategy"])
    seq = rng["max_seq_length"]
    p["max_seq_length"] = trial.suggest_categorical("max_seq_length", seq) if len(seq) > 1 else seq[0]
    return p


def apply(cfg: TrainingConfig, overrides: dict[str, Any], **fixed: Any) -> TrainingConfig:
    """A copy of `cfg` with a trial's values (and `fixed` keys such as the run folder) set."""
    unknown = set(overrides) - set(SEARCHED)
    if unknown:
        raise KeyError(f"not a searched key: {sorted(unknown)}")
    return dataclasses.replace(cfg, **overrides, **fixed)
