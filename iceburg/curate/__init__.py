"""Curation on an existing engine: the truth filter, global dedup and emergence scoring as
datatrove pipeline steps (docs/curation.md).

`curate(cfg)` is `iceburg-train --filter-only --curate-tasks N [--curate-workers W]` (datatrove's
local executor); `curation_stages(spec, tasks)` gives the same steps for its Slurm or Ray executors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import TrainingConfig
from ..errors import MissingDependencyError


def _require_datatrove() -> None:
    import importlib.util

    if importlib.util.find_spec("datatrove") is None:
        raise MissingDependencyError("datatrove (--curate-tasks)", "pip install 'iceburg[curate]'")


def curate(cfg: TrainingConfig, out_dir: Path | None = None) -> dict[str, Any]:
    _require_datatrove()
    from .run import curate as run

    return run(cfg, out_dir)


def curation_stages(spec: Any, tasks: int) -> list[tuple[list[Any], int]]:
    _require_datatrove()
    from .run import curation_stages as stages

    return stages(spec, tasks)


__all__ = ["curate", "curation_stages"]
