"""The proxy's streamed answer: Starlette's `StreamingResponse` with the stream kept in the request's
own task.

Starlette (1.10, under uvicorn's ASGI 2.3) runs a streamed body in a task it starts and watches
for the client's disconnect in the request's task. The new task's first read then waits for an
event-loop turn behind every other ready callback: with 50 streams open through one proxy, that
turn was the largest part of the slowest requests' own time after the client's body wait
(`--timing` phase `start`, p99 5.0 ms in bench/results/proxy_load_diagnose_settings.md; 0.9 ms
with this class, proxy_load_diagnose_relay.md). Here the roles are swapped: the body is relayed
in the request's task from its first chunk on, and a small task watches for the disconnect; when
the client goes, it cancels the relay as Starlette's task group would (the upstream answer is
closed, nothing is recorded), and the cancellation ends here instead of reaching uvicorn as an
error.
"""

from __future__ import annotations

import asyncio

from starlette.responses import StreamingResponse


class RelayResponse(StreamingResponse):
    async def __call__(self, scope, receive, send) -> None:
        task = asyncio.current_task()
        gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            task.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if not gone:  # cancelled from outside (shutdown): not ours to swallow
                raise
            task.uncancel()
        except OSError:  # the client's connection failed under a send
            pass
        finally:
            watcher.cancel()
