"""`TrainingResult` (what a finished run measured) and `MetricsLog` (metrics.jsonl)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainingResult:
    """What a finished run measured. Only produced when training really completed."""

    model_name: str
    run_dir: Path
    adapter_dir: Path
    merged_dir: Path
    base_model: dict[str, Any]
    train_loss: float
    eval_loss_before: float
    eval_loss_after: float
    eval_history: list[tuple[int, float]]
    steps: int
    supervised_tokens: int
    total_tokens: int
    records_read: int
    records_rejected: int
    train_examples: int
    eval_examples: int
    truncated_examples: int
    training_seconds: float
    wall_seconds: float
    plan: dict[str, Any] = field(default_factory=dict)
    resumed_from_step: int = 0
    learning_rate: float = 0.0
    export_paths: dict[str, list[str]] = field(default_factory=dict)
    export_reports: dict[str, Any] = field(default_factory=dict)
    # Training finished but an export failed: the message; `--export-only RUN` can finish it.
    export_error: str | None = None
    success: bool = True
    objective: str = "sft"
    # Preference runs: held-out metrics before/after (reward margin and accuracy, log-probs) and
    # the data counts (pairs, mining reasons); docs/preference.md.
    preference: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("run_dir", "adapter_dir", "merged_dir"):
            d[k] = str(d[k])
        return d


class MetricsLog:
    """A training callback writing one JSON line per step and per evaluation."""

    def __init__(self, path: Path):
        self.path = path
        self._fh = open(path, "a", encoding="utf-8")

    def _write(self, obj: dict) -> None:
        self._fh.write(json.dumps(obj) + "\n")
        self._fh.flush()

    def on_batch(self, example_ids: list[str]) -> None:
        pass

    def on_step(self, step: int, metrics: dict) -> None:
        self._write({"type": "train", **metrics})

    def on_eval(self, step: int, eval_loss: float) -> None:
        self._write({"type": "eval", "step": step, "eval_loss": eval_loss})

    def close(self) -> None:
        self._fh.close()


def as_dict(obj: Any) -> Any:
    if obj is None:
        return None
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    return obj
