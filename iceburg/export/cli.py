"""`--export-only DIR`: export a finished (or export-failed) run folder or any plain Hugging Face
model folder."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..config import ModelType, TrainingConfig
from ..errors import IceburgError
from ..run_folder import RunFolder
from . import export_model
from .base import build_export_context


def export_only(folder: Path, cfg: TrainingConfig, out_dir: Path | None = None) -> dict[str, Any]:
    """Export `folder` in `cfg.export_formats`. Output goes to `out_dir` when given (the
    `--output-dir` flag), else to RUN/exports for a run folder or `<output_dir>/export-<name>`
    for a plain model folder. Finishing a run folder also records the exports in its result.json
    (clearing a recorded export failure)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise IceburgError(f"--export-only {folder}: no such folder; pass a run folder (with merged/) "
                           "or a Hugging Face model folder")
    run = RunFolder(folder)
    run_cfg: dict = {}
    if run.is_run():
        model_dir, default_out, adapter = run.merged, run.exports, run.adapter
        run_cfg = run.read_json(run.config) or {}
    elif (folder / "config.json").exists():
        model_dir, adapter, run = folder, None, None
        default_out = Path(cfg.output_dir) / f"export-{_safe(folder.name)}"
    else:
        raise IceburgError(f"--export-only {folder}: neither a run folder (merged/config.json) nor a "
                           "Hugging Face model folder (config.json)")
    ctx = build_export_context(
        cfg, name=_safe(run_cfg.get("output_name") or folder.name),
        model_type=ModelType.parse(run_cfg.get("model_type", cfg.model_type)), adapter_dir=adapter,
        base_model=run_cfg.get("base_model"), max_seq_length=int(run_cfg.get("max_seq_length", cfg.max_seq_length)),
        run_info={"config": run_cfg} if run_cfg else {})
    out = Path(out_dir) if out_dir is not None else default_out
    results = export_model(model_dir, out, list(cfg.export_formats), ctx)
    report = {fmt: {"files": [str(f) for f in r.files], "report": r.report} for fmt, r in results.items()}
    if run is not None and run.is_finished():
        res = run.read_json(run.result)
        res.setdefault("export_paths", {}).update({k: v["files"] for k, v in report.items()})
        res.setdefault("export_reports", {}).update({k: v["report"] for k, v in report.items()})
        res["export_error"], res["success"] = None, True
        run.write_json(run.result, res)
    return report


def _safe(name: str) -> str:
    """File-name-safe version of a user-supplied name."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "model"
    return s[:100]
