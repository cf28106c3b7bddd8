"""Exporters, one module each; each declares itself in an `ExporterSpec` named SPEC (name, run
order, options, headline figure, status from its proof). `export_model` dispatches by format
name, runs the chosen exporters in their declared order and stores each one's status in its report.

The GGUF exporter's SPEC lives in gguf_verify.py, beside the proof its status is read from.
"""

from __future__ import annotations

import importlib
import logging
from functools import cache
from pathlib import Path

from ..errors import ExportError, IceburgError
from .base import ExportContext, ExporterSpec, ExportResult

logger = logging.getLogger(__name__)

# The modules that declare an exporter (a new exporter = one module with a SPEC + its name here).
_SPEC_MODULES = ("iceburg.export.huggingface", "iceburg.export.gguf_verify", "iceburg.export.ollama",
                 "iceburg.export.onnx")


@cache
def exporters() -> dict[str, ExporterSpec]:
    """Every exporter's SPEC by name, in run order."""
    specs = [importlib.import_module(m).SPEC for m in _SPEC_MODULES]
    return {s.name: s for s in sorted(specs, key=lambda s: s.order)}


def export_status(fmt: str, report: dict) -> str:
    """The status of one export from its report: proven / measured / written, not verified: why /
    failed: why (the one recorded by export_model, else computed from the proof)."""
    if isinstance(report, dict) and report.get("status"):
        return str(report["status"])
    spec = exporters().get(fmt)
    return spec.status(report) if spec and isinstance(report, dict) else "unknown format"


def export_model(model_dir: Path, out_dir: Path, formats: list[str], ctx: ExportContext) -> dict[str, ExportResult]:
    """Run each requested exporter; a failure names the format and keeps its reason."""
    specs = exporters()
    unknown = [f for f in formats if f not in specs]
    if unknown:
        raise ExportError(f"--formats: unknown format(s) {', '.join(unknown)}; choose from {', '.join(specs)}")
    from ..progress import StepBar

    results: dict[str, ExportResult] = {}
    chosen = [name for name in specs if name in formats]
    with StepBar("export", [f"{f} (write + proof)" for f in chosen]) as bar:
        for fmt in chosen:
            bar.step(f"{fmt} (write + proof)")
            results[fmt] = _export_one(specs[fmt], model_dir, out_dir, ctx)
            _share_gguf_proof(results)
            results[fmt].report["status"] = specs[fmt].status(results[fmt].report)
            bar.write(f"export {fmt}: done, {results[fmt].report['status']} ({len(results[fmt].files)} file(s))")
    return results


def _share_gguf_proof(results: dict[str, ExportResult]) -> None:
    """The Ollama exporter reuses the GGUF file the GGUF exporter has just proven: give its report
    that file's proof (it does not repeat it)."""
    ollama, gguf = results.get("ollama"), results.get("gguf")
    if ollama is None or gguf is None or not ollama.report.get("gguf_reused"):
        return
    entry = (gguf.report.get("files") or {}).get(ollama.report.get("gguf"))
    if entry is not None:
        ollama.report["gguf_proof"].update(proof=entry.get("proof"), verify=entry.get("verify"))


def _export_one(spec: ExporterSpec, model_dir: Path, out_dir: Path, ctx: ExportContext) -> ExportResult:
    module = importlib.import_module(spec.module)
    logger.info("exporting %s", spec.name)
    try:
        return module.export(Path(model_dir), Path(out_dir), ctx)
    except IceburgError as e:
        raise ExportError(f"export to {spec.name} failed: {e}") from e
    except Exception as e:  # a crash inside a converter or runtime: still one clear error
        logger.debug("export to %s crashed", spec.name, exc_info=True)  # -v shows the traceback
        raise ExportError(f"export to {spec.name} failed: {type(e).__name__}: {e} (run with -v for the "
                          "traceback)") from e


__all__ = ["ExportContext", "ExportResult", "ExporterSpec", "export_model", "export_status", "exporters"]
