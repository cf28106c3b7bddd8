"""The loop end to end (docs/loop.md), every part real: iceburg-tiny v1 trained and exported to GGUF,
`iceburg serve` v1 on a loopback port, `iceburg collect` in front of it, a scripted agent sending
chats with tools through the proxy, `iceburg-train --continue-from v1 --data-path <collected>` with
a gate against v1, then v2 published (lineage.json, Modelfile) and `iceburg serve` of the line
answering with v2, then with v1 after `iceburg rollback` and a restart.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (pip install 'iceburg[llama]')")
for _mod in ("fastapi", "uvicorn", "httpx", "sse_starlette", "starlette_context", "pydantic_settings"):
    pytest.importorskip(_mod, reason="needs the serve extra (pip install 'iceburg[serve]')")

import httpx  # noqa: E402

from iceburg.serve.launch import start_collect, start_serve  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.llama]

# An enum argument: llama-cpp-python's grammar for a forced call then closes the JSON within a few
# tokens, so the tiny model's call is valid (tests/serve/serve_helpers.py).
TOOLS = [{"type": "function", "function": {
    "name": "search", "description": "Search the literature",
    "parameters": {"type": "object", "properties": {"topic": {"type": "string", "enum": ["sleep", "memory"]}},
                   "required": ["topic"]}}}]
FORCE = {"type": "function", "function": {"name": "search"}}
TOPICS = ["sleep spindles", "memory consolidation", "circadian rhythm", "dream recall", "napping", "caffeine",
          "insomnia", "shift work", "learning rates", "forgetting curves", "hippocampus", "REM sleep"]
GATE = "heldout_loss<=base+0.05"


def _cli(module: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def _train(*args: str) -> subprocess.CompletedProcess:
    return _cli("iceburg.cli", "--max-steps", "4", "--learning-rate", "2e-3", "--max-seq-length", "512",
                "--threads", "1", "--formats", "huggingface", "gguf", "--quantization", "q8_0", *args)


def _agent(client: httpx.Client, url: str, i: int, topic: str) -> None:
    """One scripted surveyor task: a forced tool call, the tool's result, then the answer."""
    head = {"X-Iceburg-Agent": "surveyor"}
    msgs = [{"role": "system", "content": "You are the Surveyor, a careful research agent."},
            {"role": "user", "content": f"Survey what is known about {topic} (task {i})."}]
    r = client.post(url, json={"model": "iceburg-surveyor", "messages": msgs, "tools": TOOLS, "tool_choice": FORCE,
                               "max_tokens": 32, "temperature": 0}, headers=head)
    assert r.status_code == 200, r.text
    call = r.json()["choices"][0]["message"]
    assert call["tool_calls"], call
    msgs += [{"role": "assistant", "content": "", "tool_calls": call["tool_calls"]},
             {"role": "tool", "tool_call_id": call["tool_calls"][0]["id"],
              "content": f"Three reviews on {topic}: effects are consistent across studies, sample sizes vary."}]
    r = client.post(url, json={"model": "iceburg-surveyor", "messages": msgs, "tools": TOOLS, "max_tokens": 48,
                               "temperature": 0, "stream": i % 2 == 0}, headers=head)
    assert r.status_code == 200, r.text


