"""`run_study(cfg)`: a hyperparameter search over the SFT recipe with Optuna (`--hpo N`).
The training side of a trial (data once, one run folder per trial) is `iceburg.recipes.hpo`.

    resolve base -> pipeline (read, truth, split, emergence: ONCE) -> W workers, each looping
    ask -> train one trial into trials/trial-NNNN/ (a normal run folder) -> tell
    -> study report (trials table, plots, best_config.yaml)

- Sampler: TPE; pruner: median of the completed trials' eval loss at the same step, reported at
  every evaluation of the trainer (`PruningCallback.on_eval`).
- Storage: one Optuna storage shared by every worker: a journal file in the study folder by
  default (Optuna's file storage for several processes, NFS included), or `--hpo-storage URL`
  (an RDB URL; a server database for workers on several machines). A worker started elsewhere
  with the same command and storage joins the study.
- Exactly N trials: a worker takes the next trial only while fewer than N trials exist (waiting
  enqueued ones aside); the count and the `ask` run under a file lock in the study folder, so
  workers sharing that folder never overshoot. Workers on other machines without the shared
  folder may each add at most one trial past N (docs/hpo.md).
- A trial that raises is recorded FAIL with its error and the study goes on; a worker process
  that dies leaves a RUNNING trial that the next start (or the parent) marks FAIL (its host and
  pid are trial attributes). If no trial completes, the study raises with the first errors.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from ..config import TrainingConfig
from ..errors import MissingDependencyError
from ..records import RejectWriter
from .folder import StudyFolder
from .report import StudyReport, write_report
from .space import suggest

logger = logging.getLogger(__name__)

# Optuna's defaults are 10 random start-up trials for TPE and 5 completed trials before the
# median pruner acts; searches here are often 8-30 trials, so both scale down with N (a quarter
# of the budget each, at least 1-2) and keep Optuna's values from N = 40 / 20 on.
def tpe_startup(n: int) -> int:
    return max(2, min(10, n // 4))


def pruner_startup(n: int) -> int:
    return max(1, min(5, n // 4))


def require_optuna():
    try:
        import optuna
    except ImportError as e:
        raise MissingDependencyError("optuna (for --hpo)", "pip install 'iceburg[hpo]'") from e
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def open_storage(url: str):
    """An RDB URL (`sqlite:///...`, `postgresql://...`) or a journal file path."""
    optuna = require_optuna()
    if "://" in url:
        return optuna.storages.RDBStorage(url)
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return JournalStorage(JournalFileBackend(str(url)))


@dataclass
class TrialJob:
    """Everything a worker needs; pickled once into each worker process."""

    cfg: TrainingConfig
    data: Any  # iceburg.pipeline.Prepared, scored records with a "plain" curriculum
    base: Any  # iceburg.base_models.ResolvedBase
    hidden_size: int | None
    root: Path
    storage: str
    study_name: str
    threads: int | None


class PruningCallback:
    """Trainer callback: report each evaluation to the trial, raise `TrialPruned` when the median
    rule says so (the trainer stops at once; the run folder keeps metrics.jsonl up to there)."""

    def __init__(self, trial):
        self.trial = trial

    def on_batch(self, example_ids: list[str]) -> None:
        pass

    def on_step(self, step: int, metrics: dict) -> None:
        pass

    def on_eval(self, step: int, eval_loss: float) -> None:
        import optuna

        self.trial.report(eval_loss, step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"eval loss {eval_loss:.4f} at step {step} is above the median")


def run_study(cfg: TrainingConfig, enqueue: Iterable[dict[str, Any]] = ()) -> StudyReport:
    """Run (or continue, with `hpo_resume`) the study of `cfg.hpo` trials; `enqueue` holds
    parameter sets (Optuna names, e.g. the current defaults) to try first."""
    from ..recipes.hpo import prepare_study_data

    optuna = require_optuna()
    cfg = cfg.validate()
    if cfg.output_name is None:
        cfg = dataclasses.replace(cfg, output_name=f"{cfg.model_type.value}-hpo-"
                                  f"{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}")
    folder = StudyFolder(Path(cfg.output_dir) / cfg.output_name)
    folder.prepare(cfg.hpo_resume)
    with RejectWriter(folder.rejects) as rejects:
        base, data = prepare_study_data(cfg, rejects)  # once for every trial (iceburg/recipes/hpo.py)
    folder.write_json(folder.base_model, base.to_dict())
    folder.write_json(folder.data_stats, dict(data.stats, rejected=dict(rejects.counts)))

    storage = cfg.hpo_storage or str(folder.journal)
    study = optuna.create_study(storage=open_storage(storage), study_name=cfg.output_name,
                                direction="minimize", load_if_exists=True)
    folder.write_json(folder.study_json, {"study_name": cfg.output_name, "storage": storage,
                                          "n_trials": cfg.hpo, "config": cfg.to_dict()})
    for params in enqueue:
        study.enqueue_trial(dict(params), skip_if_exists=True)
    fail_dead_trials(study)
    threads = cfg.num_threads or (max(1, (os.cpu_count() or 1) // cfg.hpo_workers)
                                  if cfg.hpo_workers > 1 else None)
    job = TrialJob(cfg=cfg, data=data, base=base, hidden_size=_hidden_size(base.path), root=folder.root,
                   storage=storage, study_name=cfg.output_name, threads=threads)
    if cfg.hpo_workers == 1:
        run_worker(job, 0)
    else:
        _run_processes(job, cfg.hpo_workers)
        fail_dead_trials(study)
    return write_report(study, folder, cfg, job.hidden_size)


def _hidden_size(path: Path) -> int | None:
    import json

    conf = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    return conf.get("hidden_size") or conf.get("text_config", {}).get("hidden_size")


def _run_processes(job: TrialJob, workers: int) -> None:
    """W spawned processes (not forked: torch's thread pools and open files do not survive fork)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=run_worker, args=(job, i), name=f"iceburg-hpo-{i}") for i in range(workers)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        raise
    for p in procs:
        if p.exitcode != 0:
            logger.error("worker %s (pid %s) exited with status %s", p.name, p.pid, p.exitcode)


def run_worker(job: TrialJob, index: int) -> None:
    """Take trials until the study has `cfg.hpo` of them; one process, one trial at a time."""
    import torch
    from filelock import FileLock

    optuna = require_optuna()
    if job.threads:
        torch.set_num_threads(job.threads)
    n = job.cfg.hpo
    # one reproducible sequence for a single worker; distinct seeds across parallel workers so
    # their random start-up trials differ (TPE's constant liar keeps later ones apart)
    seed = job.cfg.seed if job.cfg.hpo_workers == 1 else hash((job.cfg.seed, socket.gethostname(), os.getpid())) % 2**31
    study = optuna.load_study(
        study_name=job.study_name, storage=open_storage(job.storage),
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=tpe_startup(n)),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=pruner_startup(n), n_warmup_steps=0))
    counted = tuple(s for s in optuna.trial.TrialState if s != optuna.trial.TrialState.WAITING)
    lock = FileLock(str(job.root / ".ask.lock"))
    while True:
        with lock:
            if len(study.get_trials(deepcopy=False, states=counted)) >= n:
                return
            trial = study.ask()
            trial.set_user_attr("host", socket.gethostname())
            trial.set_user_attr("pid", os.getpid())
            trial.set_user_attr("worker", index)
        run_trial(study, trial, job)


