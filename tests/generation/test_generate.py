"""`iceburg generate` end to end against a real local teacher (conftest): N curated records in a
resumable job folder; a real SIGKILL mid-run and a restart make no repeated teacher calls for
finished items (counted at the server side and in the job log); a planted near duplicate of a
held-out record is never emitted."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from iceburg.records import Record

pytestmark = [pytest.mark.slow, pytest.mark.llama]

BUDGET = 2
# Short budgets keep a teacher call at ~2-4 s on one thread (SmolLM2-135M Q4_1, ~40 tokens/s measured);
# the cost: more answers hit the budget and are rejected as truncated, hence --max-items well above 4 x 2.
FLAGS = ["--model-type", "surveyor", "--budget", str(BUDGET), "--ask-max-tokens", "48",
         "--answer-max-tokens", "160", "--max-items", "24", "--seed", "1"]


def _cmd(teacher_url: str, job: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "iceburg.app", "generate", "--teacher", teacher_url, "--job", str(job), *FLAGS, *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _requests(proxy) -> int:
    """Chat completions the teacher answered, counted by the proxy (a `/v1/models` listing is not one)."""
    with httpx.Client(trust_env=False, timeout=30) as c:
        stats = c.get(proxy.url + "/_iceburg/stats").json()
    return stats["recorded"] + stats["not_recorded"]


def _log_keys(job: Path) -> list[str]:
    path = job / "requests.jsonl"
    return [json.loads(x)["key"] for x in path.read_text().splitlines()] if path.is_file() else []


@pytest.fixture(scope="module")
def killed_and_resumed(teacher, tmp_path_factory):
    """Start a job, SIGKILL it once an answer is logged, restart it to the end."""
    proxy, _ = teacher
    job = tmp_path_factory.mktemp("gen") / "job"
    url = proxy.url + "/v1"
    before = _requests(proxy)
    proc = subprocess.Popen(_cmd(url, job), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while not any(k.startswith("answer:") for k in _log_keys(job)):
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no answer logged within 240 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = {"keys": _log_keys(job), "requests": _requests(proxy) - before}
    rerun = subprocess.run(_cmd(url, job), env=_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    return job, first, json.loads(rerun.stdout), _requests(proxy) - before, url


def test_kill_and_restart_repeats_no_finished_call(killed_and_resumed):
    job, first, summary, total_requests, _ = killed_and_resumed
    keys = _log_keys(job)
    assert len(keys) == len(set(keys))  # no item asked twice
    assert keys[:len(first["keys"])] == first["keys"]  # the log is append-only
    assert summary["resumed"] and summary["teacher_calls_this_run"] == len(keys) - len(first["keys"])
    # server side: every request the teacher got is a logged call, except at most the one that was in
    # flight when the first process was killed (its response never reached the log, so it is re-asked)
    assert first["requests"] - len(first["keys"]) in (0, 1)
    assert total_requests - len(keys) in (0, 1)
    # the restart made calls (the kill was mid-run), and no more than it logged, plus the first run's
    # interrupted call if that one reached the counter only after the kill
    assert summary["teacher_calls_this_run"] > 0
    assert total_requests - first["requests"] - summary["teacher_calls_this_run"] in (0, 1)


def test_job_holds_budget_curated_records_the_trainer_reads(killed_and_resumed):
    from iceburg.config import ModelType, TrainingConfig
    from iceburg.pipeline import read_step, run_steps, truth_step
    from iceburg.records import RejectWriter

    job, _, summary, _, url = killed_and_resumed
    assert summary["kept"] == BUDGET
    rows = [json.loads(x) for x in (job / "generated.jsonl").read_text().splitlines()]
    assert len(rows) == BUDGET
    for row in rows:
        meta = row["metadata"]
        assert meta["source"] == "generated" and meta["teacher"] == url and meta["seed_id"].startswith("s")
        assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
        assert row["emergence_score"] is not None and row["quality_score"] >= 0.7
    seeds = {json.loads(x)["id"] for x in (job / "seeds.jsonl").read_text().splitlines()}
    assert {r["metadata"]["seed_id"] for r in rows} <= seeds
    cfg = TrainingConfig(model_type=ModelType.SURVEYOR, data_path=[str(job / "generated.jsonl")])
    state = run_steps(cfg, RejectWriter(None), (read_step, truth_step))  # what iceburg-train reads first
    assert len(state.records) == BUDGET
    rejects = [json.loads(x) for x in (job / "rejects.jsonl").read_text().splitlines()]
    assert all(r["codes"] and r["stage"].startswith("generate.") for r in rejects)
    assert summary["items"] == len(rejects) + BUDGET  # every tried item is kept or rejected with a code


def _near_copy(text: str) -> str:
    """~5% of the words changed: MinHash 2-gram Jaccard stays far above the 0.5 threshold."""
    words = text.split()
    for i in range(0, len(words), 20):
        words[i] = "indeed"
    return " ".join(words)


def test_planted_near_duplicate_of_a_heldout_record_is_never_emitted(killed_and_resumed, tmp_path):
    from iceburg.truth.dedup import Deduplicator

    job, _, _, _, url = killed_and_resumed
    rows = [json.loads(x) for x in (job / "generated.jsonl").read_text().splitlines()]
    planted = json.loads(json.dumps(rows[0]))
    planted["messages"][-1]["content"] = _near_copy(planted["messages"][-1]["content"])
    planted.pop("metadata")
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text(json.dumps(planted) + "\n")
    again = tmp_path / "job"
    shutil.copytree(job, again)  # the same logged calls: the keep stage replays them with the new held-out set
    # --budget 1: the record after the planted one's twin was kept already, so no new teacher call is needed
    run = subprocess.run(_cmd(url, again, "--heldout", str(heldout), "--budget", "1"), env=_env(),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    dedup = Deduplicator()
    twin = dedup.signature(Record(messages=planted["messages"]))
    for x in (again / "generated.jsonl").read_text().splitlines():
        sig = dedup.signature(Record(messages=json.loads(x)["messages"]))
        assert sig.exact != twin.exact and (sig.digest == twin.digest).mean() < 0.5
    leaks = [json.loads(x) for x in (again / "rejects.jsonl").read_text().splitlines()
             if json.loads(x)["code"] == "heldout_duplicate"]
    assert [r["record"]["metadata"]["item"] for r in leaks] == [rows[0]["metadata"]["item"]]
    assert json.loads(run.stdout)["teacher_calls_this_run"] == 0 and json.loads(run.stdout)["kept"] == 1
