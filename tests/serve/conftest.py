"""Fixtures for `iceburg serve` / `iceburg collect`: a real llama.cpp server over iceburg-tiny's GGUF
(loopback port, one thread), proxies started as real `iceburg collect` processes."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (pip install 'iceburg[llama]')")
for _mod in ("fastapi", "uvicorn", "httpx", "sse_starlette", "starlette_context", "pydantic_settings"):
    pytest.importorskip(_mod, reason="needs the serve extra (pip install 'iceburg[serve]')")

import httpx  # noqa: E402

from iceburg.serve.launch import Service, start_collect, start_serve  # noqa: E402



@pytest.fixture(scope="session")
def tiny_gguf(tiny_model_dir, tmp_path_factory) -> Path:
    from iceburg.export.gguf import write_gguf

    return write_gguf(tiny_model_dir, tmp_path_factory.mktemp("gguf") / "iceburg-tiny-q8_0.gguf", "q8_0",
                      name="iceburg-tiny")


@pytest.fixture(scope="session")
def served(tiny_gguf, tmp_path_factory):
    """`iceburg serve` over the tiny GGUF; yields the Service (url without /v1)."""
    service = start_serve(tiny_gguf, tmp_path_factory.mktemp("serve-log") / "serve.log")
    yield service
    service.stop()


@pytest.fixture
def collect(tmp_path):
    """`collect(upstream, *flags) -> Service` writing into tmp_path/'logs'; stopped after the test."""
    started: list[Service] = []

    def start(upstream: str, *flags: str, log_dir: Path | None = None) -> Service:
        s = start_collect(upstream, log_dir or tmp_path / "logs", tmp_path / f"collect-{len(started)}.log",
                          extra=list(flags))
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop(signal.SIGTERM)


@pytest.fixture
def client():
    with httpx.Client(timeout=120, trust_env=False) as c:  # loopback: never via an env proxy
        yield c
