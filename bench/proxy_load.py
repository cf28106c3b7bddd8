"""`iceburg collect` under load: 50 concurrent streaming clients x 20 requests against `iceburg serve`
(iceburg-tiny's Q8_0 GGUF, one llama.cpp thread) through the recording proxy.

    python bench/proxy_load.py [--clients 50] [--requests 20] [--max-tokens 8] [--pairs 200]
                               [--baseline-tree DIR] [--pin] [--part NAME]
    python bench/proxy_load.py --memory N [--every 250] [--tracemalloc | --trim] [--stack plain|fast|auto] [--pin]
    python bench/proxy_load.py --stack-ab R   (own clock under load: asyncio+h11 vs uvloop+httptools)
    python bench/proxy_load.py --client-cpu N (the upstream client's CPU per request: httpx vs httpcore)
    python bench/proxy_load.py --diagnose R [--diagnose-settings same,serve-nice,flags --proxy-flags "--fsync never"]
                               [--diagnose-settings same,flags --baseline-tree DIR]  (this tree vs an earlier one)
                               [--diagnose-settings same,direct,plain --capture]  (the same load direct and through a
                               proxy without --timing; kernel arrival
                               of each request's body segment, root)
                               [--diagnose-settings direct,plain,base-plain --baseline-tree DIR --capture]
                               (this tree's proxy and the baseline's, both as deployed, and direct; with the
                               proxy's own part on the wire per request: proxy_wire_parts)
          (own clock under load by phase: the client's body wait, the proxy's work, loop lag, CPU, run-queue wait)

Reported (bench/results/proxy_load.md):
- correctness: every request carries a unique user turn; the log folder must hold exactly one
  record per request, every line whole and parseable (and read back by the loader with 0 rejects),
  and each record's answer (text and tool calls; every 4th request forces a tool call) equal to
  what that client assembled from the stream it received;
- latency under load, direct vs through the proxy (the same load, one after the other): p50/p99
  of the whole streamed request as the client saw it;
- added latency without queueing: --pairs sequential streamed requests alternating direct and
  proxied with the same greedy body (the same tokens are generated), p50/p99 of the per-pair
  difference: the proxy's cost per request with generation excluded; and the same against a
  fixed-answer upstream (bench/_fixed_upstream.py: 11 events at once, no generation and none of
  its jitter in the difference);
- `--baseline-tree DIR` (an earlier iceburg, e.g. `git archive COMMIT iceburg | tar -x -C DIR`):
  its `iceburg collect` joins the sequential rotation (direct, this tree's proxy, the baseline's),
  so before and after are measured in the same run under the same load;
- the noise floor: each round also repeats its direct request; p50/p99 of that difference is
  what the pair method reads with no proxy at all (generation and scheduling jitter);
- the proxy's own time per request (`iceburg collect --timing`, a third proxy in the rotation):
  the time each request spent in the proxy minus its waits on the upstream, read from
  `GET /_iceburg/timing`; generation and its jitter are not in it (docs/loop.md compares methods);
- the proxy's own clock under load: the same 50-client load once more through the `--timing` proxy;
- the proxy's RSS (psutil) sampled every 0.25 s over the loaded run: at 0/25/50/75/100% and max.

`--pin`: `iceburg serve`, the fixed-answer upstream and the bench's clients on CPU 0, every proxy on
CPU 1 (`os.sched_setaffinity` on every thread; the CPUs in force are read back into the table), so
the proxy's work never waits behind generation for a core. `--part NAME` writes
proxy_load_NAME.{md,json} (e.g. `--pin --part pinned`).

`--memory N`: only the proxy's memory: N streamed requests (50 clients, after 2 rounds of warm-up)
against the fixed-answer upstream, its RSS read after every `--every` requests; the least-squares
slope of RSS over the second half decides "flat" vs "leak" (LEAK_MB_PER_1000 below states the
criterion); every record checked as in the loaded run. `--tracemalloc` runs the proxy under
tracemalloc (bench/_traced_proxy.py) and reports the heap's top growth sites of each half (its
snapshots inflate RSS, so the verdict comes from a run without it). Written as proxy_load_memory.

`--startup N` measures only the start: N starts of `iceburg collect` (this tree and, with
`--baseline-tree`, the baseline's, alternating) from process start to the first answer of
`/_iceburg/stats` (polled every 10 ms), and one more start each with `-X importtime` counting the
modules imported (and whether transformers / torch are among them); written as proxy_load_startup.
Every process (bench clients, proxy, server) shares this machine's cores; the table records it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

TOOLS = [{"type": "function", "function": {
    "name": "search", "description": "Search the literature",
    "parameters": {"type": "object", "properties": {"topic": {"type": "string", "enum": ["sleep", "memory"]}},
                   "required": ["topic"]}}}]


def body_for(client: int, i: int, max_tokens: int) -> dict:
    body = {"model": "iceburg-tiny", "stream": True, "temperature": 0, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": f"client {client} request {i}: what do we know about sleep?"}]}
    if i % 4 == 3:  # a forced tool call (enum argument: the grammar closes the JSON in a few tokens)
        body.update(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "search"}}, max_tokens=32)
    return body


async def stream_once(http, url: str, body: dict, headers: dict, gaps: list | None = None) -> tuple[float, dict]:
    """One streamed chat; (seconds, the answer the client assembled). With `gaps`, appends the
    client's own gap between writing the request's headers and finishing its body (httpcore's
    trace events): what a server reading the body waits for after the headers, proxy or not."""
    t0 = time.perf_counter()
    text = b""
    marks: dict[str, float] = {}

    async def trace(event: str, info: dict) -> None:
        marks[event] = time.perf_counter()

    ext = {"trace": trace} if gaps is not None else {}
    async with http.stream("POST", url, json=body, headers=headers, extensions=ext) as r:
        if gaps is not None:
            gaps.append(marks["http11.send_request_body.complete"] - marks["http11.send_request_headers.complete"])
        r.raise_for_status()
        async for raw in r.aiter_raw():
            text += raw
    elapsed = time.perf_counter() - t0
    content, calls, rid = "", {}, None
    for event in text.decode().split("\n\n"):
        if not event.startswith("data: ") or event == "data: [DONE]":
            continue
        chunk = json.loads(event[6:])
        rid = rid or chunk.get("id")
        delta = chunk["choices"][0]["delta"]
        content += delta.get("content") or ""
        for piece in delta.get("tool_calls") or []:
            c = calls.setdefault(piece["index"], {"name": "", "arguments": ""})
            name = piece["function"].get("name") or ""
            c["name"] += name if name != c["name"] else ""  # llama-cpp-python repeats the name
            c["arguments"] += piece["function"].get("arguments") or ""
    # id and seconds: --diagnose matches them with the proxy's upstream exchange for the same request
    return elapsed, {"content": content, "calls": [(c["name"], json.loads(c["arguments"])) for c in calls.values()],
                     "id": rid, "seconds": elapsed}


async def load(url: str, clients: int, requests: int, max_tokens: int,
               start: int = 0, gaps: list | None = None) -> tuple[list[float], dict[str, dict]]:
    import httpx

    lat: list[float] = []
    answers: dict[str, dict] = {}
    limits = httpx.Limits(max_connections=clients * 2, max_keepalive_connections=clients * 2)
    async with httpx.AsyncClient(timeout=600, limits=limits, trust_env=False) as http:
        async def one_client(c: int) -> None:
            for i in range(start, start + requests):
                body = body_for(c, i, max_tokens)
                s, ans = await stream_once(http, url, body, {"X-Iceburg-Agent": "surveyor"}, gaps)
                ans["first"] = i == start  # each client's first request: its connection opens, all 50 at once
                lat.append(s)
                answers[body["messages"][0]["content"]] = ans

        await asyncio.gather(*(one_client(c) for c in range(clients)))
    return lat, answers


async def pairs(direct: str, proxied: dict[str, str], n: int, max_tokens: int) -> dict[str, list[float]]:
    """`n` rounds of the same greedy stream: direct, then through each proxy in turn; per proxy, the
    differences to the round's direct request."""
    import httpx

    body = {"model": "m", "stream": True, "temperature": 0, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "what do we know about sleep?"}]}
    diffs: dict[str, list[float]] = {name: [] for name in proxied}
    async with httpx.AsyncClient(timeout=600, trust_env=False) as http:
        for i in range(n):
            a, _ = await stream_once(http, direct, body, {})
            for name, url in proxied.items():
                b, _ = await stream_once(http, url, body, {"X-Iceburg-Agent": "pairs"})
                diffs[name].append(b - a)
    return diffs


