"""`iceburg collect`: a recording proxy in front of any OpenAI-compatible endpoint.

    iceburg collect --upstream http://127.0.0.1:11434/v1 --port 8011 --log logs/
    # agents: base_url = http://127.0.0.1:8011/v1   (only the host and port change)

Built on Starlette (the ASGI toolkit under FastAPI) served by uvicorn, with httpcore (httpx's own
transport: its connection pools and HTTP/1.1 client) as the upstream client; nothing of HTTP is
hand-written here. Every request is forwarded to the upstream with its
method, path, query, headers (minus hop-by-hop ones; `Accept-Encoding: identity` so the recorder
can read the answer) and body unchanged; the upstream's status, headers and body come back
unchanged, streamed bodies chunk by chunk as they arrive.

Recorded: each `POST .../chat/completions` that the upstream answers with 200 and a complete
answer (a `finish_reason` and no error event) becomes one training record in
`DIR/<agent type>/YYYY-MM-DD.jsonl` through `AgentLogFolder` / `FineTuningLogger` (one `O_APPEND`
write of a whole line under a lock, validated by the loader's `normalise`): the request's
messages, the answer as the client received it (streamed deltas assembled, tool calls included),
the request's tools, and metadata (model, finish reason, usage, latency, first byte, sampling
settings; never a header, so API keys cannot reach the log). The line is written before the
client's stream ends (before `data: [DONE]` is forwarded), so an exchange the client saw complete
is on disk even if the proxy is killed the next moment; an interrupted one is absent. Disk syncs
(`--fsync interval`, the default) run in a background thread once a second (`IntervalSync`), never
on a request; `--fsync always` syncs each line before `[DONE]`, in a worker thread.

Agent type: the `X-Iceburg-Agent` header, else `--agent-map MODEL=TYPE`, else an iceburg model
name (`iceburg-surveyor`, `iceburg-surveyor:v2` -> `surveyor`), else the model name.

Refused with a 4xx and an OpenAI-style error body (nothing forwarded, nothing logged): a body over
`--max-body-bytes` (413), a chat request that is not UTF-8 or not JSON (400). Upstream down or
timing out: 502 naming the upstream. Upstream errors (4xx/5xx) pass through unchanged and are not
recorded.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import urlsplit

from ..errors import ConfigError, DataError
from . import PROXY_INSTALL, PROXY_MODULES, require
from .exchange import Answer, SseAssembler, answer_from_json, record_fields
from .timing import Clock, NoClock, Timing

logger = logging.getLogger(__name__)

AGENT_HEADER = "x-iceburg-agent"
# RFC 9110 section 7.6.1 hop-by-hop headers, plus the framing ones the proxy sets itself (host, length).
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "transfer-encoding", "upgrade", "host", "content-length"}
HOP_BY_HOP_BYTES = {h.encode() for h in HOP_BY_HOP}
STATS_PATH = "/_iceburg/stats"
TIMING_PATH = "/_iceburg/timing"
LOOPS, HTTPS = ("auto", "asyncio", "uvloop"), ("auto", "h11", "httptools")  # uvicorn's names
# Upstream connection pools, used in turn. httpcore 1.0's pool scans all its connections on every
# request's start and end, in a nested loop over the idle ones (`_assign_requests_to_connections`),
# polling each idle socket: with 50 streams open through one pool, a cProfile of the proxy under
# the 50 x 8 load (iceburg serve, one cpurun slot) put 2.6 of its 7.3 profiled seconds there
# (1.66M `is_idle` calls, 77 polls per request). Eight pools of ~6 open connections each cut the
# scan to ~1/64 of that. cProfile inflated it (its cost per tiny call): unprofiled, under
# `cpurun --exclusive`, the proxy's CPU per request fell only from 4.64 to 4.56 ms (3 rounds of
# 1,000 each; bench/results/proxy_load_diagnose_pools.md; docs/loop.md). Kept: it does not cost more,
# and the scan grows with the square of the open streams.
UPSTREAM_POOLS = 8
# The pools are httpcore's, used directly: httpx's client around them (its Request/Response models,
# auth and redirect flows, cookie jar) cost 0.27-0.28 ms of CPU per streamed request on this machine
# (0.83-0.85 vs 0.57 ms, `bench/proxy_load.py --client-cpu`, bench/results/proxy_load_client_cpu.md),
# none of which a proxy uses;
# and its jar kept the upstream's Set-Cookie and added it to later requests that had no Cookie
# header, i.e. to other agents'. httpx is kept for its TLS context (certifi's CA bundle).
# How long an idle upstream connection is kept for the next request. httpx's default (5 s) equals
# uvicorn's keep-alive timeout (`iceburg serve`): the upstream connections of a burst of agents were
# gone before the next burst a few seconds later, so every burst opened them again (a TCP connect
# and several event-loop turns per request, on the loop that is relaying the other streams), and
# equal timeouts let the proxy send on a connection the server is closing at the same moment. 60 s
# is nginx's upstream `keepalive_timeout` default; `iceburg serve` keeps idle connections longer
# (server.KEEPALIVE_S), so the proxy closes first. An upstream that closes earlier is noticed by
# httpcore (the closed socket reads as EOF) and its connection replaced, as before.
UPSTREAM_KEEPALIVE_S = 60.0


@dataclass
class ProxyConfig:
    upstream: str
    log_dir: Path
    host: str = "127.0.0.1"
    port: int = 8011
    agent_map: dict[str, str] = field(default_factory=dict)
    # 8 MiB: a long agent transcript is a few hundred KB; OpenAI caps a request body near 10 MB.
    max_body_bytes: int = 8 * 2**20
    timeout_s: float = 600.0  # whole-answer read timeout: a CPU model may take minutes
    connect_timeout_s: float = 10.0
    fsync: str = "interval"  # FineTuningLogger durability policy
    timing: bool = False  # --timing: keep each request's own time in the proxy (GET /_iceburg/timing)
    # uvicorn's event loop and HTTP parser ("auto": uvloop / httptools where installed, the serve extra pins them)
    loop: str = "auto"
    http: str = "auto"

    def __post_init__(self) -> None:
        self.log_dir = Path(self.log_dir)
        parts = urlsplit(self.upstream)
        problems = []
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(f"--upstream {self.upstream!r}: expected an http(s) URL such as http://127.0.0.1:11434/v1")
        if self.max_body_bytes < 1024:
            problems.append(f"--max-body-bytes {self.max_body_bytes}: must be at least 1024")
        if self.timeout_s <= 0 or self.connect_timeout_s <= 0:
            problems.append("--timeout: must be positive")
        if self.loop not in LOOPS or self.http not in HTTPS:
            problems.append(f"--loop {self.loop!r} / --http {self.http!r}: expected one of {LOOPS} / {HTTPS}")
        if problems:
            raise ConfigError(problems)

    @property
    def upstream_display(self) -> str:
        """The upstream without credentials or query (what error messages and records name)."""
        p = urlsplit(self.upstream)
        port = f":{p.port}" if p.port else ""
        return f"{p.scheme}://{p.hostname}{port}{p.path.rstrip('/')}"


class IntervalSync:
    """`--fsync interval` with no disk sync on any request's path. The lines are written as before
    (one `os.write` each, before the client's `data: [DONE]`), by loggers opened with
    `fsync="never"`; this thread fsyncs the files written since its last pass once every `interval`
    seconds, and once more at shutdown. A crash of the proxy loses nothing a client saw complete
    (the kernel holds the line); a power loss can lose the last `interval`, the window
    FineTuningLogger's own "interval" policy has. That policy syncs inline, on the first request
    after each interval, which stalled the event loop (and every open stream) for one fsync:
    3.6 ms median, 8 ms max on this machine's disk idle (ext4 on virtio), tens of ms under load."""

    def __init__(self, interval: float = 1.0):
        self.interval = interval
        self.syncs = 0
        self._dirty: set[Path] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="iceburg-collect-fsync", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def written(self, path: Path) -> None:
        with self._lock:
            self._dirty.add(path)

    def sync_now(self) -> None:
        """fsync every file written since the last pass (Linux syncs the file through any descriptor;
        a file rotated away meanwhile was synced by the rotation itself)."""
        with self._lock:
            paths, self._dirty = self._dirty, set()
        for path in paths:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self.syncs += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sync_now()
            except OSError as e:
                logger.error("could not fsync the collected records: %s", e)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.sync_now()


class BadRequest(Exception):
    def __init__(self, status: int, message: str, code: str):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def error_response(status: int, message: str, code: str, kind: str = "invalid_request_error"):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": kind, "code": code, "param": None}}, status_code=status)


async def read_body(request, limit: int, clock: Clock | NoClock) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes (never buffered past it)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, f"request body of {int(declared)} bytes is over the proxy's limit of {limit} "
                         "(--max-body-bytes)", "body_too_large")
    chunks, size = [], 0
    async for chunk in clock.client(request.stream()):
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, f"request body is over the proxy's limit of {limit} bytes (--max-body-bytes)",
                             "body_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def chat_payload(method: str, path: str, body: bytes) -> dict[str, Any] | None:
    """The parsed request when it is a chat completion to record; None for anything else."""
    if method != "POST" or not path.rstrip("/").endswith("/chat/completions"):
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(400, f"request body is not UTF-8 (invalid byte at offset {e.start})", "invalid_encoding") from None
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise BadRequest(400, f"request body is not valid JSON: {e}", "invalid_json") from None
    # Valid JSON of another shape goes to the upstream, which answers it; it is never recorded.
    return obj if isinstance(obj, dict) and isinstance(obj.get("messages"), list) else None


