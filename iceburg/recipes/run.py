"""What every recipe shares around training: `open_run` (the one way to create or reopen a run
folder), `run_metrics` (metrics.jsonl and TensorBoard callbacks), `make_result` (the one builder of
`TrainingResult`) and `finish_run` (save adapter + merged -> exports + result.json -> report.html).

    open_run(cfg)                      run folder: config.json, base_model.json (--resume reopens)
    ... pipeline, encode, plan, train (the recipe) ...
    finish_run(...)                    adapter/, merged/, [gates], exports/, result.json, report.html

The file names are `RunFolder`'s (iceburg/run_folder.py).
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from ..config import EMBEDDED_BASE, RECOMMENDED, TrainingConfig
from ..errors import IceburgError
from ..run_folder import RunFolder
from ..training.result import MetricsLog, TrainingResult, as_dict

logger = logging.getLogger(__name__)


@dataclass
class Tokens:
    """The base's tokenizer for a run, the end-of-turn ids training supervises, and whether
    iceburg added template tokens (the embeddings grow)."""

    tokenizer: Any
    eos: set[int]
    added: bool


def run_name(cfg: TrainingConfig) -> str:
    """`--output-name`, or `<model type>-<UTC time>` set on the config (the summary prints it)."""
    if cfg.output_name is None:
        cfg.output_name = f"{cfg.model_type.value}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"
    return cfg.output_name


def resolve_base(cfg: TrainingConfig):
    """The run's base model (`iceburg.base_models.resolve_base_model`), with the embedded-base note."""
    from ..base_models import resolve_base_model

    base = resolve_base_model(cfg.base_model, trust_remote_code=cfg.trust_remote_code)
    if base.source == "embedded":
        rec = RECOMMENDED[cfg.model_type]["base_model"]
        logger.warning("using the embedded base model %s. The original design recommends %s for %s; "
                       "pass --base-model %s to use it.", cfg.base_model or EMBEDDED_BASE, rec,
                       cfg.model_type.short, rec)
    return base


def open_run(cfg: TrainingConfig, base: Any = None) -> tuple[RunFolder, Any]:
    """Create the run folder `<output_dir>/<output_name>` (or reopen it with `cfg.resume`), write
    config.json and base_model.json; returns (run folder, resolved base). `base`: already
    resolved (a search resolves once for all its trials)."""
    run = RunFolder(Path(cfg.output_dir) / run_name(cfg))
    run.prepare(cfg.resume)
    run.write_json(run.config, cfg.to_dict())
    base = base if base is not None else resolve_base(cfg)
    run.write_json(run.base_model, base.to_dict())
    return run, base


@contextmanager
def run_metrics(cfg: TrainingConfig, run: RunFolder, main: bool = True) -> Iterator[list]:
    """The callbacks that record a run (rank 0 only): metrics.jsonl, and TensorBoard event files
    with `--report-to tensorboard`; closed when training ends, also on failure."""
    logs: list = []
    if main:
        logs.append(MetricsLog(run.metrics))
        if "tensorboard" in cfg.report_to:
            from ..training.tensorboard import TensorBoardLog

            logs.append(TensorBoardLog(run.tensorboard))
    try:
        yield logs
    finally:
        for log in logs:
            log.close()


def make_result(cfg: TrainingConfig, run: RunFolder, base: Any, plan: Any, **figures: Any) -> TrainingResult:
    """The one builder of `TrainingResult`: the run's names and plan, plus the recipe's measured
    `figures` (losses, steps, tokens, counts; `TrainingResult`'s field names)."""
    return TrainingResult(model_name=cfg.output_name or run.name, run_dir=run.root, adapter_dir=run.adapter,
                          merged_dir=run.merged, base_model=base.to_dict(), plan=as_dict(plan),
                          wall_seconds=0.0, **figures)


def finish_run(cfg: TrainingConfig, run: RunFolder, base: Any, model: Any, tokens: Tokens,
               result: TrainingResult, data_stats: dict, started: float) -> TrainingResult:
    """Save adapter/ and merged/ (export/huggingface.py), then `export_run` (exports and
    result.json), then report.html, also after a failed export. The evaluation gates (`--gate`,
    `evaluation.release.gate_exports`) are checked at the top of `export_run`: the single place
    between the saved model and the export files."""
    from ..export.huggingface import save_adapter_and_merged
    from ..run_report import build_report

    save_adapter_and_merged(model, tokens.tokenizer, run.root, tokens.eos, base.path, cfg.trust_remote_code)
    try:
        export_run(result, cfg, run, base, data_stats, started)
    finally:  # the CLI rebuilds it after --compare
        build_report(run.root)
    return result


def export_run(result: TrainingResult, cfg: TrainingConfig, run: RunFolder, base: Any, data_stats: dict,
               started: float) -> None:
    """Run the requested exports; result.json is written either way (with the failure, if any)."""
    from ..export import export_model
    from ..export.base import build_export_context

    error: IceburgError | None = None
    formats = list(cfg.export_formats)
    if cfg.gates:  # evaluation gates (docs/evaluation.md): a failing model gets no GGUF/Ollama/ONNX file
        from ..evaluation.release import gate_exports

        formats, error = gate_exports(cfg, run.root, formats, result)
    if formats:
        ctx = build_export_context(
            cfg, name=cfg.model_type.value, model_type=cfg.model_type, adapter_dir=result.adapter_dir,
            base_model=cfg.base_model, max_seq_length=cfg.max_seq_length,
            run_info={"config": cfg.to_dict(), "data": data_stats, "eval_loss_before": result.eval_loss_before,
                      "eval_loss_after": result.eval_loss_after, "train_loss": result.train_loss,
                      "base": base.to_dict()})
        try:
            results = export_model(result.merged_dir, run.exports, formats, ctx)
            result.export_paths = {k: [str(p) for p in v.files] for k, v in results.items()}
            result.export_reports = {k: v.report for k, v in results.items()}
        except IceburgError as e:
            error = e
            result.export_error, result.success = str(e), False
    result.wall_seconds = time.time() - started
    run.write_json(run.result, result.to_dict())
    if error is not None:
        raise error
