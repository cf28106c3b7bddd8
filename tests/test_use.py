"""After a run: `iceburg chat --prompt`, `iceburg eval`, report.html, the end-of-run table.

One short real run on iceburg-tiny (4 steps, GGUF export for the llama.cpp chat backend), then the
real console entry points in subprocesses, as a user would call them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def iceburg(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "iceburg.app", *args], capture_output=True, text=True, env=env,
                          timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_dir):
    from iceburg.config import ModelType, TrainingConfig
    from iceburg.training import ICEBURGFineTuner

    out = tmp_path_factory.mktemp("use")
    cfg = TrainingConfig(model_type=ModelType.SURVEYOR, output_dir=str(out), output_name="use", max_steps=4,
                         learning_rate=2e-3, max_seq_length=256, num_threads=2,
                         export_formats=["huggingface", "gguf"], quantization=["f16"])
    ICEBURGFineTuner(cfg).train()
    return out / "use"


def test_chat_prompt_one_shot_transformers_and_gguf(run_dir):
    hf = iceburg("chat", str(run_dir), "--prompt", "What do we know about sleep and memory?",
                 "--max-new-tokens", "24")
    assert hf.stdout.strip(), hf.stderr
    gg = iceburg("chat", str(run_dir), "--gguf", "--prompt", "What do we know about sleep and memory?",
                 "--max-new-tokens", "24")
    assert gg.stdout.strip(), gg.stderr
    # greedy decoding of the same weights (F16 GGUF vs fp32) starts the same way
    assert hf.stdout.split()[:2] == gg.stdout.split()[:2], (hf.stdout, gg.stdout)


def test_chat_run_system_prompt_and_bad_target(run_dir, tmp_path):
    from iceburg.chat import resolve_chat_target
    from iceburg.config import SYSTEM_PROMPTS, ModelType

    target = resolve_chat_target(run_dir)
    assert target.kind == "hf" and target.path == run_dir / "merged"
    assert target.system == SYSTEM_PROMPTS[ModelType.SURVEYOR]
    proc = iceburg("chat", str(tmp_path), "--prompt", "hi", check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and str(tmp_path) in proc.stderr


def test_eval_writes_json_and_report(run_dir):
    proc = iceburg("eval", str(run_dir), "--prompts", "2", "--max-new-tokens", "16")
    ev = json.loads((run_dir / "eval.json").read_text())
    assert ev["prompts"] == 2 and len(ev["side_by_side"]) == 2
    assert ev["base"]["path"] != ev["tuned"]["path"]
    for side in ("base", "tuned"):
        assert ev[side]["heldout_loss"] > 0 and 0.0 <= ev[side]["stop_rate"] <= 1.0
    # the tuned model's held-out loss is the run's own eval loss after training
    result = json.loads((run_dir / "result.json").read_text())
    assert abs(ev["tuned"]["heldout_loss"] - result["eval_loss_after"]) < 1e-3, (ev["tuned"], result)
    assert abs(ev["base"]["heldout_loss"] - result["eval_loss_before"]) < 1e-3
    assert "held-out loss" in proc.stdout
    html = (run_dir / "report.html").read_text()
    assert ev["side_by_side"][0]["question"][:40].replace("&", "&amp;")[:20] in html


def test_report_is_self_contained(run_dir):
    iceburg("report", str(run_dir))
    html = (run_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4  # loss, funnel, scores, memory
    for absent in ("http://", "https://", "<script", "src=\"/", "src='/"):
        assert absent not in html, absent
    for title in ("Loss", "Data funnel", "Exports and their proofs", "Before / after answers"):
        assert title in html


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")), reason="no chromium")
def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    from PIL import Image

    iceburg("report", str(run_dir))
    shot = tmp_path / "shot.png"
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1200,3000", (run_dir / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    img = Image.open(shot).convert("L")
    # the page drew something: plots and tables give many distinct grey levels, a blank page one
    assert len(img.getcolors(256 * 256) or []) > 20


def test_end_of_run_table(run_dir):
    from iceburg.summary import format_table, train_rows

    result = json.loads((run_dir / "result.json").read_text())
    table = format_table(train_rows(result))
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["stage", "outcome"]
    assert any(line.startswith("export gguf") for line in lines)
    assert "{" not in table  # no dict reprs


def test_interactive_chat_loop_streams_and_keeps_history(tiny_model_dir):
    import io

    from iceburg.chat import HfChatModel, chat_loop

    model = HfChatModel(tiny_model_dir, system="You are terse.")
    seen: list = []
    original = model.answer

    def recording(messages, max_new_tokens, on_text=None):
        seen.append([m["role"] for m in messages])
        return original(messages, max_new_tokens, on_text)

    model.answer = recording
    out = io.StringIO()
    chat_loop(model, 8, stdin=io.StringIO("first question\nsecond question\n\n"), stdout=out)
    # system prompt first, then the growing conversation; answers were streamed to stdout
    assert seen == [["system", "user"], ["system", "user", "assistant", "user"]]
    assert out.getvalue().count("> ") == 3 and len(out.getvalue()) > 40
