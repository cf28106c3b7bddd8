"""Tools in `iceburg generate` against a real local teacher (conftest: `iceburg serve` over the embedded
SmolLM2-135M-Instruct GGUF behind `iceburg collect`): the seed's tool definitions reach the teacher (the
proxy's log records each request's tools), and a tool-calling answer (llama-cpp-python's server honours a
named `tool_choice` with a grammar over the function's schema) is kept as the assistant turn with its
calls, with no invented tool result, in a file the trainer reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.llama]


@pytest.fixture(scope="module")
def tool_data(tmp_path_factory) -> Path:
    """The bundled surveyor sample's six tool-calling transcripts: every seed has tools."""
    from iceburg.config import ModelType
    from iceburg.data import sample_data_path

    lines = [x for x in sample_data_path(ModelType.SURVEYOR).read_text().splitlines() if '"tools"' in x]
    path = tmp_path_factory.mktemp("tooldata") / "tools.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _generate(url: str, job: Path, data: Path, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "iceburg.app", "generate", "--teacher", url, "--job", str(job), "--model-type",
           "surveyor", "--data-path", str(data), "--seed-strategy", "random", "--student", "none",
           "--ask-max-tokens", "48", "--answer-max-tokens", "96", "--seed", "1", *extra]
    run = subprocess.run(cmd, env={**__import__("os").environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)


def _collected(proxy) -> list[dict]:
    """Every exchange the proxy logged (request messages + answer, the request's tools)."""
    folder = proxy.log_path.parent / "collected"
    return [json.loads(x) for p in sorted(folder.rglob("*.jsonl")) for x in p.read_text().splitlines() if x]


def _answer_requests(job: Path) -> list[dict]:
    rows = [json.loads(x) for x in (job / "requests.jsonl").read_text().splitlines()]
    return [r for r in rows if r["key"].startswith("answer:")]


def test_seed_tools_reach_the_teacher(teacher, tool_data, tmp_path):
    proxy, _ = teacher
    job = tmp_path / "auto"
    _generate(proxy.url + "/v1", job, tool_data, "--budget", "1", "--max-items", "3")
    seeds = {json.loads(x)["id"]: json.loads(x) for x in (job / "seeds.jsonl").read_text().splitlines()}
    asked = _answer_requests(job)
    assert asked, "no prompt of 3 items reached the answer step"
    by_prompt = {r["messages"][1]["content"]: r for r in _collected(proxy) if len(r["messages"]) > 1}
    for entry in asked:
        seed_tools = seeds[entry["seed_id"]]["tools"]
        assert seed_tools and entry["request"]["tools"] == seed_tools and "tool_choice" not in entry["request"]
        served = by_prompt[entry["request"]["messages"][1]["content"]]  # what the teacher was sent, server side
        assert [t["function"]["name"] for t in served["tools"]] == [t["function"]["name"] for t in seed_tools]


def test_a_tool_calling_answer_is_kept_as_the_call_turn(teacher, tool_data, tmp_path):
    from iceburg.config import ModelType, TrainingConfig
    from iceburg.pipeline import read_step, run_steps, truth_step
    from iceburg.records import RejectWriter

    proxy, _ = teacher
    job = tmp_path / "named"
    summary = _generate(proxy.url + "/v1", job, tool_data, "--tool-choice", "web_search", "--budget", "1",
                        "--max-items", "6")
    assert summary["kept"] == 1, summary
    row = json.loads((job / "generated.jsonl").read_text().splitlines()[0])
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]  # ends at the call
    (call,) = row["messages"][-1]["tool_calls"]
    assert call["function"]["name"] == "web_search" and isinstance(call["function"]["arguments"], dict)
    assert call["function"]["arguments"]["query"].strip()
    assert "web_search" in [t["function"]["name"] for t in row["tools"]]
    assert row["metadata"]["answer"] == "tool_call" and row["metadata"]["finish_reason"] == "tool_calls"
    logged = [r for r in _answer_requests(job) if r["item"] == row["metadata"]["item"]][0]
    assert logged["request"]["tool_choice"] == {"type": "function", "function": {"name": "web_search"}}
    assert logged["response"]["tool_calls"][0]["function"]["name"] == "web_search"
    served = [r for r in _collected(proxy) if r["messages"][1]["content"] == row["messages"][1]["content"]]
    assert served and served[-1]["messages"][-1]["tool_calls"]  # the server's answer was a call
    cfg = TrainingConfig(model_type=ModelType.SURVEYOR, data_path=[str(job / "generated.jsonl")])
    state = run_steps(cfg, RejectWriter(None), (read_step, truth_step))  # what iceburg-train reads first
    assert len(state.records) == 1 and state.records[0].messages[-1]["tool_calls"] == [call]
