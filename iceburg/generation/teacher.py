"""The teacher: any OpenAI-compatible chat endpoint (Ollama's /v1, llama.cpp's server, `iceburg serve`,
a hosted API) through the `openai` client.

Retries are the client's own (`max_retries`: exponential back-off on connection errors, 408, 409,
429 and 5xx, honouring `Retry-After`; openai-python README "Retries"); the timeout is per request;
the rate limit is a minimum interval between request starts (`--rate-limit R` requests per second),
which is what a hosted API's requests-per-minute quota needs. A request that still fails raises
`TeacherError` naming the URL; the job folder keeps every finished call, so rerunning resumes.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from ..errors import IceburgError, MissingDependencyError

logger = logging.getLogger(__name__)

# The key for a hosted endpoint; local servers accept any key.
API_KEY_ENV = ("ICEBURG_TEACHER_API_KEY", "OPENAI_API_KEY")


class TeacherError(IceburgError):
    """The teacher endpoint failed after its retries."""


@dataclass
class TeacherSettings:
    url: str
    model: str | None = None  # None: the first model the endpoint lists
    timeout_s: float = 120.0
    retries: int = 3
    rate_limit: float = 0.0  # requests per second; 0 = no limit


class TeacherClient:
    """`complete(messages, ...)` -> the answer text, finish reason and usage, as a plain dict."""

    def __init__(self, settings: TeacherSettings):
        try:
            import httpx
            import openai
        except ImportError as exc:
            raise MissingDependencyError("openai (the client for --teacher)", "pip install 'iceburg[judge]'") from exc
        self.settings = settings
        key = next((os.environ[k] for k in API_KEY_ENV if os.environ.get(k)), "not-needed")
        # trust_env=False on loopback only: a local server is never reached through an HTTP(S)_PROXY
        local = any(h in settings.url for h in ("://127.0.0.1", "://localhost", "://[::1]"))
        http = httpx.Client(trust_env=not local, timeout=settings.timeout_s)
        self._client = openai.OpenAI(base_url=settings.url, api_key=key, timeout=settings.timeout_s,
                                     max_retries=settings.retries, http_client=http)
        self._last = 0.0
        self._model = settings.model

    @property
    def model(self) -> str:
        """The model name sent with each request: --teacher-model, else the endpoint's first model."""
        if self._model is None:
            import openai

            try:
                listed = [m.id for m in self._client.models.list().data]
            except openai.APIError as exc:
                raise TeacherError(f"--teacher {self.settings.url}: listing models failed ({exc}); check the URL "
                                   "(most servers end in /v1) or pass --teacher-model NAME") from exc
            if not listed:
                raise TeacherError(f"--teacher {self.settings.url} lists no models; pass --teacher-model NAME")
            self._model = listed[0]
        return self._model

    def _wait_turn(self) -> None:
        if self.settings.rate_limit > 0:
            gap = 1.0 / self.settings.rate_limit - (time.monotonic() - self._last)
            if gap > 0:
                time.sleep(gap)
        self._last = time.monotonic()

    def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        """One chat completion; `request` holds messages, max_tokens, temperature, seed, and tools /
        tool_choice when the seed had tools. The answer's tool calls come back as `tool_calls`."""
        import openai

        self._wait_turn()
        try:
            res = self._client.chat.completions.create(model=self.model, **request)
        except openai.APIError as exc:
            raise TeacherError(f"--teacher {self.settings.url}: the request failed after {self.settings.retries} "
                               f"retries ({type(exc).__name__}: {exc}); rerun the same command to resume "
                               "(finished requests are not repeated)") from exc
        return response_fields(res)


def response_fields(res: Any) -> dict[str, Any]:
    """Choice 0 of an `openai` ChatCompletion as the plain dict the job log keeps: text, finish reason,
    model, usage, and the tool calls when the answer made any (OpenAI's shape: `{id, type: "function",
    function: {name, arguments: JSON text}}`; the loader parses the arguments)."""
    choice = res.choices[0]
    usage = res.usage.model_dump() if res.usage is not None else {}
    out = {"text": choice.message.content or "", "finish_reason": choice.finish_reason, "model": res.model,
           "usage": usage}
    calls = [c.model_dump(exclude_none=True) for c in choice.message.tool_calls or []]
    if calls:
        out["tool_calls"] = calls
    return out
