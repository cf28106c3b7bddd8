"""GRPO end to end on iceburg-tiny through the recipe: per-reward metrics, held-out prompts never
trained on, the SFT exports; an interrupted run resumes and reproduces the uninterrupted run's
per-step rewards and losses (sampling seeded per step, dropout RNG in the checkpoint); a reward
that raises stops the run naming the prompt."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from callbacks import StopAt

from iceburg.config import TrainingConfig
from iceburg.errors import IceburgError
from iceburg.evaluation.rewards import RewardError
from iceburg.training.finetuner import ICEBURGFineTuner

pytestmark = pytest.mark.slow


def cfg(out, **kw):
    # 5 steps of 1 prompt x 4 answers of <= 16 tokens, checkpoint every 2; LoRA dropout 0.05 (the
    # default) is on, so the restored RNG matters; learning rate high enough that steps move the policy
    settings = dict(model_type="surveyor", objective="grpo", output_dir=str(out), output_name="r",
                    max_steps=5, save_steps=2, batch_size=4, gradient_accumulation_steps=1, max_seq_length=640,
                    max_completion_length=16, grpo_beta=0.04, learning_rate=5e-3, num_threads=1,
                    reward=["tiny_rewards:vowels"])
    return TrainingConfig(**{**settings, **kw})


def _numbers(m: dict) -> dict:
    # elapsed/memory vary; the engine's token counters are cumulative from where this process started
    return {k: v for k, v in m.items()
            if k not in ("elapsed_s", "peak_rss_mib", "supervised_tokens", "supervised_tokens_per_s")}


@pytest.fixture
def user_rewards(tmp_path, monkeypatch):
    """A user reward with spread inside each group (the tiny model's answers never pass the truth
    filter nor stop in 16 tokens, so the built-ins alone would give every answer the same reward:
    zero advantages, no update), and one that fails on one record."""
    (tmp_path / "tiny_rewards.py").write_text(textwrap.dedent("""
        def vowels(prompt, completion, record):
            return sum(ch in "aeiou" for ch in completion) / max(1, len(completion))

        def picky(prompt, completion, record):
            if int(record.id.rsplit(":", 1)[1]) % 2 == 0:  # every even line of the file
                raise ValueError("no verdict for this record")
            return 0.5
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("tiny_rewards", None)


def test_grpo_run_resumes_and_reproduces_rewards_and_losses(tmp_path, tiny_model_dir, user_rewards):
    stopper = StopAt(3)
    with pytest.raises(KeyboardInterrupt):
        ICEBURGFineTuner(cfg(tmp_path, grpo_eval_samples=2), callbacks=[stopper]).train()
    run = tmp_path / "r"
    assert json.loads((run / "checkpoint" / "state.json").read_text())["step"] == 2
    resumed = StopAt(-1)
    result = ICEBURGFineTuner(cfg(tmp_path, resume=True, grpo_eval_samples=2), callbacks=[resumed]).train()
    assert result.resumed_from_step == 2 and result.steps == 5 and sorted(resumed.steps) == [3, 4, 5]

    fresh = StopAt(-1)
    ref = ICEBURGFineTuner(cfg(tmp_path / "fresh", grpo_eval_samples=2), callbacks=[fresh]).train()
    assert stopper.batches[:2] + resumed.batches == fresh.batches
    combined = {**{s: m for s, m in stopper.steps.items() if s <= 2}, **resumed.steps}
    for s in sorted(fresh.steps):
        assert _numbers(combined[s]) == pytest.approx(_numbers(fresh.steps[s]), rel=1e-5, abs=1e-6), s
    # every built-in reward is reported per step, and the KL term moved off 0 after the first update
    assert {"rewards/truth/mean", "rewards/format/mean", "rewards/vowels/mean", "reward", "kl"} <= set(fresh.steps[5])
    # 1e-6: above float32 noise of a KL between identical models (exactly 0 before the first update)
    assert fresh.steps[1]["kl"] == 0.0 and any(fresh.steps[s]["kl"] > 1e-6 for s in (3, 4, 5))
    assert result.preference["after"] == pytest.approx(ref.preference["after"], abs=1e-6)
    # --grpo-eval-samples 2: per-prompt means of 2 sampled held-out answers, before and after, the
    # same numbers for the resumed run as for the uninterrupted one (seeds fixed per prompt batch)
    sampled, want = result.preference["sampled"], ref.preference["sampled"]
    assert sampled["samples"] == 2 and set(sampled["before"]) == set(ref.preference["before"]) >= {"vowels", "format"}
    for side in ("before", "after"):
        assert sampled["per_prompt"][side]["vowels"] == pytest.approx(want["per_prompt"][side]["vowels"], abs=1e-6)
        assert len(sampled["per_prompt"][side]["vowels"]) == len(ref.preference["per_prompt"][side]["vowels"])
    # the greedy held-out answers are kept beside their rewards: re-scoring each text gives the
    # recorded per-prompt value (so a reader of result.json reads what was scored)
    answers, per = ref.preference["answers"], ref.preference["per_prompt"]
    for side in ("before", "after"):
        assert len(answers[side]) == len(answers["prompts"]) == len(per[side]["vowels"]) > 0
        again = [sum(ch in "aeiou" for ch in t) / max(1, len(t)) for t in answers[side]]
        assert again == pytest.approx(per[side]["vowels"], abs=1e-12)

    # the held-out prompts were never trained on, and the run exported like an SFT run
    rows = [json.loads(line) for line in (run / "heldout.jsonl").read_text().splitlines()]
    held_out = {f"{r['source']}:{r['line']}" for r in rows}
    trained = {i.split("#")[0] for b in fresh.batches for i in b}
    assert held_out and not held_out & trained
    out = json.loads((run / "result.json").read_text())
    assert out["objective"] == "grpo" and out["success"] and (run / "merged" / "model.safetensors").exists()
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if x.get("type") == "train"][-3:] == [3, 4, 5]


