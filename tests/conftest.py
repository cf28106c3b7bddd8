"""Shared fixtures: pinned threads, offline hub, and the tiny real base model."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_model_dir():
    """The embedded `iceburg-tiny` base model (built once, cached), a plain HF folder."""
    from iceburg.models.tiny import ensure_tiny_model

    return ensure_tiny_model()


def _llama_cpp_assets():
    """llama.cpp's vocab GGUFs and real chat templates from llama-cpp-python's sdist (cached)."""
    from pathlib import Path

    try:  # the cached extractor (issue 11)
        from iceburg.testing.llama_cpp_assets import ensure_llama_cpp_assets

        return ensure_llama_cpp_assets()
    except ImportError:
        root = Path(os.environ.get("ICEBURG_CACHE", Path.home() / ".cache" / "iceburg"))
        path = root / "llama-cpp-assets" / "0.3.36"
        if not (path / "templates").is_dir():
            pytest.skip("llama.cpp assets not extracted")
        return path


@pytest.fixture(scope="session")
def llama_cpp_templates():
    return _llama_cpp_assets() / "templates"


@pytest.fixture(scope="session")
def real_tokenizer():
    """`make(vocab, template)`: the real tokenizer built from llama.cpp's `ggml-vocab-<vocab>.gguf`
    (cached as an HF folder: 20-30 s once, then ~1 s) with the real `<template>.jinja`."""
    from pathlib import Path

    from transformers import AutoTokenizer

    def make(vocab: str, template: str):
        assets = _llama_cpp_assets()
        cached = Path(os.environ.get("ICEBURG_CACHE", Path.home() / ".cache" / "iceburg")) / "tokenizers" / vocab
        if not (cached / "tokenizer.json").is_file():
            AutoTokenizer.from_pretrained(assets / "vocab", gguf_file=f"ggml-vocab-{vocab}.gguf").save_pretrained(cached)
        tok = AutoTokenizer.from_pretrained(cached)
        tok.chat_template = (assets / "templates" / f"{template}.jinja").read_text(encoding="utf-8")
        return tok

    return make
