"""The search recipe (`--hpo N`, docs/hpo.md): the data once for the study, then one SFT run per
trial. The Optuna study (ask/tell, workers, pruning, report) is `iceburg.hpo`; this module is the
part of a trial that is a training run.

    prepare_study_data: resolve base, pipeline once (curriculum "plain": the strategy is searched)
    train_trial:        open_run (trials/trial-NNNN, the study's base) -> curriculum -> train_prepared
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Iterable

from ..config import TrainingConfig
from ..records import RejectWriter
from ..training.result import TrainingResult
from .run import open_run, resolve_base
from .sft import train_prepared


def prepare_study_data(cfg: TrainingConfig, rejects: RejectWriter) -> tuple[Any, Any]:
    """(resolved base, `Prepared` data) shared by every trial. The curriculum strategy is searched:
    the pipeline keeps the scored records ("plain" builds no copies) and each trial builds its
    own curriculum from them (iceburg/emergence/curriculum.py)."""
    from ..pipeline import prepare

    base = resolve_base(cfg)
    data_cfg = dataclasses.replace(cfg, curriculum_strategy="plain") if cfg.use_emergence_weighting else cfg
    return base, prepare(data_cfg, rejects)


def train_trial(cfg: TrainingConfig, base: Any, data: Any, callbacks: Iterable[Any] = (),
                started: float | None = None) -> TrainingResult:
    """One trial's run folder (`cfg.output_dir/output_name`, a normal run folder) trained on the
    study's data with the trial's own curriculum."""
    from ..emergence.curriculum import build_curriculum, plain_curriculum
    from ..pipeline import Prepared

    started = time.time() if started is None else started
    run, base = open_run(cfg, base=base)
    records = data.curriculum.records
    cur = build_curriculum(records, cfg.curriculum_strategy) if cfg.use_emergence_weighting \
        else plain_curriculum(records)
    trial_data = Prepared(curriculum=cur, eval_records=data.eval_records,
                          stats=dict(data.stats, curriculum=cur.strategy))
    with RejectWriter(run.rejects) as rejects:
        return train_prepared(cfg, trial_data, run, base, rejects, list(callbacks), started)
