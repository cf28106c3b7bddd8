"""Bring your own base model: local folders, GGUF files, Ollama tags, Hugging Face repos.

`resolve_base_model(spec) -> ResolvedBase` turns any of them into a local Hugging Face folder
(safetensors + tokenizer) that the rest of iceburg loads like any base. See docs/base_models.md.
"""

from .errors import (
    BaseModelError,
    BaseModelNotFoundError,
    CorruptGGUFError,
    MissingTokenizerError,
    OllamaManifestError,
    UnsafeWeightsError,
    UnsupportedArchitectureError,
)
from .hub import OLLAMA_TO_HF, map_ollama_tag
from .ollama_store import default_store, default_stores, parse_ollama_name
from .resolve import SOURCES, ResolvedBase, default_cache, resolve_base_model

__all__ = [
    "BaseModelError", "BaseModelNotFoundError", "CorruptGGUFError", "MissingTokenizerError",
    "OllamaManifestError", "UnsafeWeightsError", "UnsupportedArchitectureError", "OLLAMA_TO_HF",
    "map_ollama_tag", "default_store", "default_stores", "parse_ollama_name", "SOURCES", "ResolvedBase", "default_cache",
    "resolve_base_model",
]
