"""`iceburg collect` in front of a real `iceburg serve` (llama.cpp over iceburg-tiny's GGUF).

Every check reads the log files the proxy wrote and compares them with what the client received
over HTTP; the client side assembles streamed answers with its own code (not the proxy's).
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from iceburg.data.loader import read_records
from iceburg.data.tool_calls import normalise_tools
from iceburg.records import RejectWriter
from iceburg.serve.launch import free_port

from serve_helpers import FORCE_SEARCH, NO_EOS, TOOLS

pytestmark = pytest.mark.llama  # a real llama.cpp server (conftest skips without it)

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
SECRET = "sk-iceburg-test-SECRET-7f3a"
QUESTION = [{"role": "system", "content": "You are a careful research surveyor."},
            {"role": "user", "content": "What do we know about sleep and memory?"}]


def client_stream(client: httpx.Client, url: str, body: dict, headers: dict | None = None) -> tuple[dict, list[dict]]:
    """POST a streaming chat; returns (assembled message, events without volatile keys)."""
    text = b""
    with client.stream("POST", url, json={**body, "stream": True}, headers=headers) as r:
        assert r.status_code == 200, r.read()
        for raw in r.iter_raw():
            text += raw
    events = [e[len("data: "):] for e in text.decode().split("\n\n") if e.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    content, calls = "", {}
    for ch in chunks:
        delta = ch["choices"][0]["delta"]
        content += delta.get("content") or ""
        for piece in delta.get("tool_calls") or []:
            c = calls.setdefault(piece["index"], {"name": "", "arguments": ""})
            name = piece["function"].get("name") or ""
            c["name"] += name if name != c["name"] else ""  # llama-cpp-python repeats the name per delta
            c["arguments"] += piece["function"].get("arguments") or ""
    # ids (uuids, also inside tool call ids) and timestamps differ per request
    stable = [json.loads(UUID.sub("<uuid>", json.dumps({k: v for k, v in ch.items() if k != "created"})))
              for ch in chunks]
    return {"content": content, "calls": [calls[i] for i in sorted(calls)]}, stable


def client_json(client: httpx.Client, url: str, body: dict, headers: dict | None = None) -> tuple[dict, dict]:
    r = client.post(url, json=body, headers=headers)
    assert r.status_code == 200, r.text
    obj = r.json()
    msg = obj["choices"][0]["message"]
    calls = [{"name": c["function"]["name"], "arguments": c["function"]["arguments"]} for c in msg.get("tool_calls") or []]
    return {"content": msg.get("content") or "", "calls": calls}, obj


def log_lines(log_dir: Path) -> list[dict]:
    files = sorted(log_dir.rglob("*.jsonl"))
    text = "".join(f.read_text(encoding="utf-8") for f in files)
    assert not text or text.endswith("\n"), "a torn last line"
    return [json.loads(line) for line in text.splitlines()]


def assert_record_is(record: dict, request: dict, got: dict) -> None:
    """The logged record holds the request's messages and tools and exactly the answer the client got."""
    assert record["messages"][:-1] == request["messages"]
    answer = record["messages"][-1]
    assert answer["role"] == "assistant" and answer["content"] == got["content"]
    logged_calls = [(c["function"]["name"], c["function"]["arguments"]) for c in answer.get("tool_calls", [])]
    assert logged_calls == [(c["name"], json.loads(c["arguments"])) for c in got["calls"]]
    assert record.get("tools") == (normalise_tools(request["tools"]) if request.get("tools") else None)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_records_equal_what_the_client_received(served, collect, client, tmp_path, stream):
    proxy = collect(served.url + "/v1")
    send = client_stream if stream else client_json
    plain = {"model": "iceburg-tiny", "messages": QUESTION, "max_tokens": 24, "temperature": 0}
    tool = {**plain, "max_tokens": 48, "tools": TOOLS, "tool_choice": FORCE_SEARCH}
    headers = {"X-Iceburg-Agent": "surveyor", "Authorization": f"Bearer {SECRET}", "X-Api-Key": SECRET}
    got = [send(client, proxy.url + "/v1/chat/completions", body, headers)[0] for body in (plain, tool)]
    assert got[1]["calls"] and got[1]["calls"][0]["name"] == "search"
    records = log_lines(tmp_path / "logs")
    assert len(records) == 2
    for record, body, answer in zip(records, (plain, tool), got):
        assert_record_is(record, body, answer)
        meta = record["metadata"]
        assert record["agent_type"] == "surveyor" and meta["stream"] is stream
        assert meta["latency_ms"] > 0 and meta["params"]["max_tokens"] == body["max_tokens"]
        assert meta["finish_reason"] in ("stop", "length", "tool_calls")
        if not stream:  # llama-cpp-python reports usage on JSON answers
            assert meta["usage"]["completion_tokens"] >= 1
    # no header value reaches the log folder, whatever the file
    for f in (tmp_path / "logs").rglob("*"):
        if f.is_file():
            assert SECRET not in f.read_text(encoding="utf-8", errors="replace")
    # the loader reads the folder back as training records, nothing rejected
    rw = RejectWriter(None)
    loaded = list(read_records([tmp_path / "logs" / "surveyor"], rw))
    assert len(loaded) == 2 and rw.total == 0 and loaded[1].tools