def test_a_failing_reward_stops_the_run_naming_the_prompt(tmp_path, tiny_model_dir, user_rewards):
    with pytest.raises(RewardError, match=r"reward 'picky' failed on prompt \S+:\d*[02468]#\d+ .*no verdict"):
        ICEBURGFineTuner(cfg(tmp_path, reward=["tiny_rewards:picky"])).train()
    with pytest.raises(IceburgError, match="one process"):
        ICEBURGFineTuner(cfg(tmp_path, nproc=2)).train()


def _cli(out, *extra, env):
    import subprocess

    cmd = [sys.executable, "-m", "iceburg.cli", "--objective", "grpo", "--model-type", "surveyor", "--output-dir",
           str(out), "--output-name", "r", "--max-steps", "6", "--save-steps", "2", "--batch-size", "4",
           "--grad-accum", "1", "--max-seq-length", "640", "--max-completion-length", "16", "--grpo-beta", "0.04",
           "--learning-rate", "5e-3", "--threads", "1", "--reward", "tiny_rewards:vowels", *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _last_per_step(path) -> dict[int, dict]:
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return {m["step"]: {k: v for k, v in _numbers(m).items() if k != "type"} for m in lines if m.get("type") == "train"}


def test_kill_9_then_resume_reproduces_the_uninterrupted_run(tmp_path, tiny_model_dir, user_rewards):
    import os
    import signal
    import time

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    killed = _cli(tmp_path / "a", env=env)
    state = tmp_path / "a" / "r" / "checkpoint" / "state.json"
    deadline = time.time() + 300
    while not state.exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(killed.pid, signal.SIGKILL)  # as soon as the first checkpoint is on disk
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, killed.stderr.read()[-2000:]
    saved = json.loads(state.read_text())["step"]
    assert saved in (2, 4)
    resumed = _cli(tmp_path / "a", "--resume", env=env)
    fresh = _cli(tmp_path / "b", env=env)
    for p in (resumed, fresh):
        assert p.wait() == 0, p.stderr.read()[-2000:]
    a, b = _last_per_step(tmp_path / "a" / "r" / "metrics.jsonl"), _last_per_step(tmp_path / "b" / "r" / "metrics.jsonl")
    assert sorted(b) == [1, 2, 3, 4, 5, 6] and set(range(saved + 1, 7)) <= set(a)
    for s in range(saved + 1, 7):  # the steps the resumed process ran, against the uninterrupted run
        assert a[s] == pytest.approx(b[s], rel=1e-5, abs=1e-6), s
    assert json.loads((tmp_path / "a" / "r" / "result.json").read_text())["resumed_from_step"] == saved