def start_collect_from(tree: Path, upstream: str, log_dir: Path, log_path: Path, extra: list[str] | None = None):
    """`iceburg collect` run from another source tree (its own `iceburg` package first on the path)."""
    import subprocess
    from iceburg.serve.launch import Service, free_port, wait_until_answering

    port = free_port()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "iceburg.app", "collect", "--upstream", upstream, "--log",
                                 str(log_dir), "--port", str(port), *(extra or [])], cwd=tree, stdout=log,
                                stderr=subprocess.STDOUT)
    return wait_until_answering(Service(proc, f"http://127.0.0.1:{port}", log_path), "/_iceburg/stats", 60,
                                f"the baseline proxy from {tree}")


def start_seconds(tree: Path, work: Path, env: dict | None = None) -> tuple[float, str]:
    """One `iceburg collect` start from `tree`: seconds until /_iceburg/stats answers, and its log."""
    import subprocess
    import urllib.request
    from iceburg.serve.launch import free_port

    port, log = free_port(), work / f"startup-{time.monotonic_ns()}.log"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "iceburg.app", "collect", "--upstream", "http://127.0.0.1:9/v1",
                                 "--log", str(work / "logs"), "--port", str(port)], cwd=tree, stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:
        while True:
            try:
                opener.open(f"http://127.0.0.1:{port}/_iceburg/stats", timeout=2).close()
                return time.perf_counter() - t0, log.read_text(errors="replace")
            except OSError:
                if proc.poll() is not None or time.perf_counter() - t0 > 60:
                    raise SystemExit(f"collect from {tree} did not start:\n{log.read_text()[-2000:]}") from None
                time.sleep(0.01)
    finally:
        proc.terminate()
        proc.wait(20)


def startup(n: int, baseline: Path | None) -> None:
    """`--startup N`: start-up seconds of this tree's `iceburg collect` (and the baseline's)."""
    import re

    from _common import machine_info, save

    work = Path(tempfile.mkdtemp(prefix="proxy-startup-"))
    trees = {"this": ROOT, **({"baseline": baseline.resolve()} if baseline else {})}
    times: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(n):
        for name, tree in trees.items():
            times[name].append(start_seconds(tree, work)[0])
    rows = []
    for name, tree in trees.items():
        text = start_seconds(tree, work, {"PYTHONPROFILEIMPORTTIME": "1"})[1]
        mods = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)\s*$", text, re.M)
        xs = times[name]
        rows.append({"tree": f"{name} ({tree})", "starts": len(xs), "p50_s": round(pct(xs, 50), 3),
                     "min_s": round(min(xs), 3), "max_s": round(max(xs), 3), "modules_imported": len(mods),
                     "transformers": any(m.split(".")[0] == "transformers" for m in mods),
                     "torch": any(m.split(".")[0] == "torch" for m in mods)})
    meta = {**machine_info(), "starts_per_tree": n, "order": "alternating", "poll_s": 0.01}
    print(save("iceburg collect start-up: process start to the first /_iceburg/stats answer", rows, meta,
               list(rows[0]), part="startup"))


def start_fixed_upstream():
    import subprocess

    from iceburg.serve.launch import Service, free_port, wait_until_answering

    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "_fixed_upstream.py"), str(port)])
    return wait_until_answering(Service(proc, f"http://127.0.0.1:{port}", Path(os.devnull)), "/v1/models", 30,
                                "the fixed-answer upstream")


PIN_LAYOUT = "iceburg serve, the fixed-answer upstream and the bench's clients on CPU 0; every proxy on CPU 1"


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of `pid` onto `cpus` (Linux sets affinity per thread; threads started later
    inherit their creator's, so the whole process stays there)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:  # a thread that ended meanwhile
            pass


def cpus_of(pid: int) -> list[int]:
    """The CPUs any thread of `pid` may run on (read back, so the table shows what was in force)."""
    cpus: set[int] = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            cpus |= os.sched_getaffinity(int(tid))
        except ProcessLookupError:
            pass
    return sorted(cpus)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.25):
        import psutil

        super().__init__(daemon=True)
        self.proc, self.every, self.samples, self.stop_flag = psutil.Process(pid), every, [], threading.Event()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            self.samples.append(self.proc.memory_info().rss / 2**20)
            time.sleep(self.every)


def check_records(log_dir: Path, answers: dict[str, dict]) -> dict:
    """Lines whole and parseable, one record per request, each equal to the client's answer."""
    from iceburg.data.loader import read_records
    from iceburg.records import RejectWriter

    torn, duplicated, records = 0, 0, {}
    for f in sorted((log_dir / "surveyor").glob("*.jsonl")):
        data = f.read_text(encoding="utf-8")
        torn += 0 if data.endswith("\n") else 1
        for line in data.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                torn += 1
                continue
            key = rec["messages"][-2]["content"]
            duplicated += key in records
            records.setdefault(key, rec)
    unequal = sum(1 for k, a in answers.items() if k in records and (
        records[k]["messages"][-1]["content"] != a["content"]
        or [(c["function"]["name"], c["function"]["arguments"]) for c in records[k]["messages"][-1].get("tool_calls", [])]
        != a["calls"]))
    rw = RejectWriter(None)
    loaded = sum(1 for _ in read_records([log_dir / "surveyor"], rw))
    return {"requests": len(answers), "records": len(records) + duplicated,
            "lost": sum(1 for k in answers if k not in records), "duplicated": duplicated,
            "torn": torn, "unequal": unequal, "loader_read": loaded, "loader_rejects": rw.total}


def start_traced_proxy(upstream: str, log_dir: Path, out: Path):
    """The proxy under tracemalloc (bench/_traced_proxy.py; SIGUSR1 writes a heap snapshot)."""
    import subprocess

    from iceburg.serve.launch import Service, free_port, wait_until_answering

    port = free_port()
    with open(out / "traced.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "_traced_proxy.py"), upstream, str(log_dir),
                                 str(port), str(out)], stdout=log, stderr=subprocess.STDOUT)
    return wait_until_answering(Service(proc, f"http://127.0.0.1:{port}", out / "traced.log"), "/_iceburg/stats", 60,
                                "the traced proxy")


STACKS = {"plain": ("asyncio", "h11"), "fast": ("uvloop", "httptools"), "auto": ("auto", "auto")}


def start_trim_proxy(upstream: str, log_dir: Path, out: Path, stack: str):
    """The proxy with a malloc_trim switch (bench/_trim_proxy.py; SIGUSR2 trims the C heap)."""
    import subprocess

    from iceburg.serve.launch import Service, free_port, wait_until_answering

    port = free_port()
    with open(out / "trim.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "_trim_proxy.py"), upstream, str(log_dir),
                                 str(port), str(out), *STACKS[stack]], stdout=log, stderr=subprocess.STDOUT)
    return wait_until_answering(Service(proc, f"http://127.0.0.1:{port}", out / "trim.log"), "/_iceburg/stats", 60,
                                "the trim proxy")


def trim_rss(service, out: Path, k: int, rss) -> tuple[float, float, str]:
    """RSS (MB) before and after the trim proxy's malloc_trim(0), and what malloc_trim returned."""
    import signal

    before = rss()
    service.proc.send_signal(signal.SIGUSR2)
    path, deadline = out / f"trim-{k}.done", time.monotonic() + 60
    while not path.exists():
        if time.monotonic() > deadline or service.proc.poll() is not None:
            raise SystemExit(f"no malloc_trim answer from the trim proxy:\n{service.log_text()[-2000:]}")
        time.sleep(0.05)
    time.sleep(0.2)
    return before, rss(), path.read_text()


def stack_extra(stack: str) -> list[str]:
    loop, http = STACKS[stack]
    return ["--loop", loop, "--http", http]


def snapshot(service, out: Path, k: int):
    """Heap snapshot K of the traced proxy (it writes it on SIGUSR1; waited for, then loaded)."""
    import signal
    import tracemalloc

    service.proc.send_signal(signal.SIGUSR1)
    path = out / f"snap-{k}.pickle"
    deadline = time.monotonic() + 120
    while not path.exists():
        if time.monotonic() > deadline or service.proc.poll() is not None:
            raise SystemExit(f"no heap snapshot from the traced proxy:\n{service.log_text()[-2000:]}")
        time.sleep(0.1)
    return tracemalloc.Snapshot.load(str(path))


