"""Exporters, one module each; `export_model` dispatches by format name (lazy imports)."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from ..errors import ExportError, IceburgError
from .base import ExportContext, ExportResult

logger = logging.getLogger(__name__)

# ollama needs a GGUF file to point FROM at, so it runs after gguf (and makes one if absent).
EXPORTERS = {
    "huggingface": "iceburg.export.huggingface",
    "gguf": "iceburg.export.gguf",
    "ollama": "iceburg.export.ollama",
    "onnx": "iceburg.export.onnx",
}
ORDER = ["huggingface", "gguf", "ollama", "onnx"]


def export_model(model_dir: Path, out_dir: Path, formats: list[str], ctx: ExportContext) -> dict[str, ExportResult]:
    """Run each requested exporter; a failure names the format and keeps its reason."""
    unknown = [f for f in formats if f not in EXPORTERS]
    if unknown:
        raise ExportError(f"--formats: unknown format(s) {', '.join(unknown)}; choose from {', '.join(ORDER)}")
    from ..progress import StepBar

    results: dict[str, ExportResult] = {}
    chosen = sorted(set(formats), key=ORDER.index)
    with StepBar("export", [f"{f} (write + proof)" for f in chosen]) as bar:
        for fmt in chosen:
            bar.step(f"{fmt} (write + proof)")
            results[fmt] = _export_one(fmt, model_dir, out_dir, ctx)
            bar.write(f"export {fmt}: done ({len(results[fmt].files)} file(s))")
    return results


def _export_one(fmt: str, model_dir: Path, out_dir: Path, ctx: ExportContext) -> ExportResult:
    module = importlib.import_module(EXPORTERS[fmt])
    logger.info("exporting %s", fmt)
    try:
        return module.export(Path(model_dir), Path(out_dir), ctx)
    except IceburgError as e:
        raise ExportError(f"export to {fmt} failed: {e}") from e
    except Exception as e:  # a crash inside a converter or runtime: still one clear error
        logger.debug("export to %s crashed", fmt, exc_info=True)  # -v shows the traceback
        raise ExportError(f"export to {fmt} failed: {type(e).__name__}: {e} (run with -v for the "
                          "traceback)") from e


__all__ = ["ExportContext", "ExportResult", "export_model", "EXPORTERS"]
