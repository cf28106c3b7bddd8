"""What every exporter receives and returns.

One module per exporter (`huggingface.py`, `gguf.py`, `ollama.py`, `onnx.py`), each exposing
`export(model_dir: Path, out_dir: Path, ctx: ExportContext) -> ExportResult`. `model_dir` is a
plain Hugging Face folder (merged safetensors weights + tokenizer + chat template); an exporter
never needs the training objects, so `--export-only` works on any HF model folder too.
Files are written under a temporary name and renamed when complete (`atomic_path`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..config import SYSTEM_PROMPTS, ModelType
from ..errors import ExportError

# The install line every llama.cpp-backed step names when llama-cpp-python is missing.
LLAMA_INSTALL = 'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install "llama-cpp-python==0.3.36"  (or: pip install "iceburg[llama]")'


@dataclass
class ExportContext:
    model_type: ModelType = ModelType.BASE
    name: str = "iceburg-model"  # validated safe name, used for file names
    system_prompt: str | None = None  # None = the model type's prompt
    quantization: list[str] = field(default_factory=lambda: ["q8_0"])  # GGUF file types
    max_seq_length: int = 2048  # Ollama num_ctx
    adapter_dir: Path | None = None  # LoRA adapter folder, when the run has one
    base_model: str | None = None  # what the user named as base
    run_info: dict[str, Any] = field(default_factory=dict)  # config, data stats, eval results
    verify: bool = True  # run the built-in proofs (llama.cpp, Go template, onnxruntime)
    onnx_int8: bool = False  # also write an int8 dynamically quantized ONNX model
    gguf_converter: str = "auto"  # auto | iceburg | llama.cpp (export/gguf_convert.py)

    @property
    def system(self) -> str:
        return self.system_prompt if self.system_prompt is not None else SYSTEM_PROMPTS[self.model_type]


def build_export_context(cfg, *, name: str, model_type: ModelType, adapter_dir: Path | None,
                         base_model: str | None, max_seq_length: int,
                         run_info: dict[str, Any] | None = None) -> ExportContext:
    """The one place an `ExportContext` is built from a config: after training (the run's own
    config) and for `--export-only` (the run folder's saved config, the flags for the rest)."""
    return ExportContext(model_type=model_type, name=name, system_prompt=getattr(cfg, "system_prompt", None),
                         quantization=list(cfg.quantization), max_seq_length=int(max_seq_length),
                         adapter_dir=adapter_dir if adapter_dir is not None and Path(adapter_dir).exists() else None,
                         base_model=base_model, run_info=dict(run_info or {}), onnx_int8=cfg.onnx_int8,
                         gguf_converter=getattr(cfg, "gguf_converter", "auto"))


# The four states an export (or one of its files) can be in, from its own proof:
# "proven" = every judged criterion passed against a limit; "measured" = figures without a limit;
# "written, not verified: <why>" = no proof ran; "failed: <why>" = a limit was broken.
PROVEN, MEASURED = "proven", "measured"


def not_verified(reason: str) -> str:
    return f"written, not verified: {reason}"


def failed(reason: str) -> str:
    return f"failed: {reason}"


def worst_status(statuses: list[str]) -> str:
    """One status for several parts: failed > not verified > measured > proven."""
    for prefix in ("failed", "written, not verified", MEASURED):
        hit = next((s for s in statuses if s.startswith(prefix)), None)
        if hit is not None:
            return hit
    return PROVEN if statuses else not_verified("nothing was written")


@dataclass(frozen=True)
class ExporterSpec:
    """What an exporter declares about itself (one per exporter module, named SPEC).

    `export_model` runs the exporters in `order`, and stores `status(report)` in every report;
    the end-of-run table prints `headline(report)`; `options` are the config fields (flags) the
    exporter reads besides the context's common ones, listed in docs/ARCHITECTURE.md.
    Option checks that must run before training stay in `TrainingConfig._export_problems`:
    config sits below export in the layer contract (pyproject.toml), so it cannot ask the
    exporters; tests/export/test_exporters.py checks both agree on the names.
    """

    name: str
    order: int  # ollama (FROM points at a GGUF file) runs after gguf
    module: str  # the module whose export(model_dir, out_dir, ctx) writes the files
    options: tuple[str, ...]
    headline: Callable[[dict[str, Any]], str]
    status: Callable[[dict[str, Any]], str]
    summary: str = ""  # one line for docs and --help


@dataclass
class ExportResult:
    format: str
    files: list[Path]
    report: dict[str, Any] = field(default_factory=dict)  # measured proof figures


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it to `final` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.partial-{os.getpid()}")
    try:
        yield tmp
        if final.is_dir() and tmp.is_dir():
            # Re-exporting a folder: os.replace cannot replace a non-empty directory, so move the
            # old one aside first; it is deleted only once the new one is in place.
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink()


def check_free_space(folder: Path, needed_bytes: int, what: str) -> None:
    """Fail before writing when the disk cannot hold the output (with 10% headroom)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < needed_bytes * 1.1:
        raise ExportError(f"{what}: needs about {needed_bytes / 2**30:.2f} GiB in {folder}, "
                          f"only {free / 2**30:.2f} GiB free; free some space or pass another --output-dir")
