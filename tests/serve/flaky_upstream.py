"""A misbehaving OpenAI-compatible upstream for the proxy's failure tests (a real HTTP server).

    python tests/serve/flaky_upstream.py PORT

The request's `model` picks the failure: `fail-500` answers 500 with an error body, `slow` sleeps
30 s before answering, `cut` streams two chunks and then drops the connection; `paced` streams a
complete answer of five chunks 0.1 s apart (half a second of pure upstream waiting, for `collect
--timing`); `cookie` sets a cookie and answers with the Cookie and Authorization headers it was sent.
"""

from __future__ import annotations

import asyncio
import json
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

CHUNK = {"id": "c1", "object": "chat.completion.chunk", "model": "cut",
         "choices": [{"index": 0, "delta": {"content": "partial "}, "finish_reason": None}]}


async def chat(request):
    body = await request.json()
    model = body.get("model")
    if model == "fail-500":
        return JSONResponse({"error": {"message": "model crashed", "type": "server_error"}}, status_code=500)
    if model == "slow":
        await asyncio.sleep(30)
        return JSONResponse({})

    if model == "cookie":  # sets a cookie and says which Cookie and Authorization headers it was sent
        resp = JSONResponse({"cookie_sent": request.headers.get("cookie"),
                             "authorization_sent": request.headers.get("authorization"),
                             "title_sent": request.headers.get("x-title")})  # latin-1, as Starlette decodes
        resp.set_cookie("session", "agent-a-secret")
        return resp
    if model == "paced":
        return StreamingResponse(paced(), media_type="text/event-stream")

    async def cut():
        for _ in range(2):
            yield f"data: {json.dumps(CHUNK)}\n\n".encode()
            await asyncio.sleep(0.05)
        raise RuntimeError("upstream dies mid-stream")

    return StreamingResponse(cut(), media_type="text/event-stream")


async def paced():
    for i in range(5):
        await asyncio.sleep(0.1)
        choice = {"index": 0, "delta": {"content": f"word{i} "}, "finish_reason": "stop" if i == 4 else None}
        yield f"data: {json.dumps({**CHUNK, 'model': 'paced', 'choices': [choice]})}\n\n".encode()
    yield b"data: [DONE]\n\n"


async def models(request):
    return JSONResponse({"object": "list", "data": []})


app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/v1/models", models)])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="critical")
