"""Errors raised while resolving a base model; all are user errors (`IceburgError`).

Each message names the path or tag, what was found there and what to do, so the CLI's
`error: ...` line is enough to fix the problem without a traceback.
"""

from __future__ import annotations

from ..errors import IceburgError


class BaseModelError(IceburgError):
    """A base model was named but cannot be used as given."""


class BaseModelNotFoundError(BaseModelError):
    """Nothing matched the spec: no folder, file, Ollama model, cached or downloadable repo."""

    def __init__(self, spec: str, tried: list[str], advice: str):
        self.spec = spec
        self.tried = list(tried)
        lines = "\n".join(f"  - {t}" for t in self.tried)
        super().__init__(f"base model {spec!r} was not found. Tried:\n{lines}\n{advice}")


class UnsupportedArchitectureError(BaseModelError):
    """The model's architecture is not one transformers can build as a causal LM (without remote code)."""


class MissingTokenizerError(BaseModelError):
    """The model has weights but no usable tokenizer."""


class UnsafeWeightsError(BaseModelError):
    """Only pickle checkpoints (.bin/.pt) were found; iceburg never unpickles weights."""


class OllamaManifestError(BaseModelError):
    """An Ollama manifest is unreadable, has no model layer, or names something outside the store."""


class CorruptGGUFError(BaseModelError):
    """A GGUF file is not a GGUF, is truncated, or does not match its recorded digest/size."""
