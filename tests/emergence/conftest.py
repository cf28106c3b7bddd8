"""Emergence fixtures: an isolated embedding cache for the session and the scored surveyor sample.

The cache lives in a session temp folder (ICEBURG_EMBEDDING_CACHE), so tests never touch
~/.cache/iceburg and later tests reuse the embeddings of earlier ones (the sample is embedded once).
"""

from __future__ import annotations

import copy

import pytest

from iceburg.data import sample_data_path
from iceburg.data.loader import read_records
from iceburg.records import Record, RejectWriter


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    # One thread for the emergence tests: on this shared 2-core machine two OpenMP threads
    # collapse when other jobs compete (STACK.md; measured here: a 3-epoch tiny training test
    # took 85 s with 2 threads under load and 9 s with 1).
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def emergence_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("iceburg-cache")
    mp.setenv("ICEBURG_EMBEDDING_CACHE", str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="session")
def _surveyor() -> list[Record]:
    return list(read_records([str(sample_data_path("surveyor"))], RejectWriter(None)))


@pytest.fixture
def surveyor_records(_surveyor) -> list[Record]:
    """Fresh copies each test (the processor writes signals into the records it scores)."""
    return copy.deepcopy(_surveyor)


@pytest.fixture(scope="session")
def embedder(emergence_cache):
    from iceburg.emergence import SentenceEmbedder

    return SentenceEmbedder(cache_dir=emergence_cache)

