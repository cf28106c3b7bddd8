"""The first half of the loop (docs/loop.md): serve a model, record what the agents say to it.

- `iceburg serve RUN|GGUF`: llama-cpp-python's own OpenAI-compatible server over a run's GGUF
  (`server.py`).
- `iceburg collect --upstream URL --log DIR`: a recording proxy in front of any OpenAI-compatible
  endpoint; every completed chat exchange becomes one training record in
  `DIR/<agent type>/YYYY-MM-DD.jsonl` (`proxy.py`, `exchange.py`).

Both need the `serve` extra (FastAPI/Starlette, uvicorn, httpx; `serve` also llama-cpp-python's
server extras); a missing one raises `MissingDependencyError` with the pip line.
"""

from __future__ import annotations

import importlib.util

from ..errors import MissingDependencyError

SERVER_MODULES = ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")
SERVER_INSTALL = "pip install 'iceburg[llama,serve]'"
PROXY_MODULES = ("starlette", "uvicorn", "httpx", "httpcore")
PROXY_INSTALL = "pip install 'iceburg[serve]'"


def require(modules: tuple[str, ...], what: str, install: str) -> None:
    """Raise `MissingDependencyError` naming every missing module and the install line."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependencyError(f"{', '.join(missing)} ({what})", install)
