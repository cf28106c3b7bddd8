"""Logging set-up shared by the command-line entry points: iceburg's own INFO lines, third-party
chatter quiet unless `-v`.

Measured on a `--formats onnx` run: onnxscript / onnx_ir print about 200 INFO lines while
`torch.onnx.export` rewrites the graph, and transformers/torch emit deprecation warnings nobody
running iceburg can act on. With `-v` everything is shown (DEBUG) for bug reports.
"""

from __future__ import annotations

import logging
import warnings

# Loggers whose INFO/WARNING lines describe library internals, not the user's run.
NOISY_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx", "torch._dynamo", "torch.export", "gguf", "httpx",
                 "urllib3", "filelock", "huggingface_hub", "transformers", "accelerate", "peft",
                 "sentence_transformers", "llama_cpp", "matplotlib", "PIL")
# Warnings raised inside third-party code that a user cannot act on (category, message regex).
KNOWN_WARNINGS = ((DeprecationWarning, ""), (FutureWarning, ""), (UserWarning, ".*TypedStorage.*"),
                  (UserWarning, ".*torch.onnx.*"), (UserWarning, ".*kernels.*"))
# Modules whose UserWarnings are exporter internals (torch.onnx's dynamic-shape renaming: "The axis
# name: past_sequence will not be used ...", seen on every `--formats onnx` run).
KNOWN_WARNING_MODULES = (r"torch\.onnx\..*",)


_quiet = False  # set by setup_logging: library chatter is being kept quiet


def is_quiet() -> bool:
    """True when an entry point asked for quiet third-party logging (no `-v`)."""
    return _quiet


def requiet() -> None:
    """Apply the quiet levels again. `import torch` (re)sets the levels of its own registered
    loggers (torch._logging: "torch.onnx" back to WARNING), and iceburg imports torch only after
    setup_logging ran (user errors are caught first), so a stage that imports torch late calls
    this before its noisy part. Measured: without it a `--formats onnx` run printed torch.onnx's
    glog-style "torchvision is not installed" warnings."""
    if _quiet:
        for name in NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)


def setup_logging(verbose: bool = False) -> None:
    """INFO for iceburg, ERROR for the libraries above (DEBUG everywhere with `verbose`)."""
    global _quiet
    _quiet = not verbose
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", force=True)
    if verbose:
        return
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for category, message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", category=category, message=message)
    for module in KNOWN_WARNING_MODULES:
        warnings.filterwarnings("ignore", category=UserWarning, module=module)
    quiet_transformers()


def quiet_transformers() -> None:
    """transformers keeps its own verbosity switch besides the logging tree, and its own progress
    bars ("Loading weights" / "Writing model shards"). Importing it here cost every process 1.5 s
    (`iceburg collect` never uses it; docs/loop.md), so a process that has not imported it yet gets
    the switches transformers reads when it is imported: TRANSFORMERS_VERBOSITY (its documented
    variable) and huggingface_hub's progress-bar switch, which transformers copies at import
    (`utils/logging.py: _tqdm_active`): HF_HUB_DISABLE_PROGRESS_BARS while huggingface_hub is not
    imported either (importing its tqdm costs 0.17 s). A value the user set wins."""
    import os
    import sys

    hf = sys.modules.get("transformers.utils.logging")
    if hf is not None:
        hf.set_verbosity_error()
        hf.disable_progress_bar()
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if "huggingface_hub" not in sys.modules:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        return
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
