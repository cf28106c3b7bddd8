"""A fixed-answer OpenAI-compatible upstream for bench/proxy_load.py: every chat is answered at once
(streamed: 11 SSE events and `[DONE]`, one write each, as llama-cpp-python's server sends them), so
a pair direct vs proxied measures the proxy alone, with no generation time or its jitter in it.

    python bench/_fixed_upstream.py PORT
"""

from __future__ import annotations

import json
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

WORDS = ["sleep ", "helps ", "the ", "brain ", "keep ", "what ", "it ", "learned"]


def chunk(delta: dict, finish: str | None = None) -> bytes:
    event = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "fixed",
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(event)}\n\n".encode()


async def chat(request):
    body = await request.json()
    if not body.get("stream"):
        return JSONResponse({"id": "c1", "object": "chat.completion", "model": "fixed", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "".join(WORDS)}, "finish_reason": "stop"}]})

    async def events():
        yield chunk({"role": "assistant", "content": ""})
        for w in WORDS:
            yield chunk({"content": w})
        yield chunk({}, "stop")
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def models(request):
    return JSONResponse({"object": "list", "data": [{"id": "fixed", "object": "model"}]})


app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/v1/models", models)])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="critical", access_log=False)
