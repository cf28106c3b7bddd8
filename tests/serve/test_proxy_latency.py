"""`iceburg collect` keeps disk syncs and full garbage collections off the request path
(issue 28's added-latency target; bench/proxy_load.py measures it)."""

from __future__ import annotations

import gc
import os
import time

import pytest

from iceburg.data.collector import FineTuningLogger
from iceburg.serve.proxy import IntervalSync, ProxyConfig, create_proxy_app

from test_collect import QUESTION, client_stream, log_lines


def wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_interval_sync_fsyncs_the_written_files_in_its_own_thread(tmp_path):
    sync = IntervalSync(interval=0.05)
    sync.start()
    files = [tmp_path / "a" / "2026-12-06.jsonl", tmp_path / "b" / "2026-12-06.jsonl"]
    for f in files:
        log = FineTuningLogger(f, fsync="never")
        log.log([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])
        log.close()
        sync.written(f)
    sync.written(f)  # the same file twice before a pass: one fsync
    # 5 s: 100 of its 0.05 s passes, far beyond any scheduling delay on a loaded 2-core machine
    assert wait_for(lambda: sync.syncs == 2, 5.0), sync.syncs
    # a file rotated away before the pass is skipped (the rotation fsynced it), without an error
    sync.written(tmp_path / "gone.jsonl")
    log = FineTuningLogger(files[0], fsync="never")
    log.log([{"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}])
    log.close()
    sync.written(files[0])
    sync.stop()  # the last pass runs at stop, whatever the interval left
    assert sync.syncs == 3 and not sync._thread.is_alive()
    assert [len(f.read_text().splitlines()) for f in files] == [2, 1]


def test_startup_objects_are_frozen_out_of_full_collections(tmp_path):
    from starlette.testclient import TestClient

    gc.unfreeze()
    app = create_proxy_app(ProxyConfig(upstream="http://127.0.0.1:9/v1", log_dir=tmp_path / "logs"))
    try:
        with TestClient(app):  # runs the lifespan: client, syncer, gc.freeze()
            assert gc.get_freeze_count() > 0
            assert app.state.proxy.syncer is not None and app.state.proxy.syncer._thread.is_alive()
        assert not app.state.proxy.syncer._thread.is_alive()  # stopped with the app
    finally:
        gc.unfreeze()  # the test process keeps collecting its own garbage


@pytest.mark.llama
def test_default_fsync_writes_before_done_and_syncs_in_the_background(served, collect, client, tmp_path):
    proxy = collect(served.url + "/v1")  # --fsync interval, the default
    body = {"model": "m", "messages": QUESTION, "max_tokens": 6, "temperature": 0}
    got, _ = client_stream(client, proxy.url + "/v1/chat/completions", body, {"X-Iceburg-Agent": "surveyor"})
    # on disk (written, not yet synced) the moment the client has the whole stream
    assert [r["messages"][-1]["content"] for r in log_lines(tmp_path / "logs")] == [got["content"]]
    # the background pass runs once a second (IntervalSync's interval); 10 s covers a loaded machine
    assert wait_for(lambda: client.get(proxy.url + "/_iceburg/stats").json()["background_fsyncs"] >= 1, 10.0)
    always = collect(served.url + "/v1", "--fsync", "always", log_dir=tmp_path / "always")
    client_stream(client, always.url + "/v1/chat/completions", body, {"X-Iceburg-Agent": "surveyor"})
    stats = client.get(always.url + "/_iceburg/stats").json()
    assert stats["recorded"] == 1 and stats["background_fsyncs"] == 0  # synced inline, per line
    assert os.path.getsize(next((tmp_path / "always").rglob("*.jsonl"))) > 0
