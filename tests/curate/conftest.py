"""Curation fixtures: one torch thread and an isolated embedding cache (as tests/emergence)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def embedding_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("ICEBURG_EMBEDDING_CACHE", str(tmp_path_factory.mktemp("iceburg-cache")))
    yield
    mp.undo()
