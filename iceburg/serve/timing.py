"""`iceburg collect --timing`: each request's own time in the proxy, split by phase.

A request's own time is its time in the proxy minus the time it spent waiting for the upstream
(inside `client.send` until the answer's headers, inside each read of the answer's body), as
before; it includes `client`, the handler's waits for the request body's bytes after uvicorn
handed it the headers (the client writes them apart; a server called directly waits for them
too), reported apart so that `net` = own - client can be read (docs/loop.md: under load the
client's wait is the own clock's tail). Each row also keeps the upstream waits' sum and the
answer's response id, so a client can take its own latency minus the proxy's upstream exchange for
the same request (`bench/proxy_load.py --diagnose`: what the proxy adds as the client sees it). The
rest is split into laps, each charged to the phase the request was in:

| phase | from | to |
|---|---|---|
| body | the handler starts | the body is read and parsed (less `client`, the waits for its bytes) |
| prep | the body is parsed | the upstream request is handed to httpx (headers, URL) |
| start | the upstream's headers | the relay's first read (the response's headers sent; relay.py) |
| relay | a body chunk arrived | the next read (SSE assembly, the chunk handed to the client) |
| record | the last event arrived | the record is written (built, validated, one `os.write`) |

Each lap also reads the thread's CPU time (`time.thread_time`); for a lap that never yields to the
event loop (`relay`, `record` with the default fsync), wall minus CPU is time the proxy's thread
was runnable or running something else's code, i.e. taken off the CPU by the kernel. `stall` is the
largest such gap of one relay lap. Not in any phase: uvicorn parsing the request before the
handler, httpx parsing the answer (inside the reads), the chunked terminator written after the last
chunk, the kernel's loopback hops (docs/loop.md, "Two ways to read the added time").

`LoopLag` samples the event loop: a task asks to wake every 10 ms and records how late it woke,
the delay any ready callback (a chunk that arrived) waits for the loop under the current load.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any, AsyncIterator

PHASES = ("body", "prep", "start", "relay", "record")
UPSTREAM, CLIENT = "upstream", "client"  # waits: not phases of the proxy's own work


class Clock:
    """One request's laps: wall and CPU seconds per phase, upstream waits apart."""

    def __init__(self) -> None:
        self.start = self._t = time.perf_counter()
        self._c = time.thread_time()
        self.phase = "body"
        self.wall = dict.fromkeys((*PHASES, UPSTREAM, CLIENT), 0.0)
        self.cpu = dict.fromkeys(PHASES, 0.0)
        self.stall = 0.0
        self.key: str | None = None  # the upstream's response id, which the client sees too

    def lap(self, then: str) -> None:
        """Charge the time since the last lap to the current phase; `then` is the next one."""
        t, c = time.perf_counter(), time.thread_time()
        wall, cpu = t - self._t, c - self._c
        self.wall[self.phase] += wall
        if self.phase in self.cpu:
            self.cpu[self.phase] += cpu
            if self.phase == "relay":
                self.stall = max(self.stall, wall - cpu)
        self._t, self._c, self.phase = t, c, then

    @property
    def waited(self) -> float:
        return self.wall[UPSTREAM]

    async def wait(self, awaitable, then: str = "start"):
        """Await the upstream (the answer's headers, or its whole JSON body), counted as waiting."""
        self.lap(UPSTREAM)
        try:
            return await awaitable
        finally:
            self.lap(then)

    async def upstream(self, chunks: AsyncIterator[bytes], waiting: str = UPSTREAM,
                       then: str = "relay") -> AsyncIterator[bytes]:
        """`chunks` as they come, each read charged to `waiting` (the upstream's answer, or with
        `CLIENT` the request body's bytes), the time between reads to `then`."""
        it = chunks.__aiter__()
        while True:
            self.lap(waiting)
            try:
                chunk = await it.__anext__()
            except StopAsyncIteration:
                self.lap(then)
                return
            self.lap(then)
            yield chunk

    def client(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        return self.upstream(chunks, CLIENT, "body")

    def own_s(self) -> float:
        self.lap(self.phase)
        return time.perf_counter() - self.start - self.waited

    def row(self) -> tuple[float, ...]:
        """(own, each phase's wall, each phase's CPU, stall, the upstream waits, the client's body
        wait), seconds."""
        return (self.own_s(), *(self.wall[p] for p in PHASES), *(self.cpu[p] for p in PHASES), self.stall,
                self.wall[UPSTREAM], self.wall[CLIENT])


class NoClock:
    """Without `--timing`: the same calls, nothing measured (no wrapper around the chunks)."""

    key: str | None = None

    def lap(self, then: str) -> None:
        pass

    async def wait(self, awaitable, then: str = "start"):
        return await awaitable

    def upstream(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        return chunks

    def client(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        return chunks


ROW = ("own", *(f"{p}_wall" for p in PHASES), *(f"{p}_cpu" for p in PHASES), "stall", "upstream_wait", "client_wait")


def _rank(xs: list[float], q: float) -> float:
    """Nearest-rank percentile in ms."""
    return round(xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] * 1000, 4)


class LoopLag:
    """How late the event loop wakes a 10 ms timer: the wait of any ready callback under load."""

    def __init__(self, every: float = 0.01, keep: int = 100_000):
        self.every, self.samples = every, deque(maxlen=keep)
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(self.every)
            self.samples.append(max(0.0, time.perf_counter() - t - self.every))

    def summary(self) -> dict[str, Any]:
        xs = sorted(self.samples)
        if not xs:
            return {"samples": 0}
        return {"samples": len(xs), "p50_ms": _rank(xs, 0.5), "p99_ms": _rank(xs, 0.99), "max_ms": _rank(xs, 1.0)}


class Timing:
    """The last `keep` requests' rows (seconds), served by `GET /_iceburg/timing` as milliseconds:
    own time p50/p99 (nearest rank), mean, max and every value; `net` (own minus the waits for the
    client's body bytes, which a direct call waits for as well: docs/loop.md) p50/p99/max; the loop
    lag; with `?detail=1` each request's row too, and the phases' means over all requests and over
    the slowest 1%."""

    def __init__(self, keep: int = 100_000):
        self.rows: Any = deque(maxlen=keep)
        self.keys: Any = deque(maxlen=keep)  # each row's response id (bench/proxy_load.py matches the client's)
        self.lag = LoopLag(keep=keep)

    @property
    def samples(self) -> list[float]:
        return [r[0] for r in self.rows]

    def add(self, clock: Clock) -> None:
        self.rows.append(clock.row())
        self.keys.append(clock.key)

    def summary(self, detail: bool = False) -> dict[str, Any]:
        xs = sorted(self.samples)
        if not xs:
            return {"enabled": True, "requests": 0}
        out = {"enabled": True, "requests": len(xs), "own_ms_p50": _rank(xs, 0.5), "own_ms_p99": _rank(xs, 0.99),
               "own_ms_mean": round(sum(xs) / len(xs) * 1000, 4), "own_ms_max": round(xs[-1] * 1000, 4),
               "own_ms": [round(x * 1000, 4) for x in self.samples], "loop_lag": self.lag.summary()}
        net = sorted(r[0] - r[-1] for r in self.rows)  # own minus the waits for the client's body bytes
        out.update(net_ms_p50=_rank(net, 0.5), net_ms_p99=_rank(net, 0.99), net_ms_max=round(net[-1] * 1000, 4),
                   client_wait_ms_p99=_rank(sorted(r[-1] for r in self.rows), 0.99))
        if detail:
            rows = list(self.rows)
            tail = sorted(rows, key=lambda r: r[0])[-max(1, len(rows) // 100):]
            mean = lambda rs: {k: round(sum(r[i] for r in rs) / len(rs) * 1000, 4) for i, k in enumerate(ROW)}  # noqa: E731
            out.update(columns=ROW, rows_ms=[[round(v * 1000, 4) for v in r] for r in rows], keys=list(self.keys),
                       phases_mean_ms=mean(rows), phases_mean_ms_slowest_1pct=mean(tail))
        return out
