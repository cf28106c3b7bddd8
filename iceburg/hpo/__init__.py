"""Hyperparameter search over the recipe (`iceburg-train --hpo N`), on Optuna; docs/hpo.md."""

from .folder import StudyFolder
from .report import StudyReport
from .space import SEARCHED, ranges
from .study import run_study

__all__ = ["run_study", "StudyReport", "StudyFolder", "SEARCHED", "ranges"]
