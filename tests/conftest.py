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
