"""`--export-only DIR`: export a finished run folder or any plain Hugging Face model folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..config import ModelType, TrainingConfig
from ..errors import IceburgError
from . import ExportContext, export_model


def export_only(folder: Path, cfg: TrainingConfig) -> dict:
    folder = Path(folder)
    if not folder.is_dir():
        raise IceburgError(f"--export-only {folder}: no such folder; pass a run folder (with merged/) "
                           "or a Hugging Face model folder")
    run_cfg: dict = {}
    if (folder / "merged" / "config.json").exists():  # a run folder
        model_dir, out_dir, adapter = folder / "merged", folder / "exports", folder / "adapter"
        if (folder / "config.json").exists():
            run_cfg = json.loads((folder / "config.json").read_text())
    elif (folder / "config.json").exists():
        model_dir, adapter = folder, None
        out_dir = Path(cfg.output_dir) / f"export-{_safe(folder.name)}"
    else:
        raise IceburgError(f"--export-only {folder}: neither a run folder (merged/config.json) nor a "
                           "Hugging Face model folder (config.json)")
    model_type = ModelType.parse(run_cfg.get("model_type", cfg.model_type))
    ctx = ExportContext(model_type=model_type, name=_safe(run_cfg.get("output_name") or folder.name),
                        quantization=list(cfg.quantization), onnx_int8=cfg.onnx_int8, max_seq_length=int(run_cfg.get("max_seq_length", cfg.max_seq_length)),
                        adapter_dir=adapter if adapter and adapter.exists() else None,
                        base_model=run_cfg.get("base_model"), run_info={"config": run_cfg} if run_cfg else {})
    results = export_model(model_dir, out_dir, list(cfg.export_formats), ctx)
    return {fmt: {"files": [str(f) for f in r.files], "report": r.report} for fmt, r in results.items()}


def _safe(name: str) -> str:
    """File-name-safe version of a user-supplied name."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "model"
    return s[:100]