def test_stream_passes_through_unchanged(served, collect, client):
    """The same greedy request direct and through the proxy: the same events (ids/timestamps aside)
    and the same response headers the upstream chose."""
    proxy = collect(served.url + "/v1")
    body = {"model": "m", "messages": QUESTION, "max_tokens": 16, "temperature": 0, "tools": TOOLS,
            "tool_choice": FORCE_SEARCH}
    direct = client_stream(client, served.url + "/v1/chat/completions", body)
    proxied = client_stream(client, proxy.url + "/v1/chat/completions", body)
    assert proxied == direct
    a = client.get(served.url + "/v1/models")
    b = client.get(proxy.url + "/v1/models")
    assert (b.status_code, b.json()) == (a.status_code, a.json())
    # an error status passes through unchanged and is not recorded (llama-cpp-python answers an
    # unknown role with 500 and its error body)
    bad = {"model": "m", "messages": [{"role": "nobody", "content": "x"}]}
    a, b = (client.post(u + "/v1/chat/completions", json=bad) for u in (served.url, proxy.url))
    assert b.status_code == a.status_code >= 400 and b.json() == a.json()
    stats = client.get(proxy.url + "/_iceburg/stats").json()
    assert stats["recorded"] == 1 and stats["upstream_errors"] == 1  # only the proxied stream


def test_agent_type_from_header_map_or_model(served, collect, client, tmp_path):
    proxy = collect(served.url + "/v1", "--agent-map", "llama3.2:3b=dissident")
    body = {"messages": QUESTION, "max_tokens": 4, "temperature": 0}
    for model, header in (("whatever", "synthesist"), ("llama3.2:3b", None), ("iceburg-oracle:v2", None),
                          ("org/Some Model", None)):
        client_json(client, proxy.url + "/v1/chat/completions", {**body, "model": model},
                    {"X-Iceburg-Agent": header} if header else None)
    folders = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert folders == sorted(["dissident", "org_Some_Model", "oracle", "synthesist"])
    day = time.strftime("%Y-%m-%d", time.gmtime())
    assert all((tmp_path / "logs" / f / f"{day}.jsonl").is_file() for f in folders)


