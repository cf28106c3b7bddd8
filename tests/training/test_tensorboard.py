"""--report-to tensorboard: the callback writes event files TensorBoard reads back."""

from __future__ import annotations

import pytest

pytest.importorskip("tensorboard", reason="tensorboard not installed (pip install 'iceburg[tensorboard]')")


def test_event_files_hold_train_and_eval_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from iceburg.training.tensorboard import TensorBoardLog

    log = TensorBoardLog(tmp_path / "tb")
    for step, loss in enumerate([2.0, 1.5, 1.25], start=1):
        log.on_step(step, {"step": step, "loss": loss, "lr": 1e-3, "supervised_tokens_per_s": 100.0 * step})
    log.on_eval(3, 1.4)
    log.close()
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(1, 2.0), (2, 1.5), (3, 1.25)]
    assert [(e.step, round(e.value, 6)) for e in acc.Scalars("eval/loss")] == [(3, 1.4)]
    assert "train/supervised_tokens_per_s" in acc.Tags()["scalars"]
