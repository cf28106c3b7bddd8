"""Shared fixtures: pinned threads, offline hub, and the tiny real base model."""

from __future__ import annotations

import os

# Under pytest-xdist (`make test` runs 2 workers on 2 cores) each worker gets one thread, so the
# workers do not oversubscribe the cores; run alone, a test gets 2 threads as before.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, int(os.environ.get("OMP_NUM_THREADS", "2")) // _WORKERS)
os.environ["OMP_NUM_THREADS"] = str(THREADS)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

torch.set_num_threads(THREADS)


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
            from filelock import FileLock

            cached.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(cached.with_name(f".{vocab}.lock"))):  # parallel workers share the cache
                if not (cached / "tokenizer.json").is_file():
                    tmp = cached.with_name(f".{vocab}.partial")
                    AutoTokenizer.from_pretrained(assets / "vocab", gguf_file=f"ggml-vocab-{vocab}.gguf").save_pretrained(tmp)
                    import shutil

                    shutil.rmtree(cached, ignore_errors=True)  # a half-written folder from an older run
                    os.replace(tmp, cached)
        tok = AutoTokenizer.from_pretrained(cached)
        tok.chat_template = (assets / "templates" / f"{template}.jinja").read_text(encoding="utf-8")
        return tok

    return make
