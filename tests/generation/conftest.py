"""A real teacher on a loopback port: `iceburg serve` over the embedded SmolLM2-135M-Instruct GGUF (the
tiny model's answers are gibberish the truth filter always rejects, so no record would be kept), with
`iceburg collect` in front of it as the server-side request counter (`/_iceburg/stats`)."""

from __future__ import annotations

import signal

import pytest

pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (pip install 'iceburg[llama]')")
pytest.importorskip("openai", reason="needs the openai client (pip install 'iceburg[judge]')")
for _mod in ("fastapi", "uvicorn", "httpx", "sse_starlette", "starlette_context", "pydantic_settings"):
    pytest.importorskip(_mod, reason="needs the serve extra (pip install 'iceburg[serve]')")

from iceburg.serve.launch import start_collect, start_serve  # noqa: E402


@pytest.fixture(scope="session")
def teacher(tmp_path_factory):
    """(proxy Service, serve Service): send requests to proxy.url + '/v1'."""
    from iceburg.base_models.embedded import embedded_gguf_path
    from iceburg.errors import IceburgError

    try:
        gguf = embedded_gguf_path("smollm2-135m")
    except IceburgError as exc:
        pytest.skip(str(exc))
    logs = tmp_path_factory.mktemp("teacher")
    served = start_serve(gguf, logs / "serve.log", threads=1)
    proxy = start_collect(served.url + "/v1", logs / "collected", logs / "collect.log", extra=["--fsync", "always"])
    yield proxy, served
    proxy.stop(signal.SIGTERM)
    served.stop()
