"""`RunFolder`: every file name of a run folder, in one place.

    runs/<model type>-<timestamp>/
      config.json        resolved TrainingConfig
      base_model.json    how the base model was resolved
      plan.json          hardware plan (device, precision, batch, LoRA, memory estimate)
      data_stats.json    counts of every pipeline stage
      rejects.jsonl      every dropped line or record, with stage and reasons
      metrics.jsonl      one line per training step and per evaluation
      preferences.jsonl  the preference pairs (read or mined, with scores and reasons) of a dpo/orpo/kto run
      checkpoint/        resume state (adapter, optimizer, scheduler, step); removed by nothing
      adapter/           PEFT LoRA adapter
      merged/            Hugging Face model (base + LoRA folded in)
      exports/           one folder or file per export format
      heldout.jsonl      the held-out (eval) records, for `iceburg eval`
      scores.jsonl       per training record: quality, emergence score, category, weight
      tensorboard/       event files (--report-to tensorboard)
      mlx-work/          the MLX backend's scratch folder during training (removed after)
      result.json        TrainingResult (written last; an export failure is recorded in it)
      eval.json          base vs tuned: held-out loss, stop rate, answers (--compare N, iceburg eval)
      report.html        self-contained report of all of the above (iceburg-train --report RUN)

The recipes (`iceburg/recipes/`: `open_run` creates or reopens the folder), `--export-only`, the
report and the tests use these properties instead of spelling names, so a rename happens here once.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import IceburgError


@dataclass(frozen=True)
class RunFolder:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    config = property(lambda self: self.root / "config.json")
    base_model = property(lambda self: self.root / "base_model.json")
    plan = property(lambda self: self.root / "plan.json")
    data_stats = property(lambda self: self.root / "data_stats.json")
    rejects = property(lambda self: self.root / "rejects.jsonl")
    metrics = property(lambda self: self.root / "metrics.jsonl")
    preferences = property(lambda self: self.root / "preferences.jsonl")  # pairs a preference run used
    checkpoint = property(lambda self: self.root / "checkpoint")
    adapter = property(lambda self: self.root / "adapter")
    merged = property(lambda self: self.root / "merged")
    exports = property(lambda self: self.root / "exports")
    result = property(lambda self: self.root / "result.json")
    heldout = property(lambda self: self.root / "heldout.jsonl")
    scores = property(lambda self: self.root / "scores.jsonl")
    tensorboard = property(lambda self: self.root / "tensorboard")
    mlx_work = property(lambda self: self.root / "mlx-work")  # --backend mlx scratch, removed after training
    eval = property(lambda self: self.root / "eval.json")
    report = property(lambda self: self.root / "report.html")

    @property
    def name(self) -> str:
        return self.root.name

    def is_run(self) -> bool:
        """A (possibly unfinished) iceburg run folder: it has a merged model or a config."""
        return (self.merged / "config.json").exists()

    def is_finished(self) -> bool:
        return self.result.exists()

    def prepare(self, resume: bool) -> None:
        """Create the folder for a new run, or check it can be resumed."""
        if self.root.exists() and self.result.exists() and not resume:
            raise IceburgError(f"--output-name: run folder {self.root} already holds a finished run; "
                               "choose another --output-name or delete it")
        if self.root.exists() and not resume and any(self.root.iterdir()):
            raise IceburgError(f"run folder {self.root} exists (an interrupted run?); pass --resume to "
                               "continue it or choose another --output-name")
        self.root.mkdir(parents=True, exist_ok=True)

    def write_json(self, path: Path, obj: Any) -> None:
        """Atomic JSON write (temp file + rename) of one of this folder's files."""
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(obj, indent=2, default=str), encoding="utf-8")
        os.replace(tmp, path)

    def write_jsonl(self, path: Path, rows: Any) -> None:
        """Atomic JSONL write (one JSON object per line) of one of this folder's files."""
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        os.replace(tmp, path)

    def read_json(self, path: Path) -> Any:
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
