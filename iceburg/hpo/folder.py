"""`StudyFolder`: every file name of a hyperparameter-search folder, in one place.

    runs/<model type>-hpo-<timestamp>/
      study.json            study name, storage, N, the base config
      study.journal         Optuna journal storage (default; --hpo-storage picks another)
      base_model.json       how the base model was resolved (once for all trials)
      data_stats.json       counts of every pipeline stage (the pipeline runs once)
      rejects.jsonl         every record the pipeline dropped (trial folders hold encode drops)
      trials/trial-NNNN/    one normal run folder per trial (iceburg/run_folder.py)
      trials.csv, trials.md every trial: state, eval loss, parameters, last step, wall time
      best_config.yaml      the best trial's configuration, usable with --config
      optimization_history.png, param_importances.png
      report.md             the study report (summary, search ranges, table, plots)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import IceburgError


@dataclass(frozen=True)
class StudyFolder:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    study_json = property(lambda self: self.root / "study.json")
    journal = property(lambda self: self.root / "study.journal")
    base_model = property(lambda self: self.root / "base_model.json")
    data_stats = property(lambda self: self.root / "data_stats.json")
    rejects = property(lambda self: self.root / "rejects.jsonl")
    trials = property(lambda self: self.root / "trials")
    table_csv = property(lambda self: self.root / "trials.csv")
    table_md = property(lambda self: self.root / "trials.md")
    best_config = property(lambda self: self.root / "best_config.yaml")
    history_png = property(lambda self: self.root / "optimization_history.png")
    importance_png = property(lambda self: self.root / "param_importances.png")
    report = property(lambda self: self.root / "report.md")

    def prepare(self, resume: bool) -> None:
        """Create the folder for a new study, or check there is one to continue."""
        if resume and not self.study_json.exists():
            raise IceburgError(f"--hpo-resume: {self.root} holds no study (no study.json); check "
                               "--output-dir/--output-name or drop --hpo-resume to start one")
        if not resume and self.root.exists() and any(self.root.iterdir()) and not self._failed_start():
            raise IceburgError(f"study folder {self.root} exists; pass --hpo-resume to continue (or "
                               "join) that study, or choose another --output-name")
        self.trials.mkdir(parents=True, exist_ok=True)

    def _failed_start(self) -> bool:
        """Only what a start that failed before its first trial leaves (e.g. a data error): a new
        start may reuse the folder instead of asking to delete it."""
        ours = {"trials", "base_model.json", "data_stats.json", "rejects.jsonl"}
        return (not self.study_json.exists() and not (self.trials.is_dir() and any(self.trials.iterdir()))
                and all(p.name in ours or p.name.startswith(".") for p in self.root.iterdir()))

    def write_json(self, path: Path, obj: Any) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(obj, indent=2, default=str), encoding="utf-8")
        os.replace(tmp, path)

    def write_text(self, path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
