"""`iceburg serve RUN|GGUF`: llama-cpp-python's OpenAI-compatible server over a run's GGUF.

Nothing of the server is ours: `llama_cpp.server.app.create_app` (FastAPI + sse-starlette) answers
`/v1/chat/completions` (streaming, tools, `tool_choice`), `/v1/completions`, `/v1/models`, and
`uvicorn` runs it. This module only finds the GGUF and sets the settings:

- The GGUF: a run folder's first GGUF export (`exports/**/*.gguf`, the file `iceburg chat --gguf`
  uses) or a `.gguf` path.
- The chat template: `chat_format=None`, so llama.cpp renders the GGUF's own
  `tokenizer.chat_template` (the run's template, tools included when the template renders them;
  `tool_choice` naming a function makes llama-cpp-python constrain the answer to that function's
  JSON schema and return it as `tool_calls`). A GGUF without a template falls back to llama.cpp's
  `llama-2` format, and serve warns.
- The model name (`model` in responses, `/v1/models`): the run's model type (`iceburg-surveyor`,
  the name its Ollama export uses), else the file's stem. Requests naming another model are
  answered by this one (llama-cpp-python's rule for unknown names).
- `interrupt_requests=False`: llama-cpp-python by default cancels a streaming answer when another
  request arrives; several agents share one server here, so requests queue instead.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import IceburgError
from . import SERVER_INSTALL, SERVER_MODULES, require

logger = logging.getLogger(__name__)
# Idle keep-alive connections are kept this long (uvicorn's default is 5 s). Longer than the
# recording proxy's upstream keep-alive (proxy.UPSTREAM_KEEPALIVE_S, 60 s) so that the proxy, not the
# server, closes an idle connection (no request sent on a connection closing under it); 75 s is
# nginx's default `keepalive_timeout` for the same reason. An idle connection costs a socket.
KEEPALIVE_S = 75


@dataclass
class ServeTarget:
    gguf: Path
    name: str  # the model name the server answers as
    run_dir: Path | None = None


def resolve_serve_target(spec: str | Path, name: str | None = None) -> ServeTarget:
    """A run folder (its first GGUF export) or a `.gguf` file; anything else is a user error."""
    from ..chat import resolve_chat_target

    path = Path(spec).expanduser()
    if not path.exists():
        raise IceburgError(f"{path}: no such run folder or .gguf file")
    if path.is_file() and path.suffix.lower() != ".gguf":
        raise IceburgError(f"{path}: not a .gguf file; serve takes a run folder or a .gguf file")
    target = resolve_chat_target(path, gguf=True)
    if target.kind != "gguf":
        raise IceburgError(f"{path}: not a run folder with a GGUF export; serve needs a GGUF (a run folder "
                           "with exports/**/*.gguf, or a .gguf file). Export one with "
                           f"`iceburg-train --export-only {path} --formats gguf`")
    return ServeTarget(target.path, name or _model_name(target.path, target.run_dir), target.run_dir)


def _model_name(gguf: Path, run_dir: Path | None) -> str:
    if run_dir is not None:
        try:
            cfg = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            cfg = {}
        if isinstance(cfg, dict) and isinstance(cfg.get("model_type"), str):
            from ..config import ModelType

            return ModelType.parse(cfg["model_type"]).value
    return gguf.stem


def build_server_app(target: ServeTarget, *, host: str = "127.0.0.1", port: int = 8000, n_ctx: int = 2048,
                     threads: int | None = None, seed: int = 0, verbose: bool = False):
    """The llama-cpp-python FastAPI app over `target` (the model is loaded here)."""
    require(SERVER_MODULES, "iceburg serve", SERVER_INSTALL)
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    model = dict(model=str(target.gguf), model_alias=target.name, n_ctx=n_ctx, seed=seed, chat_format=None,
                 verbose=verbose)
    if threads:
        model.update(n_threads=threads, n_threads_batch=threads)
    app = create_app(server_settings=ServerSettings(host=host, port=port, interrupt_requests=False),
                     model_settings=[ModelSettings(**model)])
    _check_template(target)
    return app


def _check_template(target: ServeTarget) -> None:
    # the header alone: gguf's GGUFReader decodes the whole vocabulary first (seconds per file)
    from transformers.integrations.gguf.reader import read_gguf_metadata

    if read_gguf_metadata(str(target.gguf))[0].get("tokenizer.chat_template") is None:
        logger.warning("%s has no tokenizer.chat_template: llama.cpp falls back to the llama-2 chat format, "
                       "which is probably not what the model was trained on", target.gguf)


def serve(spec: str | Path, *, host: str = "127.0.0.1", port: int = 8000, name: str | None = None,
          n_ctx: int = 2048, threads: int | None = None, log_level: str = "warning") -> None:
    """Load the GGUF and serve it until interrupted (Ctrl-C or SIGTERM)."""
    import uvicorn

    target = resolve_serve_target(spec, name)
    app = build_server_app(target, host=host, port=port, n_ctx=n_ctx, threads=threads)
    logger.info("serving %s as %r at http://%s:%d/v1", target.gguf, target.name, host, port)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, timeout_keep_alive=KEEPALIVE_S)
