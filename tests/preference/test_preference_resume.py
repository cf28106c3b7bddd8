"""A preference run interrupted after a checkpoint resumes (--resume) and reports, step for step,
the same metrics as an uninterrupted run: adapter, optimizer, scheduler, step and RNG (LoRA
dropout 0.05, the default, is on) are restored, and the plan is rebuilt identically."""

from __future__ import annotations

import json

import pytest

from callbacks import StopAt

from iceburg.config import TrainingConfig
from iceburg.errors import IceburgError
from iceburg.training.finetuner import ICEBURGFineTuner


def cfg(out, objective, **kw):
    # 5 steps of 2 pairs (the planner halves --batch-size 4 for [chosen; rejected]), checkpoint every 2
    return TrainingConfig(model_type="surveyor", objective=objective, output_dir=str(out), output_name="r",
                          max_steps=5, save_steps=2, batch_size=4, gradient_accumulation_steps=1,
                          max_seq_length=96, learning_rate=2e-3, num_threads=1, **kw)


def _numbers(m: dict) -> dict:
    return {k: v for k, v in m.items() if k not in ("elapsed_s", "peak_rss_mib")}


@pytest.mark.parametrize("objective", ["dpo", "kto"])
def test_interrupted_preference_run_resumes(tmp_path, tiny_model_dir, objective):
    stopper = StopAt(3)
    with pytest.raises(KeyboardInterrupt):
        ICEBURGFineTuner(cfg(tmp_path, objective), callbacks=[stopper]).train()
    run = tmp_path / "r"
    assert json.loads((run / "checkpoint" / "state.json").read_text())["step"] == 2
    assert not (run / "result.json").exists()
    with pytest.raises(IceburgError, match="--resume"):
        ICEBURGFineTuner(cfg(tmp_path, objective)).train()

    # a resume that would train another plan (here: another shuffle) is refused, naming the cause
    with pytest.raises(IceburgError, match="another step plan"):
        ICEBURGFineTuner(cfg(tmp_path, objective, resume=True, seed=7)).train()
    assert json.loads((run / "checkpoint" / "state.json").read_text())["plan"]

    resumed = StopAt(-1)
    result = ICEBURGFineTuner(cfg(tmp_path, objective, resume=True), callbacks=[resumed]).train()
    assert result.resumed_from_step == 2 and result.steps == 5 and sorted(resumed.steps) == [3, 4, 5]

    fresh = StopAt(-1)
    ref = ICEBURGFineTuner(cfg(tmp_path / "fresh", objective), callbacks=[fresh]).train()
    # the same batches in the same order, and every per-step figure equal to float tolerance
    assert stopper.batches[:2] + resumed.batches == fresh.batches
    combined = {**{s: m for s, m in stopper.steps.items() if s <= 2}, **resumed.steps}
    assert sorted(combined) == sorted(fresh.steps) == [1, 2, 3, 4, 5]
    for s in combined:
        assert _numbers(combined[s]) == pytest.approx(_numbers(fresh.steps[s]), rel=1e-5, abs=1e-6), s
    # loss moved after the checkpoint, so equality is not the untrained loss repeated
    # (step 1's DPO loss is ln 2 exactly: policy == reference; an untrained step repeats it to 1e-7)
    assert any(abs(fresh.steps[s]["loss"] - fresh.steps[1]["loss"]) > 1e-5 for s in (3, 4, 5))
    assert result.preference["after"] == pytest.approx(ref.preference["after"], rel=1e-5, abs=1e-6)
    assert result.preference["before"] == pytest.approx(ref.preference["before"], rel=1e-5, abs=1e-6)
    assert (run / "result.json").exists() and (run / "merged" / "model.safetensors").exists()