def test_iceburg_train_reads_the_collected_folder(served, collect, client, tmp_path):
    proxy = collect(served.url + "/v1")
    for i in range(3):
        client_json(client, proxy.url + "/v1/chat/completions",
                    {"model": "iceburg-surveyor", "messages": [{"role": "user", "content": f"Question {i} about sleep?"}],
                     "max_tokens": 24, "temperature": 0})
    out = tmp_path / "filtered"
    proc = subprocess.run([sys.executable, "-m", "iceburg.cli", "--model-type", "surveyor", "--data-path",
                           str(tmp_path / "logs" / "surveyor"), "--filter-only", "--output-dir", str(out)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(next(out.rglob("report.json")).read_text())
    assert (report["lines_read"], report["load_rejected"], report["stats"]["total_input"]) == (3, 0, 3), report


def test_kill_9_mid_stream_leaves_whole_lines_and_restart_appends(served, collect, client, tmp_path):
    proxy = collect(served.url + "/v1")
    url = proxy.url + "/v1/chat/completions"
    done = [client_stream(client, url, {"model": "m", "messages": QUESTION + [{"role": "user", "content": f"n{i}"}],
                                        "max_tokens": 12, "temperature": 0}, {"X-Iceburg-Agent": "surveyor"})[0]
            for i in range(3)]
    # a long answer (end-of-turn banned), killed after its first chunks have reached the client
    long_body = {"model": "m", "messages": QUESTION, "max_tokens": 1500, "temperature": 0, "logit_bias": NO_EOS,
                 "stream": True}
    with client.stream("POST", url, json=long_body, headers={"X-Iceburg-Agent": "surveyor"}) as r:
        seen = 0
        with pytest.raises(httpx.HTTPError):  # the connection dies with the proxy
            for _ in r.iter_raw():
                seen += 1
                if seen == 5:
                    assert proxy.stop(signal.SIGKILL) == -signal.SIGKILL
    records = log_lines(tmp_path / "logs")
    assert [r["messages"][-1]["content"] for r in records] == [d["content"] for d in done]
    # restart on the same folder: the next exchange is appended after the three
    again = collect(served.url + "/v1")
    more = client_json(client, again.url + "/v1/chat/completions",
                       {"model": "m", "messages": QUESTION, "max_tokens": 8, "temperature": 0},
                       {"X-Iceburg-Agent": "surveyor"})[0]
    records = log_lines(tmp_path / "logs")
    assert [r["messages"][-1]["content"] for r in records] == [d["content"] for d in done] + [more["content"]]


def test_upstream_down_500_timeout_and_cut_stream(collect, client, tmp_path):
    port = free_port()
    dead = collect(f"http://127.0.0.1:{port}/v1")
    r = client.post(dead.url + "/v1/chat/completions", json={"model": "m", "messages": QUESTION})
    assert r.status_code == 502 and f"127.0.0.1:{port}" in r.json()["error"]["message"]
    flaky_port = free_port()
    flaky = subprocess.Popen([sys.executable, str(Path(__file__).with_name("flaky_upstream.py")), str(flaky_port)])
    try:
        proxy = collect(f"http://127.0.0.1:{flaky_port}/v1", "--timeout", "1")
        for _ in range(100):  # the flaky server starts in well under a second; 10 s at most
            if client.get(proxy.url + "/v1/models").status_code == 200:
                break
            time.sleep(0.1)
        r = client.post(proxy.url + "/v1/chat/completions", json={"model": "fail-500", "messages": QUESTION})
        assert r.status_code == 500 and r.json()["error"]["message"] == "model crashed"
        r = client.post(proxy.url + "/v1/chat/completions", json={"model": "slow", "messages": QUESTION})
        assert r.status_code == 502 and "timed out" in r.json()["error"]["message"]
        with pytest.raises(httpx.HTTPError):  # a stream cut upstream reaches the client cut, not short
            client_stream(client, proxy.url + "/v1/chat/completions", {"model": "cut", "messages": QUESTION})
        stats = client.get(proxy.url + "/_iceburg/stats").json()
    finally:
        flaky.kill()  # its "slow" handler is still asleep: no graceful shutdown to wait for
        flaky.wait(10)
    assert stats["recorded"] == 0 and stats["upstream_errors"] == 2
    assert not list((tmp_path / "logs").rglob("*.jsonl"))


def test_cookies_pass_through_and_are_never_kept_for_other_clients(collect, tmp_path):
    """The upstream's Set-Cookie reaches the client and a client's Cookie reaches the upstream, both
    unchanged; the proxy's own upstream clients keep no cookie (httpx would store it and add it to
    the next request that has none: another agent's). UPSTREAM_POOLS + 1 requests after the one
    that set it, so each upstream client in turn, the first one twice, is asked again."""
    from iceburg.serve.launch import Service, wait_until_answering
    from iceburg.serve.proxy import UPSTREAM_POOLS

    port = free_port()
    flaky = Service(subprocess.Popen([sys.executable, str(Path(__file__).with_name("flaky_upstream.py")), str(port)]),
                    f"http://127.0.0.1:{port}", tmp_path / "none.log")
    try:
        wait_until_answering(flaky, "/v1/models", 30, "the flaky upstream")
        url = collect(flaky.url + "/v1").url + "/v1/chat/completions"
        body = {"model": "cookie", "messages": QUESTION}
        sent, set_cookies = [], []
        for i in range(UPSTREAM_POOLS + 2):
            with httpx.Client(timeout=30, trust_env=False) as fresh:  # a new agent each time: no jar of its own
                r = fresh.post(url, json=body)
            sent.append(r.json()["cookie_sent"])
            set_cookies.append(r.headers.get("set-cookie", ""))
        r = httpx.post(url, json=body, headers={"Cookie": "mine=1"}, trust_env=False)
    finally:
        flaky.stop()
    assert all(c.startswith("session=agent-a-secret") for c in set_cookies), set_cookies
    assert sent == [None] * (UPSTREAM_POOLS + 2), sent
    assert r.json()["cookie_sent"] == "mine=1"


def test_upstream_credentials_in_the_url_become_basic_auth(collect, client, tmp_path):
    """`--upstream http://USER:PASS@host/v1` (percent-encoded): the upstream gets them as Basic
    Authorization in place of the client's, as httpx sent them; without credentials the client's own
    Authorization passes unchanged, and so does a header value that is not ASCII (its bytes as sent).
    Neither credential reaches the stats' `upstream` (what error messages and records name)."""
    from iceburg.serve.launch import Service, wait_until_answering

    port = free_port()
    flaky = Service(subprocess.Popen([sys.executable, str(Path(__file__).with_name("flaky_upstream.py")), str(port)]),
                    f"http://127.0.0.1:{port}", tmp_path / "none.log")
    body = {"model": "cookie", "messages": QUESTION}
    mine = {"Authorization": "Bearer sk-client", "X-Title": "café agent".encode()}  # UTF-8 bytes
    try:
        wait_until_answering(flaky, "/v1/models", 30, "the flaky upstream")
        with_creds = collect(f"http://agent:p%40ss@127.0.0.1:{port}/v1")
        plain = collect(f"http://127.0.0.1:{port}/v1", log_dir=tmp_path / "plain")
        got = client.post(with_creds.url + "/v1/chat/completions", json=body, headers=mine).json()
        own = client.post(plain.url + "/v1/chat/completions", json=body, headers=mine).json()
        stats = client.get(with_creds.url + "/_iceburg/stats").json()
    finally:
        flaky.stop()
    assert got["authorization_sent"] == "Basic " + base64.b64encode(b"agent:p@ss").decode()
    assert own["authorization_sent"] == "Bearer sk-client"
    assert own["title_sent"] == got["title_sent"] == "café agent".encode().decode("latin-1")
    assert stats["upstream"] == f"http://127.0.0.1:{port}/v1"


def test_bad_input_gets_4xx_and_the_proxy_keeps_working(served, collect, client, tmp_path):
    proxy = collect(served.url + "/v1", "--max-body-bytes", "2048")
    url = proxy.url + "/v1/chat/completions"
    cases = [(b'{"model": "m", "messages": [', 400, "invalid_json"),
             (b'{"model": "m", "messages": [{"role": "user", "content": "caf\xe9"}]}', 400, "invalid_encoding"),
             (json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 4096}]}).encode(), 413,
              "body_too_large")]
    for body, status, code in cases:
        r = client.post(url, content=body, headers={"content-type": "application/json"})
        assert (r.status_code, r.json()["error"]["code"]) == (status, code)
    # a body without a Content-Length (chunked) over the limit is cut off too
    r = client.post(url, content=iter([b"{" + b" " * 1500, b" " * 1500 + b"}"]))
    assert r.status_code == 413
    # valid JSON that is no chat (no messages list) goes to the upstream, which refuses it; not recorded
    assert client.post(url, json={"model": "m", "messages": "hello"}).status_code >= 400
    # a chat the loader would reject (a lone surrogate: valid JSON, not writable as UTF-8) is answered
    # as the upstream answers it, and never recorded
    weird = {"model": "m", "messages": [{"role": "user", "content": "\ud800 broken"}], "max_tokens": 4}
    client.post(url, content=json.dumps(weird).encode())
    ok = client_json(client, url, {"model": "m", "messages": QUESTION, "max_tokens": 4, "temperature": 0},
                     {"X-Iceburg-Agent": "surveyor"})[0]
    stats = client.get(proxy.url + "/_iceburg/stats").json()
    assert stats["bad_requests"] == 4 and stats["recorded"] == 1
    assert [r["messages"][-1]["content"] for r in log_lines(tmp_path / "logs")] == [ok["content"]]
