"""An interrupted run resumes from its last checkpoint and finishes the same step plan."""

from __future__ import annotations

import json

import pytest

from callbacks import StopAt  # noqa: F401 (test_lora_dropout imports it from here)

from iceburg.config import TrainingConfig
from iceburg.errors import IceburgError
from iceburg.training.finetuner import ICEBURGFineTuner

pytestmark = pytest.mark.slow


def cfg(tmp_path, **kw):
    return TrainingConfig(model_type="dissident", output_dir=str(tmp_path), output_name="r", max_steps=5,
                          save_steps=2, batch_size=1, gradient_accumulation_steps=1, max_seq_length=256,
                          use_emergence_weighting=False, learning_rate=1e-3, **kw)


def test_interrupted_run_resumes_from_checkpoint(tmp_path, tiny_model_dir):
    stopper = StopAt(3)
    with pytest.raises(KeyboardInterrupt):
        ICEBURGFineTuner(cfg(tmp_path), callbacks=[stopper]).train()
    run = tmp_path / "r"
    assert json.loads((run / "checkpoint" / "state.json").read_text())["step"] == 2
    assert not (run / "result.json").exists()
    with pytest.raises(IceburgError, match="--resume"):
        ICEBURGFineTuner(cfg(tmp_path)).train()

    seen = StopAt(-1)
    result = ICEBURGFineTuner(cfg(tmp_path, resume=True), callbacks=[seen]).train()
    assert result.resumed_from_step == 2 and result.steps == 5
    # the resumed run continues the same plan: steps 3..5 are the batches the first run would have seen next
    assert seen.batches == _uninterrupted_batches(tmp_path / "fresh")[2:5]
    assert (run / "result.json").exists() and (run / "merged" / "model.safetensors").exists()


def _uninterrupted_batches(out):
    rec = StopAt(-1)
    c = cfg(out)
    ICEBURGFineTuner(c, callbacks=[rec]).train()
    return rec.batches