def forward_headers(headers) -> list[tuple[bytes, bytes]]:
    """The client's end-to-end headers as the bytes it sent (a value that is not ASCII passes as is)."""
    out = [(k, v) for k, v in headers.raw if k.lower() not in HOP_BY_HOP_BYTES and k.lower() != b"accept-encoding"]
    return out + [(b"accept-encoding", b"identity")]


def response_headers(resp) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in resp.headers if k.lower() not in HOP_BY_HOP_BYTES]


def url_credentials(parts) -> tuple[bytes, bytes] | None:
    """`--upstream http://USER:PASS@host/...`: the Basic Authorization header httpx made of them."""
    import base64
    from urllib.parse import unquote

    if parts.username is None and parts.password is None:
        return None
    pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}".encode()
    return (b"authorization", b"Basic " + base64.b64encode(pair))


def header_value(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes:
    """The first value of header `name` (lower case) in httpcore's list of raw headers, else b""."""
    return next((v for k, v in headers if k.lower() == name), b"")


def upstream_errors() -> tuple[type[Exception], ...]:
    """httpcore's exceptions for a failed exchange (httpx mapped the same ones to httpx.HTTPError)."""
    import httpcore

    return (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol,
            httpcore.ProxyError)


class RecordingProxy:
    """The proxy's state (upstream client, log folder, counters) and its one request handler."""

    def __init__(self, cfg: ProxyConfig):
        from ..data.collector import AgentLogFolder

        self.cfg = cfg
        # "interval": the loggers never sync; IntervalSync does, off the request path
        self.syncer = IntervalSync() if cfg.fsync == "interval" else None
        self.folder = AgentLogFolder(cfg.log_dir, fsync="never" if self.syncer else cfg.fsync)
        parts = urlsplit(cfg.upstream)
        netloc = parts.netloc.rsplit("@", 1)[-1]  # host[:port]; credentials go to url_credentials
        self.origin = f"{parts.scheme}://{netloc}"
        self.base_path = parts.path.rstrip("/")
        self.clients: list[Any] = []  # UPSTREAM_POOLS httpcore pools, opened in the app's lifespan
        self._turn = 0
        self.host_header = (b"host", netloc.encode("idna"))  # as httpx sent it: host[:port]
        self.url_auth = url_credentials(parts)
        # httpx.Timeout(timeout_s, connect=connect_timeout_s) as httpcore's per-request extension
        self.extensions = {"timeout": {"connect": cfg.connect_timeout_s, "read": cfg.timeout_s,
                                       "write": cfg.timeout_s, "pool": cfg.timeout_s}}
        self.timing = Timing() if cfg.timing else None
        self.counts = {"requests": 0, "recorded": 0, "not_recorded": 0, "bad_requests": 0, "upstream_errors": 0,
                       "log_errors": 0}

    def next_client(self):
        """The next upstream pool in turn (UPSTREAM_POOLS says why there are several)."""
        self._turn = (self._turn + 1) % len(self.clients)
        return self.clients[self._turn]

    def upstream_headers(self, headers, body: bytes) -> list[tuple[bytes, bytes]]:
        """The client's headers as httpx sent them upstream: its end-to-end ones, Host, a length for a
        body (none for an empty one) and, for an upstream URL with credentials, their Basic
        Authorization in place of the client's."""
        out = [self.host_header, *forward_headers(headers)]
        if body:
            out.append((b"content-length", str(len(body)).encode()))
        if self.url_auth is not None:
            out = [(k, v) for k, v in out if k.lower() != b"authorization"] + [self.url_auth]
        return out

    def target_url(self, path: str, query: str) -> str:
        """The upstream URL: the request's path under the upstream's path (`/v1/x` and `/x` both
        reach `<upstream>/x` when the upstream is `.../v1`)."""
        if self.base_path and not (path == self.base_path or path.startswith(self.base_path + "/")):
            path = self.base_path + path
        return self.origin + path + (f"?{query}" if query else "")

    def agent_for(self, headers, payload: dict[str, Any]) -> str:
        explicit = headers.get(AGENT_HEADER, "").strip()
        if explicit:
            return explicit
        model = payload.get("model")
        if not isinstance(model, str) or not model.strip():
            return "unknown"
        for name in (model, model.split(":")[0]):  # Ollama tags: name:tag
            if name in self.cfg.agent_map:
                return self.cfg.agent_map[name]
        from ..config import ModelType

        try:
            return ModelType.parse(model.split(":")[0]).agent or model
        except ValueError:
            return model

    async def stats(self, request):
        from starlette.responses import JSONResponse

        return JSONResponse({**self.counts, "background_fsyncs": self.syncer.syncs if self.syncer else 0,
                             "upstream": self.cfg.upstream_display, "log_dir": str(self.cfg.log_dir),
                             "server": server_stack()})

    async def timing_summary(self, request):
        from starlette.responses import JSONResponse

        if self.timing is None:
            return JSONResponse({"enabled": False, "how": "iceburg collect --timing"})
        return JSONResponse(self.timing.summary(detail=request.query_params.get("detail") == "1"))

    async def handle(self, request):
        import httpcore  # present: create_proxy_app checked

        clock = Clock() if self.timing is not None else NoClock()
        self.counts["requests"] += 1
        try:
            body = await read_body(request, self.cfg.max_body_bytes, clock)
            payload = chat_payload(request.method, request.url.path, body)
        except BadRequest as e:
            self.counts["bad_requests"] += 1
            return error_response(e.status, e.message, e.code)
        clock.lap("prep")
        started = time.perf_counter()
        pool = self.next_client()
        # the path as the client sent it (percent-encoding kept), under the upstream's path
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        req = httpcore.Request(request.method, self.target_url(raw_path.decode("latin-1"), request.url.query),
                               headers=self.upstream_headers(request.headers, body), content=body,
                               extensions=self.extensions)
        try:
            resp = await clock.wait(pool.handle_async_request(req))
        except upstream_errors() as e:
            return self._upstream_failure(e)
        chunks = clock.upstream(resp.aiter_stream())
        if payload is None or resp.status != 200:
            self.counts["upstream_errors"] += resp.status >= 400
            return self._streaming(self._timed(self._relay(resp, chunks), clock), resp)
        agent = self.agent_for(request.headers, payload)
        if b"text/event-stream" in header_value(resp.headers, b"content-type"):
            relay = self._relay_recording(resp, chunks, payload, agent, started, request.url.path, clock)
            return self._streaming(self._timed(relay, clock), resp)
        try:
            data = await clock.wait(resp.aread(), then="record")
        except upstream_errors() as e:
            return self._upstream_failure(e)
        finally:
            await resp.aclose()
        answer = answer_from_json(data)
        clock.key = answer.response_id
        await self._record(payload, answer, agent, stream=False, started=started,
                           first_byte=time.perf_counter() - started, path=request.url.path)
        if isinstance(clock, Clock):  # the body's one send follows the return: not in this figure
            self.timing.add(clock)
        return self._complete(data, resp)

    def _timed(self, chunks: AsyncIterator[bytes], clock: Clock | NoClock) -> AsyncIterator[bytes]:
        """The relay as is; with `--timing`, wrapped to add the request's own time once its last
        chunk was handed to the client's connection (a stream cut by either side is not counted)."""
        if not isinstance(clock, Clock):
            return chunks

        async def timed() -> AsyncIterator[bytes]:
            try:
                async for chunk in chunks:
                    yield chunk
                self.timing.add(clock)
            finally:
                await chunks.aclose()  # the relay's own cleanup (closes the upstream answer) now

        return timed()

    def _upstream_failure(self, exc: Exception):
        import httpcore

        self.counts["upstream_errors"] += 1
        what = "timed out" if isinstance(exc, httpcore.TimeoutException) else "is unreachable"
        detail = str(exc) or type(exc).__name__
        logger.warning("upstream %s %s: %s", self.cfg.upstream_display, what, detail)
        return error_response(502, f"upstream {self.cfg.upstream_display} {what}: {detail}", "upstream_unavailable",
                              kind="upstream_error")

    def _streaming(self, body: AsyncIterator[bytes], resp):
        from .relay import RelayResponse  # the relay stays in the request's task (relay.py says why)

        out = RelayResponse(body, status_code=resp.status)
        out.raw_headers = response_headers(resp)
        return out

    def _complete(self, data: bytes, resp):
        from starlette.responses import Response

        out = Response(data, status_code=resp.status)
        out.raw_headers = [*response_headers(resp), (b"content-length", str(len(data)).encode())]
        return out

    async def _relay(self, resp, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        # An upstream failure mid-body propagates: uvicorn then drops the connection, so the client
        # sees a cut response, never a short one that looks complete.
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            await resp.aclose()

    async def _relay_recording(self, resp, chunks: AsyncIterator[bytes], payload: dict[str, Any], agent: str,
                               started: float, path: str, clock: Clock | NoClock) -> AsyncIterator[bytes]:
        asm, first_byte, logged = SseAssembler(), None, False
        try:
            async for chunk in chunks:
                first_byte = first_byte if first_byte is not None else time.perf_counter() - started
                asm.feed(chunk)
                if asm.done and not logged:  # written before the client sees [DONE]
                    logged = True
                    clock.key = asm.answer.response_id
                    clock.lap("record")
                    await self._record(payload, asm.answer, agent, stream=True, started=started,
                                       first_byte=first_byte, path=path, choices=asm.choices)
                    clock.lap("relay")
                yield chunk
            if not logged:  # an upstream that ends the stream without [DONE]
                await self._record(payload, asm.answer, agent, stream=True, started=started, first_byte=first_byte,
                                   path=path, choices=asm.choices)
        finally:
            await resp.aclose()

    async def _record(self, payload: dict[str, Any], answer: Answer, agent: str, *, stream: bool, started: float,
                      first_byte: float | None, path: str, choices: int = 1) -> None:
        if not answer.complete:
            self.counts["not_recorded"] += 1
            logger.warning("not recorded (%s): incomplete answer from %s", agent, answer.error or "no finish_reason")
            return
        fields = record_fields(payload, answer, stream=stream, latency_s=time.perf_counter() - started,
                               first_byte_s=first_byte, upstream=self.cfg.upstream_display, path=path)
        if choices > 1 or payload.get("n", 1) != 1:
            fields["metadata"]["choices_recorded"] = "choice 0 only"
        try:
            if self.cfg.fsync == "always":  # a disk sync per line: keep it off the event loop
                import anyio

                await anyio.to_thread.run_sync(lambda: self.folder.log(agent, **fields))
            else:
                path = self.folder.log(agent, **fields)
                if self.syncer is not None:
                    self.syncer.written(path)
            self.counts["recorded"] += 1
        except DataError as e:  # the loader would not read it back: not a training record
            self.counts["not_recorded"] += 1
            logger.warning("not recorded (%s): %s", agent, e)
        except OSError as e:
            self.counts["log_errors"] += 1
            logger.error("could not write the record for %s to %s: %s", agent, self.cfg.log_dir, e)


def create_proxy_app(cfg: ProxyConfig):
    """The Starlette app: `GET /_iceburg/stats` (counters) and every other path proxied."""
    require(PROXY_MODULES, "iceburg collect", PROXY_INSTALL)
    import httpcore
    import httpx
    from starlette.applications import Starlette
    from starlette.routing import Route

    proxy = RecordingProxy(cfg)

    @asynccontextmanager
    async def lifespan(app):
        # httpcore reads no HTTP(S)_PROXY (the proxy talks to exactly the upstream it was given), follows
        # no redirect and keeps no cookie: headers pass through both ways unchanged
        tls = httpx.create_ssl_context()  # one for all pools: each costs ~15 ms to load the CA bundle
        proxy.clients = [httpcore.AsyncConnectionPool(ssl_context=tls, max_connections=512 // UPSTREAM_POOLS,
                                                      max_keepalive_connections=128 // UPSTREAM_POOLS,
                                                      keepalive_expiry=UPSTREAM_KEEPALIVE_S)
                         for _ in range(UPSTREAM_POOLS)]
        if proxy.syncer is not None:
            proxy.syncer.start()
        # Everything alive now (the modules of starlette, httpx and iceburg; transformers too before
        # logging setup stopped importing it: ~33k objects then) lives as long as the proxy: leave it
        # out of the collector's full passes. Measured on this 2-core Xeon with transformers loaded:
        # a full collection over that heap took 16.7 ms, one stall of every open stream each time it
        # ran; after gc.freeze() 0.001 ms.
        gc.freeze()
        if proxy.timing is not None:
            proxy.timing.lag.start()  # --timing: the event loop's lag beside each request's phases
        try:
            yield
        finally:
            if proxy.timing is not None:
                proxy.timing.lag.task.cancel()
            for client in proxy.clients:
                await client.aclose()
            proxy.folder.close()
            if proxy.syncer is not None:
                proxy.syncer.stop()

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    app = Starlette(routes=[Route(STATS_PATH, proxy.stats, methods=["GET"]),
                            Route(TIMING_PATH, proxy.timing_summary, methods=["GET"]),
                            Route("/{path:path}", proxy.handle, methods=methods)], lifespan=lifespan)
    app.state.proxy = proxy
    return app


def server_stack() -> dict[str, str]:
    """What uvicorn runs on, read from the running process: the event loop's class, and the HTTP
    parser (uvicorn imports its httptools protocol module only when it serves with it)."""
    import asyncio

    loop = type(asyncio.get_running_loop())
    http = "httptools" if "uvicorn.protocols.http.httptools_impl" in sys.modules else "h11"
    return {"event_loop": f"{loop.__module__}.{loop.__qualname__}", "http": http}


def run_proxy(cfg: ProxyConfig, log_level: str = "warning") -> None:
    """Serve the proxy until interrupted (Ctrl-C or SIGTERM)."""
    import uvicorn

    app = create_proxy_app(cfg)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=log_level, access_log=False, server_header=False,
                date_header=False, loop=cfg.loop, http=cfg.http)
