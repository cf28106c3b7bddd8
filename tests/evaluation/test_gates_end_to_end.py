"""Gates end to end on real iceburg-tiny runs, through the console entry points.

Two short runs of `iceburg-train --gate 'forgetting_loss<=base+0.05'`: a good one (learning rate
2e-3, 4 steps) and a deliberately broken one (learning rate 0.5: the LoRA update wrecks the model).
The good run passes and ships its GGUF; the broken one exits 3 naming the metric, both values and
the interval, keeps merged/ and the huggingface export, and has no GGUF. `iceburg eval` then gives
the same verdicts (0 / 3), and the good run is evaluated with --gguf, --samples and --eval-data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

GATE = "forgetting_loss<=base+0.05"


def _run(module: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env,
                          timeout=900)


def _train(out: Path, name: str, lr: str) -> tuple[subprocess.CompletedProcess, Path]:
    proc = _run("iceburg.cli", "--model-type", "surveyor", "--output-dir", str(out), "--output-name", name,
                "--max-steps", "4", "--learning-rate", lr, "--max-seq-length", "256", "--threads", "2",
                "--formats", "huggingface", "gguf", "--quantization", "f16", "--compare", "3",
                "--compare-max-new-tokens", "12", "--gate", GATE, "--gate", "heldout_loss<=base+1")
    return proc, out / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("gates")
    return {"good": _train(out, "good", "2e-3"), "broken": _train(out, "broken", "0.5")}


def test_train_gate_passes_and_ships_the_gguf(runs):
    proc, run = runs["good"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list((run / "exports").glob("**/*.gguf"))
    ev = json.loads((run / "eval.json").read_text())
    assert [g["passed"] for g in ev["gates"]] == [True, True]
    for name, m in ev["metrics"].items():
        assert set(m) == {"base", "tuned", "delta", "ci95", "n"}, name
    # the per-record held-out loss summed like the trainer's eval loss gives the trainer's figure
    # (the trainer packs rows best-fit; same tokens, float32 sums: 1e-3 covers the summation order)
    result = json.loads((run / "result.json").read_text())
    assert abs(ev["metrics"]["heldout_loss"]["tuned"] - result["eval_loss_after"]) < 1e-3
    assert abs(ev["metrics"]["heldout_loss"]["base"] - result["eval_loss_before"]) < 1e-3


def test_train_gate_fails_the_broken_model_and_writes_no_gguf(runs):
    proc, run = runs["broken"]
    assert proc.returncode == 3, proc.stderr[-3000:]
    err = proc.stderr
    assert "forgetting_loss" in err and "FAILED" in err and "95% CI" in err and "tuned" in err and "base" in err
    assert not list((run / "exports").glob("**/*.gguf"))  # the shipped file is not written
    assert (run / "merged" / "config.json").is_file() and (run / "exports" / "huggingface").is_dir()
    result = json.loads((run / "result.json").read_text())
    assert result["success"] is False and "forgetting_loss" in result["export_error"]
    m = json.loads((run / "eval.json").read_text())["metrics"]["forgetting_loss"]
    # lr 0.5 on 4 steps wrecks the model: measured +1.8 nats/token on the general text, far past 0.05
    assert m["ci95"][0] > 0.05


def test_eval_cli_exit_codes(runs):
    args = ("--prompts", "2", "--max-new-tokens", "8", "--gate", GATE)
    good = _run("iceburg.app", "eval", str(runs["good"][1]), *args)
    assert good.returncode == 0, good.stderr[-3000:]
    assert "gate forgetting_loss<=base+0.05: passed" in good.stdout
    bad = _run("iceburg.app", "eval", str(runs["broken"][1]), *args)
    assert bad.returncode == 3, bad.stderr[-3000:]
    assert "gate forgetting_loss<=base+0.05: FAILED" in bad.stderr
    malformed = _run("iceburg.app", "eval", str(runs["good"][1]), "--gate", "forgetting loss<=base")
    assert malformed.returncode == 2 and malformed.stderr.startswith("error: --gate")


def test_eval_gguf_samples_and_eval_data(runs, tmp_path):
    from iceburg.evaluation import evaluate_run

    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps({"conversations": [
        {"from": "human", "value": "What does the evidence say about sleep and memory consolidation?"},
        {"from": "gpt", "value": "Several sleep studies report better recall after a night of sleep."}]}) + "\n")
    ev = evaluate_run(runs["good"][1], n_prompts=2, max_new_tokens=12, samples=2, gguf=True,
                      eval_data=[str(extra)], forgetting=False)
    assert {s["suite"] for s in ev["side_by_side"]} == {"heldout", "eval-data"}
    assert ev["metrics"]["sampled.stop_rate"]["n"] == ev["metrics"]["stop_rate"]["n"] == 3
    assert "forgetting_loss" not in ev["metrics"]
    g = ev["gguf"]
    assert g["file"].endswith(".gguf") and g["metrics"]["reference_similarity"]["n"] == 3
    # F16 GGUF vs fp32 transformers, greedy: the answers start the same way (test_use checks this
    # for chat); they may part at a near tie: after the CPU micro-batch rule changed this run's plan
    # (8 x 2 instead of 16 x 1) one answer parted at its 6th token, inside its second word, where fp32's
    # top two logits were 0.0008 apart, under the F16 file's proven max logit difference (0.006, argmax
    # agreement 1.0 on 311 positions), so only the first word is held equal (docs/evaluation.md)
    for a in g["answers"]:
        assert a["gguf"].split()[:1] == a["transformers"].split()[:1], a


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def judge_server(runs):
    """llama-cpp-python's OpenAI-compatible server over the good run's GGUF, on a loopback port."""
    pytest.importorskip("openai")
    pytest.importorskip("llama_cpp.server.app")
    import time
    import urllib.request

    gguf = next((runs["good"][1] / "exports").glob("**/*.gguf"))
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                             "--port", str(port), "--n_ctx", "2048", "--model_alias", "tiny-judge"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(120):  # the server loads a tiny GGUF in ~2-5 s; 60 s bounds a slow, shared machine
            try:
                urllib.request.urlopen(url + "/models", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"llama_cpp.server exited: {proc.stderr.read()[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_llm_judge_both_orders_through_a_local_server(runs, judge_server):
    from iceburg.evaluation import evaluate_run
    from iceburg.evaluation.judge import verdict

    ev = evaluate_run(runs["good"][1], n_prompts=2, max_new_tokens=8, forgetting=False, judge=judge_server,
                      judge_model="tiny-judge")
    j = ev["judge"]
    assert j["requests"] == 4 and len(j["verdicts"]) == 2  # 2 prompts x both orders
    m = ev["metrics"]["judge_win_rate"]
    assert m["n"] == 2 and m["base"] + m["tuned"] == pytest.approx(1.0)
    # each prompt's score is the mean of its two orders' verdicts (win 1, loss 0, neither 0.5)
    for r in j["verdicts"]:
        a = {"A": 1.0, "B": 0.0, None: 0.5}[verdict(r["tuned_first"])]
        b = {"B": 1.0, "A": 0.0, None: 0.5}[verdict(r["base_first"])]
        assert r["tuned_score"] == (a + b) / 2
    assert verdict("A") == "A" and verdict("Answer B is better.") == "B" and verdict("A or B") is None


def test_compare_path_reuses_the_run_losses_and_prints_the_table(runs):
    """What `iceburg-train --compare N` (the demo) runs after training: the table ends the run."""
    from iceburg.evaluation import evaluate_run, format_eval

    run = runs["good"][1]
    ev = evaluate_run(run, n_prompts=2, max_new_tokens=8, reuse_run_losses=True, forgetting=False)
    result = json.loads((run / "result.json").read_text())
    assert ev["tuned"]["heldout_loss"] == result["eval_loss_after"]
    assert ev["base"]["heldout_loss"] == result["eval_loss_before"]
    text = format_eval(ev)
    assert "95% CI of delta" in text and "truth_pass_rate" in text and "heldout_loss" in text
    assert text.index("metric ") < text.index("[1] Q:")  # the table comes before the answers


MC = [("The capital of France is", ["Paris", "Berlin", "Rome"], 0),
      ("Water freezes at", ["fifty degrees Celsius", "zero degrees Celsius", "ninety degrees Celsius"], 1),
      ("The opposite of hot is", ["loud", "tall", "cold"], 2), ("A week has", ["seven days", "three days"], 0),
      ("The sun rises in the", ["west", "east", "north"], 1), ("Two plus two equals", ["five", "four"], 1)]


def test_lm_eval_task_from_a_local_jsonl(runs, tmp_path):
    pytest.importorskip("lm_eval")
    import lm_eval
    from lm_eval.tasks import TaskManager

    from iceburg.evaluation import evaluate_run
    from iceburg.evaluation.heldout import run_base_folder

    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n" for q, c, a in MC))
    task = tmp_path / "iceburg_mc.yaml"
    task.write_text(f"task: iceburg_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
                    "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{question}}'\n"
                    "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{answer}}'\nmetric_list:\n  - metric: acc\n")
    ev = evaluate_run(runs["good"][1], n_prompts=1, max_new_tokens=4, forgetting=False, lm_eval=[str(task)])
    m = ev["metrics"]["lm_eval.iceburg_mc.acc"]
    assert m["n"] == len(MC) and 0 <= m["base"] <= 1 and 0 <= m["tuned"] <= 1
    # iceburg pairs the harness's per-document log; its mean is the harness's own aggregate
    base_dir = run_base_folder(runs["good"][1])[1]
    own = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={base_dir},dtype=float32", tasks=["iceburg_mc"],
                                  task_manager=TaskManager(include_path=str(tmp_path)), batch_size=1, device="cpu")
    assert m["base"] == pytest.approx(own["results"]["iceburg_mc"]["acc,none"])