def slope(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares slope of RSS (MB) over requests, per 1,000 requests, and its standard error."""
    n = len(points)
    xs, ys = [p[0] / 1000 for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    resid = sum((y - my - b * (x - mx)) ** 2 for x, y in zip(xs, ys))
    return b, (resid / (n - 2) / sxx) ** 0.5


def growth_sites(first, last, top: int = 8) -> list[dict]:
    """The heap's top growth sites between two snapshots (tracemalloc, grouped by traceback)."""
    import tracemalloc

    keep = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap*>")]
    stats = last.filter_traces(keep).compare_to(first.filter_traces(keep), "traceback")
    out = []
    for st in sorted(stats, key=lambda s: s.size_diff, reverse=True)[:top]:
        frames = [f"{Path(f.filename).name}:{f.lineno}" for f in reversed(st.traceback)][:4]  # allocation first
        out.append({"site": " <- ".join(frames), "size_diff_kb": round(st.size_diff / 1024, 1),
                    "count_diff": st.count_diff})
    return out


# Flat vs leak: the proxy keeps nothing per request once it is answered, and the smallest thing a
# request allocates that a leak would keep is a few hundred bytes (its 11 relayed chunks of ~190 B,
# the ~1 KB record line). A leak of even one of them per request grows RSS by >= 0.1 MB per 1,000
# requests; so the run is "flat" when the second half's slope is below that bound with its 95%
# interval (slope + 1.96 SE), and "leak" when the interval lies wholly above it.
LEAK_MB_PER_1000 = 0.1


def memory_run(args) -> None:
    """`--memory N`: the proxy's RSS over N streamed requests (50 clients) against the fixed-answer
    upstream (or `iceburg serve` over iceburg-tiny, `--memory-upstream serve`)."""
    import psutil

    from iceburg.serve.launch import start_collect, start_serve

    work = Path(tempfile.mkdtemp(prefix="proxy-memory-"))
    if args.pin:
        pin(os.getpid(), {0})
    if args.memory_upstream == "serve":
        from iceburg.export.gguf import write_gguf
        from iceburg.models.tiny import ensure_tiny_model

        gguf = write_gguf(ensure_tiny_model(), work / "iceburg-tiny-q8_0.gguf", "q8_0", name="iceburg-tiny")
        upstream = start_serve(gguf, work / "serve.log", threads=1)
    else:
        upstream = start_fixed_upstream()
    services, snaps, answers, trims = [upstream], [], {}, []
    try:
        proxy = (start_traced_proxy(upstream.url + "/v1", work / "logs", work) if args.tracemalloc
                 else start_trim_proxy(upstream.url + "/v1", work / "logs", work, args.stack) if args.trim
                 else start_collect(upstream.url + "/v1", work / "logs", work / "collect.log",
                                    extra=stack_extra(args.stack)))
        services.append(proxy)
        if args.pin:
            pin(proxy.proc.pid, {1})
        url, rss = proxy.url + "/v1/chat/completions", lambda: psutil.Process(proxy.proc.pid).memory_info().rss / 2**20
        per = max(1, args.every // args.clients)
        done, points, t0 = 0, [], time.perf_counter()
        for r in range(-(-args.memory // (per * args.clients)) + 2):  # 2 rounds of warm-up first
            _, got = asyncio.run(load(url, args.clients, per, args.max_tokens, start=r * per))
            answers.update(got)
            done += len(got) if r >= 2 else 0
            if r >= 2:
                points.append((done, rss()))
            if args.trim and r == 2:  # the early level, trimmed: what the heap holds once warm
                trims.append((done, *trim_rss(proxy, work, 1, rss)))
            if args.tracemalloc and r in (1, (-(-args.memory // (per * args.clients))) // 2 + 1):
                snaps.append(snapshot(proxy, work, len(snaps) + 1))
        wall = time.perf_counter() - t0
        if args.tracemalloc:
            snaps.append(snapshot(proxy, work, len(snaps) + 1))
        if args.trim:
            trims.append((done, *trim_rss(proxy, work, 2, rss)))
        server = __import__("httpx").get(proxy.url + "/_iceburg/stats", trust_env=False).json().get("server")
    finally:
        for service in reversed(services):
            service.stop()
    check = check_records(work / "logs", answers)
    check["server_stack"] = server
    if trims:  # (after N requests, RSS before malloc_trim(0), after, its return value)
        check["malloc_trim"] = [{"after_requests": n, "rss_before_mb": round(a, 2), "rss_after_mb": round(b, 2),
                                 "returned": int(r)} for n, a, b, r in trims]
    memory_report(args, points, wall, check, snaps)


def memory_report(args, points: list[tuple[int, float]], wall: float, check: dict, snaps: list) -> None:
    from _common import machine_info, save

    half = [p for p in points if p[0] > points[-1][0] / 2]
    rows = []
    for name, pts in (("whole run after warm-up", points), ("second half", half)):
        b, se = slope(pts)
        ys = [p[1] for p in pts]
        rows.append({"part": name, "samples": len(pts), "requests": f"{pts[0][0]}-{pts[-1][0]}",
                     "rss_start_mb": round(ys[0], 2), "rss_end_mb": round(ys[-1], 2),
                     "rss_min_mb": round(min(ys), 2), "rss_max_mb": round(max(ys), 2),
                     "slope_mb_per_1000": round(b, 4), "slope_ci95_high": round(b + 1.96 * se, 4)})
    b, high = rows[1]["slope_mb_per_1000"], rows[1]["slope_ci95_high"]
    verdict = ("flat" if high < LEAK_MB_PER_1000 else
               "leak" if b - (high - b) > LEAK_MB_PER_1000 else "undecided")
    if args.tracemalloc:  # each snapshot moves RSS by tens of MB: only the heap's growth sites count
        verdict = "none (tracemalloc run: RSS moved by its snapshots; the verdict comes from a run without it)"
    per_round = max(1, args.every // args.clients) * args.clients
    meta = {**machine_info(), "measured_requests": points[-1][0], "warm_up_requests": 2 * per_round,
            "clients": args.clients, "sample_every_requests": per_round,
            "upstream": {"fixed": "fixed-answer (bench/_fixed_upstream.py)",
                         "serve": "iceburg serve (iceburg-tiny Q8_0, 1 thread)"}[args.memory_upstream],
            "max_tokens": args.max_tokens, "wall_s": round(wall, 1),
            "tracemalloc": args.tracemalloc, "pinning": PIN_LAYOUT if args.pin else "none",
            "criterion": f"flat when the second half's RSS slope + 1.96 SE < {LEAK_MB_PER_1000} MB per 1,000 requests",
            "verdict": verdict, "rss_points": [(n, round(m, 2)) for n, m in points], **check,
            "load_avg_1m_end": round(os.getloadavg()[0], 2)}
    if len(snaps) == 3:
        meta["heap_growth_second_half"] = growth_sites(snaps[1], snaps[2])
        meta["heap_growth_first_half"] = growth_sites(snaps[0], snaps[1])
    upstream = "fixed-answer upstream" if args.memory_upstream == "fixed" else "iceburg serve"
    print(save(f"iceburg collect memory over {points[-1][0]} streamed requests ({args.clients} clients, {upstream}"
               f"{', tracemalloc' if args.tracemalloc else ''})", rows, meta, list(rows[0]),
               part=args.part or "memory"))
    print(verdict, json.dumps(meta.get("heap_growth_second_half", []), indent=1))
    if check["lost"] or check["torn"] or check["unequal"] or check["records"] != check["requests"]:
        raise SystemExit("FAILED: lost, torn, duplicated or unequal records")


def stack_ab(args) -> None:
    """`--stack-ab R`: the 50-client load against `iceburg serve` through two `--timing` proxies,
    uvicorn on asyncio + h11 ("plain") and on uvloop + httptools ("fast"), R rounds each, alternating
    (the order flips every round); the proxy's own time under load per stack."""
    import httpx
    from _common import machine_info, save

    from iceburg.export.gguf import write_gguf
    from iceburg.models.tiny import ensure_tiny_model
    from iceburg.serve.launch import start_collect, start_serve

    work = Path(tempfile.mkdtemp(prefix="proxy-stack-"))
    gguf = write_gguf(ensure_tiny_model(), work / "iceburg-tiny-q8_0.gguf", "q8_0", name="iceburg-tiny")
    services = [start_serve(gguf, work / "serve.log", threads=1)]
    own, lat, answers, server, per_round = {}, {}, {}, {}, {}
    try:
        for name in ("plain", "fast"):
            services.append(start_collect(services[0].url + "/v1", work / f"logs-{name}", work / f"collect-{name}.log",
                                          extra=["--timing", *stack_extra(name)]))
            own[name], lat[name], answers[name], per_round[name] = [], [], {}, []
        urls = dict(zip(("plain", "fast"), (s.url for s in services[1:])))
        asyncio.run(pairs(services[0].url + "/v1/chat/completions",
                          {n: u + "/v1/chat/completions" for n, u in urls.items()}, 5, args.max_tokens))
        for r in range(args.stack_ab):
            for name in (("plain", "fast") if r % 2 == 0 else ("fast", "plain")):
                got_lat, got = asyncio.run(load(urls[name] + "/v1/chat/completions", args.clients, args.requests,
                                                args.max_tokens, start=r * args.requests))
                xs = httpx.get(urls[name] + "/_iceburg/timing", trust_env=False).json()["own_ms"][-len(got_lat):]
                own[name] += xs
                lat[name] += got_lat
                answers[name].update(got)
                per_round[name].append(round(pct(xs, 99), 2))
        for name, u in urls.items():
            server[name] = httpx.get(u + "/_iceburg/stats", trust_env=False).json()["server"]
    finally:
        for service in reversed(services):
            service.stop()
    rows, checks = [], {}
    for name in ("plain", "fast"):
        checks[name] = check_records(work / f"logs-{name}", answers[name])
        xs, ls = own[name], lat[name]
        rows.append({"stack": f"{name}: {server[name]['event_loop']} + {server[name]['http']}", "requests": len(xs),
                     "own_p50_ms": round(pct(xs, 50), 2), "own_p99_ms": round(pct(xs, 99), 2),
                     "own_mean_ms": round(statistics.fmean(xs), 2), "own_p99_per_round_ms": per_round[name],
                     "request_p50_ms": round(pct(ls, 50) * 1000, 1), "request_p99_ms": round(pct(ls, 99) * 1000, 1)})
    meta = {**machine_info(), "clients": args.clients, "requests_per_client_per_round": args.requests,
            "rounds_per_stack": args.stack_ab, "order": "alternating, flipped every round", "upstream":
            "iceburg serve (iceburg-tiny Q8_0, 1 thread)", "max_tokens": args.max_tokens, "pinning": "none",
            "server_stack": server, "records": checks, "load_avg_1m_end": round(os.getloadavg()[0], 2)}
    print(save(f"iceburg collect's own time under load by uvicorn stack ({args.clients} clients x {args.requests} "
               f"streamed requests x {args.stack_ab} rounds per stack, iceburg serve)", rows, meta, list(rows[0]),
               part=args.part or "uvloop"))
    bad = [n for n, c in checks.items() if c["lost"] or c["torn"] or c["unequal"] or c["records"] != c["requests"]]
    if bad:
        raise SystemExit(f"FAILED: lost, torn, duplicated or unequal records through {bad}")


def client_cpu(args) -> None:
    """`--client-cpu N`: the upstream client's own CPU per streamed request (thread CPU time around one
    request and the reading of its answer), httpx.AsyncClient vs httpcore's pool that it wraps, N
    sequential requests each against the fixed-answer upstream (its 11 events), alternating in 2
    rounds; the first 100 of each are left out (warm-up). What the proxy saves per request by using
    httpcore's pools directly (iceburg/serve/proxy.py, UPSTREAM_POOLS)."""
    import httpcore
    import httpx
    from _common import machine_info, save

    fixed = start_fixed_upstream()
    url = fixed.url + "/v1/chat/completions"
    body = json.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode()
    headers = [("content-type", "application/json"), ("x-iceburg-agent", "surveyor"), ("accept-encoding", "identity")]

    async def via_httpx() -> list[float]:
        out = []
        async with httpx.AsyncClient(trust_env=False) as c:
            for _ in range(args.client_cpu):
                t = time.thread_time()
                resp = await c.send(c.build_request("POST", url, headers=headers, content=body), stream=True)
                async for _ in resp.aiter_raw():
                    pass
                await resp.aclose()
                out.append(time.thread_time() - t)
        return out

    async def via_httpcore() -> list[float]:
        out = []
        async with httpcore.AsyncConnectionPool() as pool:
            for _ in range(args.client_cpu):
                t = time.thread_time()
                resp = await pool.handle_async_request(httpcore.Request("POST", url, headers=[
                    ("host", fixed.url.split("//")[1]), *headers, ("content-length", str(len(body)))], content=body))
                async for _ in resp.aiter_stream():
                    pass
                await resp.aclose()
                out.append(time.thread_time() - t)
        return out

    rows = []
    try:
        for r in range(2):
            for name, run in (("httpx.AsyncClient", via_httpx), ("httpcore.AsyncConnectionPool", via_httpcore)):
                xs = asyncio.run(run())[100:]
                rows.append({"round": r + 1, "client": name, "requests": len(xs),
                             "cpu_p50_ms": round(pct(xs, 50) * 1000, 3), "cpu_mean_ms": round(statistics.fmean(xs) * 1000, 3)})
    finally:
        fixed.stop()
    meta = {**machine_info(), "upstream": "fixed-answer (bench/_fixed_upstream.py), sequential, one connection",
            "measure": "time.thread_time() around one streamed request and the reading of its 11 events",
            "load_avg_1m_end": round(os.getloadavg()[0], 2)}
    print(save("The upstream client's CPU per streamed request: httpx vs httpcore", rows, meta, list(rows[0]),
               part=args.part or "client_cpu"))


def sched(pid: int) -> dict:
    """The process's CPU time (ns, /proc/PID/stat utime + stime: ended threads included) and its main
    thread's run-queue wait (/proc/PID/schedstat: ns runnable but waiting for a CPU) and involuntary
    switches (the proxy's main thread is its event loop)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    cpu_ns = (int(fields[11]) + int(fields[12])) * 1e9 / os.sysconf("SC_CLK_TCK")
    _, wait, _ = map(int, open(f"/proc/{pid}/schedstat").read().split())
    status = open(f"/proc/{pid}/status").read()
    return {"cpu_ns": cpu_ns, "runq_wait_ns": wait,
            "involuntary": int(status.split("nonvoluntary_ctxt_switches:")[1].split()[0])}


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat (idle and iowait are not busy)."""
    vals = list(map(int, open("/proc/stat").readline().split()[1:]))
    return sum(vals) - vals[3] - vals[4], sum(vals)


def renice(pid: int, nice: int) -> None:
    """Every thread of `pid` to `nice` (Linux keeps a nice value per thread; lowering it needs root)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.setpriority(os.PRIO_PROCESS, int(tid), nice)
        except ProcessLookupError:
            pass


# Classic BPF on lo (Ethernet framing): IPv4 TCP segments as received (pkttype HOST, so each once).
CAPTURE_BPF = [(0x28, 0, 0, 12), (0x15, 0, 5, 0x800), (0x30, 0, 0, 23), (0x15, 0, 3, 6), (0x20, 0, 0, 0xFFFFF004),
               (0x15, 0, 1, 0), (0x06, 0, 0, 512), (0x06, 0, 0, 0)]


def capture_segments(ports: str, out: Path) -> None:
    """`--capture-port P,Q --capture-out F` (run as a separate process by `--capture`; needs root):
    every TCP segment with a payload to or from the ports on lo, with the kernel's receive time and the
    first bytes of its payload, until SIGTERM; written as JSON lines for `capture_analysis`."""
    import ctypes
    import signal
    import socket
    import struct

    want = {int(x) for x in ports.split(",")}
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
    prog = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *ins) for ins in CAPTURE_BPF))
    sock.setsockopt(socket.SOL_SOCKET, 26, struct.pack("HL", len(CAPTURE_BPF), ctypes.addressof(prog)))  # ATTACH_FILTER
    sock.setsockopt(socket.SOL_SOCKET, 35, 1)  # SO_TIMESTAMPNS: the kernel's receive time in each message
    sock.bind(("lo", 0))
    sock.settimeout(0.2)
    stop, segs = [], []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    while not stop:
        try:
            data, anc, _, _ = sock.recvmsg(512, 64)
        except (TimeoutError, InterruptedError):
            continue
        ihl = (data[14] & 0xF) * 4
        sport, dport = struct.unpack("!HH", data[14 + ihl:18 + ihl])
        doff = (data[14 + ihl + 12] >> 4) * 4
        if (sport in want or dport in want) and struct.unpack("!H", data[16:18])[0] - ihl - doff > 0:
            sec, ns = next(struct.unpack("qq", d[:16]) for _, typ, d in anc if typ == 35)
            segs.append((sec + ns * 1e-9, sport, dport, data[14 + ihl + doff:].decode("latin-1")))
    out.write_text(json.dumps(segs))


def capture_analysis(segs: list, server: int) -> tuple[list[float], dict[str, tuple[float, float, float]]]:
    """From the segments on `server`'s port: each request's gap between its headers' segment and the
    next one from the same client (the body), and per response id the server's wire span: its
    request's headers in, its answer's last segment out, and its request's last segment in (the body:
    the server has the whole request; nothing can be generated before it), i.e. the server's whole
    part of the exchange, generation and queueing for the model included, none of the client's."""
    import re

    heads, gaps, open_, wire = {}, [], {}, {}

    def close(ex: list) -> None:
        if ex[1] is not None and ex[2] is not None:
            wire[ex[1]] = (ex[0], ex[2], ex[3])

    for ts, sport, dport, head in segs:
        if dport == server and head.startswith("POST"):
            if sport in open_:  # the connection's previous exchange is over
                close(open_[sport])
            heads[sport], open_[sport] = ts, [ts, None, None, ts]
        elif dport == server and sport in open_:
            if sport in heads:
                gaps.append(ts - heads.pop(sport))
            if open_[sport][2] is None:  # more of the request before any of the answer
                open_[sport][3] = ts
        elif sport == server and dport in open_:
            ex = open_[dport]
            ex[2] = ts  # the answer's latest segment so far
            if ex[1] is None and (m := re.search(r'"id":\s*"([^"]+)"', head)):
                ex[1] = m.group(1)
    for ex in open_.values():
        close(ex)
    return gaps, wire


def start_capture(ports: list[int], out: Path):
    import subprocess

    proc = subprocess.Popen([sys.executable, __file__, "--capture-port", ",".join(map(str, ports)),
                             "--capture-out", str(out)])
    time.sleep(0.5)  # the socket is bound before the round starts
    return proc


def capture_result(proc, out: Path, port: int, serve_port: int, answers: dict) -> dict:
    """The capture's figures for one round: the body's kernel gap on `port` (the server the clients
    called) and, per request matched by response id, `outside_serve` = the client's whole request
    minus iceburg serve's wire time for it: what is not the model's server (the client's own work and
    hops, and through the proxy the proxy's), the same definition direct and proxied."""
    import signal

    proc.send_signal(signal.SIGTERM)
    proc.wait(120)
    segs = json.loads(out.read_text())
    gaps, called = capture_analysis(segs, port)
    _, spans = capture_analysis(segs, serve_port)
    wire = {k: end - start for k, (start, end, _) in spans.items()}
    outside = [a["seconds"] - wire[a["id"]] for a in answers.values() if a["id"] in wire]
    # without each client's first request (the round's opening burst: 50 connections and requests at once)
    steady = [a["seconds"] - wire[a["id"]] for a in answers.values() if a["id"] in wire and not a["first"]]
    gaps = gaps or [0.0]
    res = {"kernel_body_gap_ms": {q: round(pct(gaps, q) * 1000, 3) for q in (50, 99, 100)},
           "kernel_split_requests": len(gaps), "outside_serve_matched": len(outside)}
    if port != serve_port:
        res.update(proxy_wire_parts(called, spans, answers))
    if outside:
        res.update({f"outside_serve_p{q}_ms": round(pct(outside, q) * 1000, 3) for q in (50, 90, 99)},
                   outside_serve_mean_ms=round(statistics.fmean(outside) * 1000, 3),
                   outside_serve_over_5ms=sum(x > 0.005 for x in outside))
    if steady:
        res.update({f"outside_serve_steady_p{q}_ms": round(pct(steady, q) * 1000, 3) for q in (50, 99)},
                   outside_serve_steady_n=len(steady))
    res.update(outside_whole_request(spans, answers))
    return res


def outside_whole_request(spans: dict, answers: dict) -> dict:
    """`outside_serve` with serve's span taken from its request's last segment in (it has the whole
    request) instead of its headers: the same for both settings, but a gap between the headers and
    the body at serve's port is the sender's (the client direct, the proxy through it), where the
    headers-based figure counts it as serve's in both. Under the opening burst the client's own
    gap is tens of ms (its 50 requests' headers, then their bodies): headers-based, that wait lies
    inside serve's span direct and outside it through the proxy (the proxy waits for the body before
    forwarding). All requests, and without each client's first."""
    xs = [(a["first"], a["seconds"] - (spans[a["id"]][1] - spans[a["id"]][2]))
          for a in answers.values() if a["id"] in spans]
    out = {}
    for name, sel in (("", [x for _, x in xs]), ("_steady", [x for f, x in xs if not f])):
        if sel:
            out.update({f"outside_whole{name}_p{q}_ms": round(pct(sel, q) * 1000, 3) for q in (50, 99)})
    return out


def proxy_wire_parts(called: dict, spans: dict, answers: dict) -> dict:
    """Through a proxy, per request (response id) on the wire: `forward` = the request's last segment
    in at iceburg serve minus its headers in at the proxy (everything before serve has the whole
    request: the client's body, uvicorn, the handler, the proxy's upstream connection and request) and
    `tail` = the answer's last segment out of the proxy minus its last segment out of serve (the
    relay behind the last chunk); `proxy_wire` = the two together, the proxy's own part of this one
    request as the kernel saw it, without the between-distributions limit of `outside_serve`. p50/p99
    over all requests, over each client's first (the opening burst) and over the rest."""
    def stats(name: str, xs: list[float]) -> dict:
        return {f"{name}_p{q}_ms": round(pct(xs, q) * 1000, 3) for q in (50, 99)} if xs else {}

    rows = [(a["first"], spans[a["id"]][2] - called[a["id"]][0], called[a["id"]][1] - spans[a["id"]][1])
            for a in answers.values() if a["id"] in spans and a["id"] in called]
    out = {"proxy_wire_matched": len(rows)}
    for name, keep in (("", lambda f: True), ("_first", lambda f: f), ("_steady", lambda f: not f)):
        sel = [r for r in rows if keep(r[0])]
        out.update(stats(f"forward{name}", [r[1] for r in sel]), **stats(f"tail{name}", [r[2] for r in sel]),
                   **stats(f"proxy_wire{name}", [r[1] + r[2] for r in sel]))
    return out


def direct_round(url: str, serve_url: str, args, r: int, pid: int, proxy_pid: int | None = None) -> dict:
    """One 50-client round to `url` without reading a proxy's clock: straight to `iceburg serve`
    (the same load without the proxy) or through a proxy started without `--timing` (as deployed).
    The whole request's latency, the clients' own header-to-body gaps and, with `--capture`, the
    kernel's and the time outside `iceburg serve`."""
    gaps: list[float] = []
    port, serve_port = int(url.rsplit(":", 1)[1]), int(serve_url.rsplit(":", 1)[1])
    cap = start_capture(sorted({port, serve_port}), Path(tempfile.mkdtemp()) / "cap.json") if args.capture else None
    before, busy0, t0 = sched(pid), machine_busy(), time.perf_counter()
    proxy_before = sched(proxy_pid) if proxy_pid else None
    lat, answers = asyncio.run(load(url + "/v1/chat/completions", args.clients, args.requests, args.max_tokens,
                                    start=r * args.requests, gaps=gaps))
    wall, busy1, after = time.perf_counter() - t0, machine_busy(), sched(pid)
    proxy_after = sched(proxy_pid) if proxy_pid else None
    out = {"requests": len(lat), "wall_s": round(wall, 2),
           "machine_busy_pct": round(100 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]), 1),
           "serve_cpu_ms_per_req": round((after["cpu_ns"] - before["cpu_ns"]) / 1e6 / len(lat), 3),
           "client_gap_ms": {q: round(pct(gaps, q) * 1000, 3) for q in (50, 99)},
           "request_p50_ms": round(pct(lat, 50) * 1000, 1), "request_p99_ms": round(pct(lat, 99) * 1000, 1)}
    if proxy_pid:  # the proxy's CPU per request over the round (/proc: all its threads)
        out["proxy_cpu_ms_per_req"] = round((proxy_after["cpu_ns"] - proxy_before["cpu_ns"]) / 1e6 / len(lat), 3)
    if cap:
        out.update(capture_result(cap, Path(cap.args[-1]), port, serve_port, answers))
    return out, answers


def diagnose_round(url: str, args, r: int, pids: dict[str, int], serve_url: str) -> tuple[dict, dict]:
    """One 50-client round through the --timing proxy: its phases (GET /_iceburg/timing?detail=1) and
    each process's CPU and run-queue wait over the round."""
    import httpx

    port, serve_port = int(url.rsplit(":", 1)[1]), int(serve_url.rsplit(":", 1)[1])
    cap = start_capture([port, serve_port], Path(tempfile.mkdtemp()) / "cap.json") if args.capture else None
    before = {name: sched(pid) for name, pid in pids.items()}
    gaps: list[float] = []
    busy0 = machine_busy()
    t0 = time.perf_counter()
    lat, answers = asyncio.run(load(url + "/v1/chat/completions", args.clients, args.requests, args.max_tokens,
                                    start=r * args.requests, gaps=gaps))
    wall = time.perf_counter() - t0
    busy1 = machine_busy()
    after = {name: sched(pid) for name, pid in pids.items()}
    timing = httpx.get(url + "/_iceburg/timing?detail=1", trust_env=False).json()
    rows = [dict(zip(timing["columns"], x)) for x in timing["rows_ms"][-len(lat):]]
    n = len(lat)
    per = {name: {k: (after[name][k] - before[name][k]) for k in after[name]} for name in pids}
    out = {"requests": n, "wall_s": round(wall, 2), "machine_busy_pct": round(100 * (busy1[0] - busy0[0]) /
                                                                                max(1, busy1[1] - busy0[1]), 1)}
    for name, d in per.items():
        out[f"{name}_cpu_ms_per_req"] = round(d["cpu_ns"] / 1e6 / n, 3)
    out["proxy_runq_wait_ms_per_req"] = round(per["proxy"]["runq_wait_ns"] / 1e6 / n, 3)
    out["proxy_involuntary_per_req"] = round(per["proxy"]["involuntary"] / n, 2)
    out["loop_lag"] = timing["loop_lag"]
    # what the proxy adds as the client sees it: the client's whole request minus the proxy's exchange
    # with the upstream for the same request (matched by the answer's response id), i.e. the client's
    # latency less the direct call the proxy made on its behalf under the same load (docs/loop.md)
    seconds = {a["id"]: a["seconds"] for a in answers.values()}
    keys = timing.get("keys", [])[-len(lat):]  # none from a baseline tree's proxy older than the keys
    if keys and any(k not in seconds for k in keys):
        raise SystemExit(f"{sum(k not in seconds for k in keys)} timing rows match no client request by response id")
    for row, key in zip(rows, keys or [None] * len(rows)):
        row["own_minus_client"] = row["own"] - row["client_wait"]
        if key is not None:
            row["client_added"] = seconds[key] * 1000 - row["upstream_wait"]
    out["client_gap_ms"] = {q: round(pct(gaps, q) * 1000, 3) for q in (50, 99)}
    out["request_p99_ms"] = round(pct(lat, 99) * 1000, 1)
    if cap:
        out.update(capture_result(cap, Path(cap.args[-1]), port, serve_port, answers))
    return out, {"rows": rows, "answers": answers, "lat": lat}


def phase_table(rows: list[dict]) -> dict:
    """p50/p99 of own time and each phase's wall and CPU; the phases' means over all and the slowest 1%."""
    keys = list(rows[0])
    tail = sorted(rows, key=lambda x: x["own"])[-max(1, len(rows) // 100):]
    net_tail = sorted(rows, key=lambda x: x["own_minus_client"])[-max(1, len(rows) // 100):]
    return {"p50": {k: round(pct([x[k] for x in rows], 50), 3) for k in keys},
            "p99": {k: round(pct([x[k] for x in rows], 99), 3) for k in keys},
            "mean": {k: round(statistics.fmean(x[k] for x in rows), 3) for k in keys},
            "mean_slowest_1pct": {k: round(statistics.fmean(x[k] for x in tail), 3) for k in keys},
            "mean_slowest_1pct_by_net": {k: round(statistics.fmean(x[k] for x in net_tail), 3) for k in keys},
            "over_5ms": sum(x["own"] > 5 for x in rows)}


def diagnose(args) -> None:
    """`--diagnose R`: where the proxy's own time goes under the 50-client load against `iceburg
    serve`: R rounds through one `--timing` proxy, alternating the scheduling setting (`same`: every
    process at nice 0; `serve-nice`: `iceburg serve` at nice 10, so the kernel runs the proxy and
    the clients first when they wake), each round's phases, loop lag, each process's CPU, the proxy's
    run-queue wait, and the clients' own gap between a request's headers and its body."""
    from _common import machine_info, save

    from iceburg.export.gguf import write_gguf
    from iceburg.models.tiny import ensure_tiny_model
    from iceburg.serve.launch import start_collect, start_serve

    work = Path(tempfile.mkdtemp(prefix="proxy-diag-"))
    gguf = write_gguf(ensure_tiny_model(), work / "iceburg-tiny-q8_0.gguf", "q8_0", name="iceburg-tiny")
    services = [start_serve(gguf, work / "serve.log", threads=1)]
    rounds, answers, all_rows = [], {}, {}
    settings = args.diagnose_settings.split(",")
    try:
        proxies = {}  # "flags": a second proxy with --proxy-flags, its rounds at nice 0 like "same"
        for name in ("default", "flags") if "flags" in settings else ("default",):
            extra = ["--timing", *(args.proxy_flags.split() if name == "flags" else [])]
            if name == "flags" and args.baseline_tree:  # the baseline tree's proxy instead
                services.append(start_collect_from(args.baseline_tree.resolve(), services[0].url + "/v1",
                                                   work / f"logs-{name}", work / f"collect-{name}.log", extra))
            else:
                services.append(start_collect(services[0].url + "/v1", work / f"logs-{name}",
                                              work / f"collect-{name}.log", extra=extra))
            proxies[name] = services[-1]
            answers[name] = {}
        if "plain" in settings:  # this tree's proxy as deployed: no --timing
            services.append(start_collect(services[0].url + "/v1", work / "logs-plain", work / "collect-plain.log"))
            proxies["plain"], answers["plain"] = services[-1], {}
        if "base-plain" in settings:  # the baseline tree's proxy as deployed
            services.append(start_collect_from(args.baseline_tree.resolve(), services[0].url + "/v1",
                                               work / "logs-base-plain", work / "collect-base-plain.log"))
            proxies["base-plain"], answers["base-plain"] = services[-1], {}
        asyncio.run(pairs(services[0].url + "/v1/chat/completions",
                          {n: p.url + "/v1/chat/completions" for n, p in proxies.items()}, 5, args.max_tokens))
        t_run = time.perf_counter()
        for r in range(args.diagnose):
            setting = settings[(r + r // len(settings)) % len(settings)]  # alternating, order flipped each pass
            began = round(time.perf_counter() - t_run, 1)  # a proxy's idle gap since its last round (keep-alive)
            if setting in ("direct", "plain", "base-plain"):  # straight to serve, or through a proxy without --timing
                url = services[0].url if setting == "direct" else proxies[setting].url
                out, got = direct_round(url, services[0].url, args, r, services[0].proc.pid,
                                        None if setting == "direct" else proxies[setting].proc.pid)
                if setting != "direct":
                    answers[setting].update(got)
                rounds.append({"round": r + 1, "setting": setting, "start_s": began, **out})
                rounds[-1]["client_gap_p99_ms"] = rounds[-1]["client_gap_ms"][99]
                print(json.dumps(rounds[-1]), flush=True)
                continue
            proxy = proxies["flags" if setting == "flags" else "default"]
            pids = {"proxy": proxy.proc.pid, "serve": services[0].proc.pid, "bench": os.getpid()}
            renice(pids["serve"], 10 if setting == "serve-nice" else 0)
            renice(pids["proxy"], -10 if setting == "proxy-nice" else 0)  # below 0 needs root (CAP_SYS_NICE)
            out, got = diagnose_round(proxy.url, args, r, pids, services[0].url)
            answers["flags" if setting == "flags" else "default"].update(got["answers"])
            all_rows.setdefault(setting, []).extend(got["rows"])
            ph = phase_table(got["rows"])
            rounds.append({"round": r + 1, "setting": setting, "start_s": began, **out, "own_p50_ms": ph["p50"]["own"],
                           "own_p99_ms": ph["p99"]["own"], "over_5ms": ph["over_5ms"],
                           "client_wait_p99_ms": ph["p99"]["client_wait"], "client_gap_p99_ms": out["client_gap_ms"][99],
                           "net_p50_ms": ph["p50"]["own_minus_client"], "net_p99_ms": ph["p99"]["own_minus_client"],
                           "net_over_5ms": sum(x["own_minus_client"] > 5 for x in got["rows"]), "phases": ph,
                           "client_added_p50_ms": ph["p50"].get("client_added"),
                           "client_added_p99_ms": ph["p99"].get("client_added"),
                           "client_added_over_5ms": sum(x.get("client_added", 0) > 5 for x in got["rows"]),
                           "request_p50_ms": round(pct(got["lat"], 50) * 1000, 1)})
            print(json.dumps({k: v for k, v in rounds[-1].items() if k != "phases"}), flush=True)
    finally:
        for service in reversed(services):
            service.stop()
    # a proxy that served no round (the --timing one when no setting reads its clock) has nothing to check
    check = {name: check_records(work / f"logs-{name}", got) for name, got in answers.items() if got}
    cols = ["round", "setting", "start_s", "requests", "own_p50_ms", "own_p99_ms", "over_5ms", "client_wait_p99_ms",
            "client_gap_p99_ms", "net_p50_ms", "net_p99_ms", "net_over_5ms", "machine_busy_pct",
            "proxy_cpu_ms_per_req", "proxy_runq_wait_ms_per_req", "proxy_involuntary_per_req", "serve_cpu_ms_per_req",
            "bench_cpu_ms_per_req", "client_added_p50_ms", "client_added_p99_ms", "client_added_over_5ms",
            "request_p50_ms", "request_p99_ms", "outside_serve_p50_ms", "outside_serve_p99_ms",
            "outside_serve_mean_ms", "outside_serve_over_5ms", "outside_serve_steady_p50_ms",
            "outside_serve_steady_p99_ms"]
    for x in rounds:
        x["loop_lag_p99_ms"] = x.get("loop_lag", {}).get("p99_ms")
        x["kernel_body_gap_p99_ms"] = x.get("kernel_body_gap_ms", {}).get(99)
    cols += ["loop_lag_p99_ms", "kernel_body_gap_p99_ms", "outside_whole_p50_ms", "outside_whole_p99_ms",
             "outside_whole_steady_p99_ms", "proxy_wire_p50_ms", "proxy_wire_p99_ms",
             "proxy_wire_steady_p99_ms", "forward_first_p50_ms", "forward_first_p99_ms", "tail_first_p99_ms"]
    meta = {**machine_info(), "clients": args.clients, "requests_per_client_per_round": args.requests,
            "rounds": args.diagnose, "upstream": "iceburg serve (iceburg-tiny Q8_0, 1 thread)",
            "max_tokens": args.max_tokens, "proxy_flags": args.proxy_flags or "", "pinning": "none",
            "settings": {"same": "every process at nice 0",
                         "serve-nice": "iceburg serve at nice 10, the proxy and the bench (clients) at 0",
                         "proxy-nice": "the proxy at nice -10 (root), iceburg serve and the bench at 0",
                         "direct": "the same load straight to iceburg serve (no proxy), every process at nice 0",
                         "plain": "through this tree's proxy started without --timing (as deployed), nice 0",
                         "base-plain": f"through the proxy of {args.baseline_tree} without --timing, nice 0",
                         "flags": f"a second proxy started with {args.proxy_flags!r}"
                                  + (f" from {args.baseline_tree}" if args.baseline_tree else "")
                                  + ", every process at nice 0"},
            "columns": {"own": "the proxy's own clock as defined (time in the proxy minus upstream waits)",
                        "client_wait": "inside own: the handler awaiting the request body's bytes from the client",
                        "client_gap": "the client's own gap between writing the headers and finishing the body "
                                      "(httpcore trace events, in the bench process)",
                        "net": "own minus client_wait: the proxy's work and its event-loop turns",
                        "client_added": "the client's whole request minus the proxy's waits on the upstream for "
                                        "the same request (matched by response id): the proxy's cost as the client "
                                        "sees it, generation and queueing for the model excluded",
                        "kernel_body_gap": "--capture: the kernel's receive time of the body's segment minus the "
                                           "headers' segment, on the server's port (proxy or, direct, serve)",
                        "outside_serve": "--capture: the client's whole request minus iceburg serve's wire time for "
                                         "it (its request's headers in to its answer's last segment out, kernel "
                                         "timestamps on its port; matched by response id): direct, the client's "
                                         "own part; through the proxy, that plus the proxy's; the proxy's added "
                                         "latency is the difference between the settings; `steady` leaves out "
                                         "each client's first request of the round (50 new connections and "
                                         "requests at once)",
                        "outside_whole": "--capture: outside_serve with serve's span from its request's last "
                                         "segment in (the whole request) instead of its headers "
                                         "(outside_whole_request says why)",
                        "proxy_wire": "--capture, through a proxy: per request, `forward` (its last segment in at "
                                      "iceburg serve minus its headers in at the proxy) plus `tail` (the answer's last segment "
                                      "out of the proxy minus out of serve): the proxy's own part of that request on "
                                      "the wire (proxy_wire_parts); `first` = each client's first request",
                        "request": "the whole streamed request as the client saw it (queueing for the one "
                                   "llama.cpp slot included)"},
            "records": check, "by_setting": {k: phase_table(v) for k, v in all_rows.items() if v},
            "rounds_detail": rounds, "load_avg_1m_end": round(os.getloadavg()[0], 2)}
    print(save(f"iceburg collect's own time under load, by phase ({args.clients} clients x {args.requests} streamed "
               f"requests per round, iceburg serve)", rounds, meta, cols, part=args.part or "diagnose"))
    print(json.dumps(meta["by_setting"], indent=1))
    bad = [n for n, c in check.items() if c["lost"] or c["torn"] or c["unequal"] or c["records"] != c["requests"]]
    if bad:
        raise SystemExit(f"FAILED: lost, torn, duplicated or unequal records through {bad}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--baseline-tree", type=Path, help="an earlier iceburg source tree to measure beside this one")
    ap.add_argument("--startup", type=int, default=0, metavar="N", help="measure only N start-ups of the proxy")
    ap.add_argument("--pin", action="store_true", help=f"pin the processes: {PIN_LAYOUT}")
    ap.add_argument("--part", help="write bench/results/proxy_load_PART.{md,json} (another setting's table)")
    ap.add_argument("--every", type=int, default=250, help="with --memory: requests between RSS samples")
    ap.add_argument("--memory", type=int, default=0, metavar="N",
                    help="measure only the proxy's RSS over N streamed requests against the fixed-answer upstream")
    ap.add_argument("--memory-upstream", choices=["fixed", "serve"], default="fixed",
                    help="with --memory: the fixed-answer upstream (default) or iceburg serve over iceburg-tiny")
    ap.add_argument("--tracemalloc", action="store_true", help="with --memory: the proxy runs under tracemalloc "
                    "(bench/_traced_proxy.py) and the top growth sites of the second half are reported")
    ap.add_argument("--trim", action="store_true", help="with --memory: the proxy (bench/_trim_proxy.py) runs "
                    "glibc malloc_trim(0) after the first sample and at the end; RSS before/after each")
    ap.add_argument("--stack", choices=sorted(STACKS), default="plain",
                    help="with --memory: uvicorn's loop + parser in the proxy (plain = asyncio + h11, the "
                    "earlier runs; fast = uvloop + httptools)")
    ap.add_argument("--stack-ab", type=int, default=0, metavar="R",
                    help="only the loaded run's own clock, R rounds each through asyncio+h11 and uvloop+httptools")
    ap.add_argument("--diagnose", type=int, default=0, metavar="R",
                    help="only the loaded run's own time by phase, R rounds alternating the scheduling setting")
    ap.add_argument("--diagnose-settings", default="same,serve-nice",
                    help="with --diagnose: the settings to alternate (same, serve-nice, proxy-nice, flags, direct, plain, "
                    "base-plain)")
    ap.add_argument("--proxy-flags", default="", help="with --diagnose: extra `iceburg collect` flags")
    ap.add_argument("--capture", action="store_true", help="with --diagnose (root): the kernel's arrival times of each "
                    "request's header and body segments on the server's port (AF_PACKET on lo)")
    ap.add_argument("--client-cpu", type=int, default=0, metavar="N", help="only the upstream client's CPU per "
                    "streamed request, httpx vs httpcore, N sequential requests each (fixed-answer upstream)")
    ap.add_argument("--capture-port", help=argparse.SUPPRESS)  # the capture process (--capture)
    ap.add_argument("--capture-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.capture_port:
        return capture_segments(args.capture_port, args.capture_out)
    if args.client_cpu:
        return client_cpu(args)
    if args.diagnose:
        return diagnose(args)
    if args.stack_ab:
        return stack_ab(args)
    if args.startup:
        return startup(args.startup, args.baseline_tree)
    if args.memory:
        return memory_run(args)
    if args.pin:
        pin(os.getpid(), {0})  # the bench's clients; the servers started below inherit CPU 0

    from _common import machine_info, save

    from iceburg.export.gguf import write_gguf
    from iceburg.models.tiny import ensure_tiny_model
    from iceburg.serve.launch import start_collect, start_serve

    work = Path(tempfile.mkdtemp(prefix="proxy-load-"))
    gguf = write_gguf(ensure_tiny_model(), work / "iceburg-tiny-q8_0.gguf", "q8_0", name="iceburg-tiny")
    serve, fixed = start_serve(gguf, work / "serve.log", threads=1), start_fixed_upstream()
    services = [serve, fixed]
    try:
        proxy = start_collect(serve.url + "/v1", work / "logs", work / "collect.log")
        services.append(proxy)
        rotation = {"llama": (serve.url + "/v1/chat/completions", {"this": proxy.url}),
                    "fixed": (fixed.url + "/v1/chat/completions", {})}
        services.append(start_collect(fixed.url + "/v1", work / "logs-fixed", work / "collect-fixed.log"))
        rotation["fixed"][1]["this"] = services[-1].url
        for kind, upstream in (("llama", serve.url), ("fixed", fixed.url)):  # --timing: the proxy's own clock
            services.append(start_collect(upstream + "/v1", work / f"logs-timed-{kind}", work / f"collect-timed-{kind}.log",
                                          extra=["--timing"]))
            rotation[kind][1]["timed"] = services[-1].url
        timed_urls = {kind: px["timed"] for kind, (_, px) in rotation.items()}
        if args.baseline_tree:
            for kind, upstream in (("llama", serve.url), ("fixed", fixed.url)):
                services.append(start_collect_from(args.baseline_tree.resolve(), upstream + "/v1",
                                                   work / f"logs-base-{kind}", work / f"collect-base-{kind}.log"))
                rotation[kind][1]["baseline"] = services[-1].url
        if args.pin:
            for service in services[2:]:  # the proxies (serve and the fixed upstream stay on CPU 0)
                pin(service.proc.pid, {1})
        rotation = {k: (d, {n: u + "/v1/chat/completions" for n, u in px.items()}) for k, (d, px) in rotation.items()}
        for direct, px in rotation.values():  # the noise floor: the same direct request again
            px["noise"] = direct
        direct_url, proxied_url = rotation["llama"][0], rotation["llama"][1]["this"]
        cpus = {"cpus_bench": cpus_of(os.getpid()), "cpus_serve": cpus_of(serve.proc.pid),
                "cpus_fixed_upstream": cpus_of(fixed.proc.pid),
                "cpus_proxies": sorted({c for s in services[2:] for c in cpus_of(s.proc.pid)})}
        for direct, px in rotation.values():
            asyncio.run(pairs(direct, px, 5, args.max_tokens))  # warm every path
        t0 = time.perf_counter()
        direct_lat, _ = asyncio.run(load(direct_url, args.clients, args.requests, args.max_tokens))
        direct_s = time.perf_counter() - t0
        sampler = RssSampler(proxy.proc.pid)
        sampler.start()
        t0 = time.perf_counter()
        proxied_lat, answers = asyncio.run(load(proxied_url, args.clients, args.requests, args.max_tokens))
        proxied_s = time.perf_counter() - t0
        sampler.stop_flag.set()
        sampler.join()
        import httpx

        # the same load once more through the --timing proxy: its own clock with 50 streams open at once
        timed_llama = timed_urls["llama"]
        timed_lat, _ = asyncio.run(load(rotation["llama"][1]["timed"], args.clients, args.requests, args.max_tokens))
        own_load = httpx.get(timed_llama + "/_iceburg/timing", trust_env=False).json()["own_ms"][-len(timed_lat):]
        diffs = {kind: asyncio.run(pairs(direct, px, args.pairs, args.max_tokens))
                 for kind, (direct, px) in rotation.items()}
        stats = httpx.get(proxy.url + "/_iceburg/stats", trust_env=False).json()
        # the sequential rounds only: the warm-up pairs came first, the loaded run never used these
        own = {kind: httpx.get(u + "/_iceburg/timing", trust_env=False).json()["own_ms"][-args.pairs:]
               for kind, u in timed_urls.items()}
    finally:
        for service in reversed(services):
            service.stop()
    check = check_records(work / "logs", answers)
    ms = lambda s: round(s * 1000, 2)  # noqa: E731
    rows = [
        {"measure": "direct, under load", "requests": len(direct_lat), "wall_s": round(direct_s, 1),
         "p50_ms": ms(pct(direct_lat, 50)), "p99_ms": ms(pct(direct_lat, 99))},
        {"measure": "through collect, under load", "requests": len(proxied_lat), "wall_s": round(proxied_s, 1),
         "p50_ms": ms(pct(proxied_lat, 50)), "p99_ms": ms(pct(proxied_lat, 99))},
    ]
    upstream_name = {"llama": "iceburg serve", "fixed": "fixed-answer upstream"}
    for kind, by_proxy in diffs.items():
        for name, d in by_proxy.items():
            who = {"this": "", "timed": ", with --timing",
                   "baseline": f", baseline ({args.baseline_tree})"}.get(name, "")
            what = "noise floor (direct, again), sequential" if name == "noise" else "added per request, sequential"
            rows.append({"measure": f"{what}, {upstream_name[kind]}{who}", "requests": len(d),
                         "p50_ms": ms(pct(d, 50)), "p99_ms": ms(pct(d, 99)), "mean_ms": ms(statistics.fmean(d))})
    rows.append({"measure": "proxy's own time (--timing) under load: 50 clients through it, iceburg serve",
                 "requests": len(own_load), "p50_ms": round(pct(own_load, 50), 2), "p99_ms": round(pct(own_load, 99), 2),
                 "mean_ms": round(statistics.fmean(own_load), 2)})
    for kind, xs in own.items():
        rows.append({"measure": f"proxy's own time (--timing: in the proxy minus upstream waits), {upstream_name[kind]}",
                     "requests": len(xs), "p50_ms": round(pct(xs, 50), 2), "p99_ms": round(pct(xs, 99), 2),
                     "mean_ms": round(statistics.fmean(xs), 2)})
    rss = sampler.samples
    meta = {**machine_info(), "clients": args.clients, "requests_per_client": args.requests,
            "max_tokens": args.max_tokens, "llama_threads": 1, "fsync": "interval (default)",
            "pinning": PIN_LAYOUT if args.pin else "none (the scheduler places every process)", **cpus, **check,
            "proxy_stats": {k: stats[k] for k in ("recorded", "not_recorded", "bad_requests", "upstream_errors")},
            # RSS at 0, 25, 50, 75 and 100% of the loaded run, and its max: flat = no growth after warm-up
            "proxy_rss_mb_quartiles": [round(rss[min(len(rss) - 1, q * (len(rss) - 1) // 4)], 1) for q in range(5)],
            "proxy_rss_mb_max": round(max(rss), 1), "rss_samples": len(rss),
            "load_avg_1m_end": round(os.getloadavg()[0], 2)}
    table = save(f"iceburg collect under load ({args.clients} clients x {args.requests} streamed requests, "
                 f"iceburg-tiny Q8_0, max_tokens {args.max_tokens})", rows, meta,
                 ["measure", "requests", "wall_s", "p50_ms", "p99_ms", "mean_ms"], part=args.part)
    print(table)
    print(json.dumps(check))
    if check["lost"] or check["torn"] or check["unequal"] or check["duplicated"] or check["records"] != check["requests"]:
        raise SystemExit("FAILED: lost, torn, duplicated or unequal records")

if __name__ == "__main__":
    main()
