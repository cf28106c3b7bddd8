"""One record per model family (docs/families.md "Adding a family"): the registry every stage
reads for what differs between families. `registry.py` holds the record types and lookups; one
module per lineage registers its families (llama.py, mistral.py, qwen.py, phi.py, gemma.py, openai.py,
granite.py), like
llama.cpp's `conversion/` package. Importing the package registers them all."""

from __future__ import annotations

import importlib

from .registry import (
    OLLAMA_TAGS,
    Architecture,
    DocRow,
    Family,
    FamilyError,
    Fixture,
    GgufSpec,
    all_families,
    architecture,
    get,
    gguf_model_types,
    gguf_spec,
    head_apart,
    lora_exclude,
    lora_exclude_regex,
    ollama_repo,
    random_model_types,
    random_shape,
    register,
    registered,
    unregister,
)

__all__ = [
    "OLLAMA_TAGS", "Architecture", "DocRow", "Family", "FamilyError", "Fixture", "GgufSpec", "all_families",
    "architecture", "get", "gguf_model_types", "gguf_spec", "head_apart", "lora_exclude",
    "lora_exclude_regex", "ollama_repo", "random_model_types",
    "random_shape", "register", "registered", "unregister",
]

# Registration order is the order of the docs tables and of the test matrix.
for _module in ("llama", "mistral", "qwen", "phi", "gemma", "openai", "granite"):
    importlib.import_module(f"{__name__}.{_module}")
