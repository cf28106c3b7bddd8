"""Published shapes of the instruct models the Ollama tag map points at.

What `iceburg-train --detect-hardware --base-model TAG` plans from when the model is on neither the
Ollama store nor the Hugging Face cache: the planner reads only a config (`hardware/model_shape.py`
instantiates the architecture on the meta device), so a config-only folder at the published shape
answers "fits / does not fit, with which settings" with nothing downloaded.

Values are the keys the parameter count and the activations depend on, transcribed from each repo's
config.json as published on the Hugging Face Hub (the Llama 3.2 1B/3B, Qwen2.5 7B/14B and Mistral 7B
rows are the ones bench/hardware_table.py has planned since issue 26). A repo missing here is not
guessed: the caller says so and asks for a folder with its config.json.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any


def _llama(h: int, i: int, n: int, heads: int, kv: int, vocab: int, tied: bool, head_dim: int | None = None) -> dict:
    shape = dict(model_type="llama", hidden_size=h, intermediate_size=i, num_hidden_layers=n,
                 num_attention_heads=heads, num_key_value_heads=kv, vocab_size=vocab, tie_word_embeddings=tied)
    return shape | ({"head_dim": head_dim} if head_dim else {})


def _qwen(model_type: str, h: int, i: int, n: int, heads: int, kv: int, vocab: int, tied: bool,
          head_dim: int | None = None) -> dict:
    return _llama(h, i, n, heads, kv, vocab, tied, head_dim) | {"model_type": model_type}


_SHAPES: dict[str, dict[str, Any]] = {
    "meta-llama/Llama-3.2-1B-Instruct": _llama(2048, 8192, 16, 32, 8, 128256, True, 64),
    "meta-llama/Llama-3.2-3B-Instruct": _llama(3072, 8192, 28, 24, 8, 128256, True, 128),
    "meta-llama/Llama-3.1-8B-Instruct": _llama(4096, 14336, 32, 32, 8, 128256, False),
    "meta-llama/Meta-Llama-3-8B-Instruct": _llama(4096, 14336, 32, 32, 8, 128256, False),
    "HuggingFaceTB/SmolLM2-135M-Instruct": _llama(576, 1536, 30, 9, 3, 49152, True),
    "HuggingFaceTB/SmolLM2-360M-Instruct": _llama(960, 2560, 32, 15, 5, 49152, True),
    "HuggingFaceTB/SmolLM2-1.7B-Instruct": _llama(2048, 8192, 24, 32, 32, 49152, True),
    "mistralai/Mistral-7B-Instruct-v0.3": _llama(4096, 14336, 32, 32, 8, 32768, False) | {"model_type": "mistral"},
    "Qwen/Qwen2.5-0.5B-Instruct": _qwen("qwen2", 896, 4864, 24, 14, 2, 151936, True),
    "Qwen/Qwen2.5-1.5B-Instruct": _qwen("qwen2", 1536, 8960, 28, 12, 2, 151936, True),
    "Qwen/Qwen2.5-3B-Instruct": _qwen("qwen2", 2048, 11008, 36, 16, 2, 151936, True),
    "Qwen/Qwen2.5-7B-Instruct": _qwen("qwen2", 3584, 18944, 28, 28, 4, 152064, False),
    "Qwen/Qwen2.5-14B-Instruct": _qwen("qwen2", 5120, 13824, 48, 40, 8, 152064, False),
    "Qwen/Qwen3-0.6B": _qwen("qwen3", 1024, 3072, 28, 16, 8, 151936, True, 128),
    "Qwen/Qwen3-1.7B": _qwen("qwen3", 2048, 6144, 28, 16, 8, 151936, True, 128),
    "Qwen/Qwen3-4B": _qwen("qwen3", 2560, 9728, 36, 32, 8, 151936, True, 128),
    "Qwen/Qwen3-8B": _qwen("qwen3", 4096, 12288, 36, 32, 8, 151936, False, 128),
}

PUBLISHED_SHAPES: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {repo: MappingProxyType(shape) for repo, shape in _SHAPES.items()})


def published_shape(repo_id: str) -> dict[str, Any] | None:
    """The published config keys of `repo_id` (a copy), or None when it is not listed."""
    shape = PUBLISHED_SHAPES.get(repo_id)
    return dict(shape) if shape is not None else None