def run_trial(study, trial, job: TrialJob) -> None:
    """Train one trial into trials/trial-NNNN and tell the study how it ended."""
    import optuna

    from ..recipes.hpo import train_trial
    from .space import apply

    started = time.time()
    state, value = optuna.trial.TrialState.FAIL, None
    try:
        params = suggest(trial, job.cfg, job.hidden_size)
        trial.set_user_attr("overrides", params)
        cfg = apply(job.cfg, params, output_dir=str(job.root / "trials"), output_name=f"trial-{trial.number:04d}",
                    export_formats=[], onnx_int8=False, hpo=None, hpo_workers=1, hpo_storage=None,
                    hpo_resume=False, resume=False).validate()
        trial.set_user_attr("run_dir", str(Path(cfg.output_dir) / cfg.output_name))  # open_run's folder
        result = train_trial(cfg, job.base, job.data, [PruningCallback(trial)], started)
        trial.set_user_attr("steps", result.steps)
        trial.set_user_attr("eval_loss_before", result.eval_loss_before)
        state, value = optuna.trial.TrialState.COMPLETE, result.eval_loss_after
    except optuna.TrialPruned as e:
        logger.info("trial %d pruned: %s", trial.number, e)
        state = optuna.trial.TrialState.PRUNED
    except Exception as e:  # recorded FAIL (never a result) and the study goes on; see docstring
        logger.error("trial %d failed: %s: %s", trial.number, type(e).__name__, e, exc_info=True)
        trial.set_user_attr("error", f"{type(e).__name__}: {e}")
    finally:  # also on KeyboardInterrupt: the trial is told FAIL before the interrupt goes on
        trial.set_user_attr("wall_s", round(time.time() - started, 3))
        study.tell(trial, value, state=state)


def fail_dead_trials(study) -> list[int]:
    """Mark FAIL the RUNNING trials of workers on this host whose process is gone (killed, out of
    memory): they would otherwise count towards N forever without a result."""
    import optuna
    import psutil

    host, failed = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") == host and pid is not None and not psutil.pid_exists(pid):
            # no public setter for another process's trial attributes; the state goes through tell
            study._storage.set_trial_user_attr(t._trial_id, "error", f"worker process {pid} died")
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            failed.append(t.number)
    if failed:
        logger.warning("trials %s: their worker process died; recorded as failed", failed)
    return failed

