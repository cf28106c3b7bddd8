"""`iceburg-train --gate RULE`: evaluate the trained model before its shipped files are written.

The recipe calls `gate_exports` where the exports are written (`recipes/run.py: export_run`), after
merged/ is saved. The run is evaluated like `iceburg eval RUN` (its held-out records against its
base; `--compare N` sets the prompts and budget), eval.json is written, and when a gate fails only
the Hugging Face export is kept: the GGUF, Ollama and ONNX files, the ones a user would publish or
run, are not written, and the run ends with status 3 naming the metric, both values and the
interval. merged/ stays for inspection; `iceburg-train --export-only RUN --formats gguf` writes the
files anyway if a person decides to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import IceburgError
from .gates import GATE_EXIT, failed
from .heldout import DEFAULT_MAX_NEW_TOKENS, DEFAULT_PROMPTS

GATED_FORMATS = ("gguf", "ollama", "onnx")


class GateFailed(IceburgError):
    """An evaluation gate failed; the CLI exits with `exit_status` (3)."""

    exit_status = GATE_EXIT


def gate_exports(cfg: Any, run_dir: Path, formats: list[str], result: Any) -> tuple[list[str], GateFailed | None]:
    """(the formats to write, the failure to raise once they are written and result.json is saved)."""
    from .run import evaluate_run

    # a continual run (--continue-from) is gated against the version it continues, not the base
    against = str(Path(cfg.continue_from) / "merged") if getattr(cfg, "continue_from", None) else None
    report = evaluate_run(run_dir, against=against, n_prompts=cfg.compare_prompts or DEFAULT_PROMPTS,
                          max_new_tokens=cfg.compare_max_new_tokens if cfg.compare_prompts else DEFAULT_MAX_NEW_TOKENS,
                          gates=list(cfg.gates), threads=cfg.num_threads)
    bad = failed(report["gates"])
    if not bad:
        return formats, None
    kept = [f for f in formats if f not in GATED_FORMATS]
    skipped = [f for f in formats if f in GATED_FORMATS]
    msg = ("; ".join(g["message"] for g in bad)
           + f". Not written: {', '.join(skipped) or 'no gated export was requested'}; merged/ stays for inspection "
           f"(eval.json, report.html); to export anyway: iceburg-train --export-only {run_dir} --formats "
           f"{' '.join(skipped) or 'gguf'}")
    result.success, result.export_error = False, msg
    return kept, GateFailed(msg)