def test_serve_collect_continue_publish_serve(tmp_path, tiny_model_dir):
    runs = tmp_path / "runs" / "surveyor"
    v1 = _train("--model-type", "surveyor", "--output-dir", str(runs), "--output-name", "v1")
    assert v1.returncode == 0, v1.stderr[-3000:]
    logs = tmp_path / "logs"
    served = start_serve(runs / "v1", tmp_path / "serve-v1.log")
    proxy = start_collect(served.url + "/v1", logs, tmp_path / "collect.log", extra=["--fsync", "always"])
    try:
        with httpx.Client(timeout=120, trust_env=False) as client:
            for i, topic in enumerate(TOPICS):
                _agent(client, proxy.url + "/v1/chat/completions", i, topic)
            stats = client.get(proxy.url + "/_iceburg/stats").json()
    finally:
        proxy.stop(signal.SIGTERM)
        served.stop(signal.SIGTERM)
    # two exchanges per task (the call, then the answer), each one training record
    assert stats["recorded"] == 2 * len(TOPICS), stats
    collected = logs / "surveyor"

    # --no-truth-filter: iceburg-tiny's answers are near-gibberish that the truth filter rightly
    # removes (measured: 23 of 24 as low_quality/truncated), which would leave nothing to train on
    v2 = _train("--continue-from", str(runs / "v1"), "--data-path", str(collected), "--no-truth-filter",
                "--compare", "2", "--compare-max-new-tokens", "8", "--gate", GATE, "--publish")
    assert v2.returncode == 0, v2.stderr[-3000:]
    lineage = json.loads((runs / "lineage.json").read_text())
    assert [(v["version"], v["parent"]) for v in lineage["versions"]] == [("v1", None), ("v2", "v1")]
    entry = lineage["versions"][1]
    assert entry["data_added"] == [str(collected)] and entry["passed"] and entry["published"], entry
    assert lineage["current"] == "v2"
    gates = {g["gate"]: g for g in entry["gates"]}
    assert gates[GATE]["passed"] and gates["previous_heldout_loss<=base+0.02"]["passed"], gates
    # the gate compared v2 with v1 (evaluation/release.py: against the parent's merged model)
    ev = json.loads((runs / "v2" / "eval.json").read_text())
    assert ev["base"]["path"] == str(runs / "v1" / "merged"), ev["base"]
    data = entry["data"]
    assert data["seen_before"] == 0 and data["replay"] > 0, data
    assert "skipped `ollama create iceburg-surveyor:v2" in v2.stderr  # no ollama binary here
    modelfile = Path(entry["modelfile"]).read_text()
    assert f"FROM {(runs / 'v2' / 'exports').resolve()}" in modelfile

    served2 = start_serve(runs, tmp_path / "serve-v2.log")  # the line of versions: its current one, v2
    try:
        with httpx.Client(timeout=120, trust_env=False) as client:
            models = client.get(served2.url + "/v1/models").json()
            r = client.post(served2.url + "/v1/chat/completions", json={
                "model": "iceburg-surveyor", "messages": [{"role": "user", "content": "Survey sleep."}],
                "max_tokens": 8, "temperature": 0})
        assert [m["id"] for m in models["data"]] == ["iceburg-surveyor"], models
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"], r.text
        assert "current version v2" in served2.log_text()
        assert "runs/surveyor/v2/exports" in served2.log_text()  # the v2 GGUF is what answered
    finally:
        served2.stop(signal.SIGTERM)

    # rollback to v1 needs v1 published first; then lineage points back at it
    refused = _cli("iceburg.app", "rollback", "surveyor", "v1", "--root", str(tmp_path / "runs"))
    assert refused.returncode == 2 and "never published" in refused.stderr
    assert _cli("iceburg.app", "publish", str(runs / "v1")).returncode == 0
    back = _cli("iceburg.app", "rollback", "surveyor", "v1", "--root", str(tmp_path / "runs"))
    assert back.returncode == 0 and "current surveyor version: v1" in back.stdout, back.stderr
    assert json.loads((runs / "lineage.json").read_text())["current"] == "v1"
    listed = _cli("iceburg.app", "models", str(tmp_path / "runs")).stdout
    assert "* v1" in listed and "  v2" in listed and "published" in listed, listed

    # a restart after the rollback serves v1: `iceburg serve surveyor` reads lineage.json's current
    served1 = start_serve("surveyor", tmp_path / "serve-current.log", extra=["--root", str(tmp_path / "runs")])
    try:
        with httpx.Client(timeout=120, trust_env=False) as client:
            r = client.post(served1.url + "/v1/chat/completions", json={
                "model": "iceburg-surveyor", "messages": [{"role": "user", "content": "Survey sleep."}],
                "max_tokens": 8, "temperature": 0})
        assert r.status_code == 200 and r.json()["model"] == "iceburg-surveyor", r.text
        assert "current version v1" in served1.log_text() and "runs/surveyor/v1/exports" in served1.log_text()
    finally:
        served1.stop(signal.SIGTERM)
