"""The study report: trials table (CSV + Markdown), best_config.yaml, plots, report.md."""

from __future__ import annotations

import csv
import io
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import TrainingConfig
from ..errors import IceburgError
from .folder import StudyFolder
from .space import SEARCHED, ranges

logger = logging.getLogger(__name__)

# Config keys a rerun must not inherit from the search (they would start another search).
HPO_KEYS = {"hpo": None, "hpo_workers": 1, "hpo_storage": None, "hpo_resume": False}
COLUMNS = ("trial", "state", "eval_loss", *SEARCHED, "last_step", "wall_s", "run_dir", "error")


@dataclass
class StudyReport:
    root: Path
    best_trial: int
    best_value: float
    best_overrides: dict[str, Any]
    best_config: Path
    counts: dict[str, int] = field(default_factory=dict)  # COMPLETE / PRUNED / FAIL / RUNNING
    rows: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {**asdict(self), "root": str(self.root), "best_config": str(self.best_config)}


def trial_rows(study) -> list[dict[str, Any]]:
    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        o = t.user_attrs.get("overrides", {})
        rows.append({"trial": t.number, "state": t.state.name,
                     "eval_loss": t.value if t.value is not None else
                     (t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None),
                     **{k: o.get(k) for k in SEARCHED},
                     "last_step": max(t.intermediate_values) if t.intermediate_values else None,
                     "wall_s": t.user_attrs.get("wall_s"), "run_dir": t.user_attrs.get("run_dir"),
                     "error": t.user_attrs.get("error")})
    return rows


def best_config_dict(cfg: TrainingConfig, overrides: dict[str, Any]) -> dict[str, Any]:
    """The study's config with the best trial's values: a plain run (no search keys, no run
    folder name), exports as the study asked."""
    d = cfg.to_dict()
    d.update(overrides, **HPO_KEYS, output_name=None)
    return {k: v for k, v in d.items() if v is not None}


def _markdown(rows: list[dict[str, Any]]) -> str:
    cols = [c for c in COLUMNS if c not in ("run_dir",) and any(r.get(c) is not None for r in rows)]
    fmt = lambda v: "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)).replace("|", "/") for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS))
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_plots(study, folder: StudyFolder) -> list[str]:
    """Optimisation history and parameter importances (optuna.visualization.matplotlib); returns
    notes for the plots that cannot be drawn yet (importances need 2 completed trials)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as vis

    notes = []
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = vis.plot_optimization_history(study, target_name="eval loss")
        ax.figure.savefig(folder.history_png, dpi=100, bbox_inches="tight")
        plt.close(ax.figure)
        if len(complete) >= 2:
            ax = vis.plot_param_importances(study)
            ax.figure.savefig(folder.importance_png, dpi=100, bbox_inches="tight")
            plt.close(ax.figure)
        else:
            notes.append(f"parameter importances need 2 completed trials ({len(complete)} so far)")
    return notes


def write_report(study, folder: StudyFolder, cfg: TrainingConfig, hidden_size: int | None) -> StudyReport:
    import optuna

    rows = trial_rows(study)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    folder.write_text(folder.table_csv, _csv(rows))
    folder.write_text(folder.table_md, _markdown(rows))
    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if t.value is not None and math.isfinite(t.value)]
    if not complete:
        errors = [f"trial {r['trial']}: {r['error']}" for r in rows if r["error"]][:3]
        raise IceburgError(f"no trial of study {folder.root} completed ({counts}); "
                           + ("; ".join(errors) if errors else "all were pruned")
                           + f". See {folder.table_md} and the trial folders' logs")
    best = min(complete, key=lambda t: t.value)
    overrides = dict(best.user_attrs["overrides"])
    header = (f"# Best configuration of study {folder.root.name}: trial {best.number}, eval loss "
              f"{best.value:.6f}\n# Train with it: iceburg-train --config {folder.best_config}\n")
    folder.write_text(folder.best_config, header + cfg.to_yaml(only=best_config_dict(cfg, overrides)))
    notes = write_plots(study, folder)
    _write_markdown_report(folder, cfg, hidden_size, best, overrides, counts, rows, notes)
    logger.info("study %s: best trial %d, eval loss %.4f; %s", folder.root, best.number, best.value, counts)
    return StudyReport(root=folder.root, best_trial=best.number, best_value=float(best.value),
                       best_overrides=overrides, best_config=folder.best_config, counts=counts, rows=rows)


def _write_markdown_report(folder, cfg, hidden_size, best, overrides, counts, rows, notes) -> None:
    rng = ranges(cfg, hidden_size)
    lines = [f"# Hyperparameter search {folder.root.name}", "",
             f"- model type: {cfg.model_type.short}; base: {cfg.base_model}; trials: {len(rows)} of {cfg.hpo} "
             f"({', '.join(f'{v} {k.lower()}' for k, v in sorted(counts.items()))})",
             f"- best: trial {best.number}, eval loss {best.value:.6f} "
             f"(`iceburg-train --config {folder.best_config.name}`)",
             "- best values: " + ", ".join(f"{k}={v}" for k, v in overrides.items()), "",
             "## Search ranges", "", *[f"- {k}: {v}" for k, v in rng.items()], "",
             "## Trials", "", _markdown(rows), "## Plots", "",
             f"![optimisation history]({folder.history_png.name})", ""]
    if folder.importance_png.exists():
        lines += [f"![parameter importances]({folder.importance_png.name})", ""]
    lines += [f"- {n}" for n in notes]
    folder.write_text(folder.report, "\n".join(lines) + "\n")


def format_summary(r: StudyReport) -> str:
    return "\n".join([
        f"study folder:      {r.root}",
        f"trials:            {', '.join(f'{v} {k.lower()}' for k, v in sorted(r.counts.items()))}",
        f"best trial:        {r.best_trial} (eval loss {r.best_value:.4f})",
        "best values:       " + ", ".join(f"{k}={v}" for k, v in r.best_overrides.items()),
        f"best config:       {r.best_config}",
        f"train with it:     iceburg-train --config {r.best_config}",
        f"report:            {StudyFolder(r.root).report}",
    ])
