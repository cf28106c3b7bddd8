"""The search space: per-type ranges, derived from the config and the base's width."""

from __future__ import annotations

import pytest

from iceburg.config import ConfigError, TrainingConfig
from iceburg.hpo.space import apply, ranges, seq_choices


def test_lora_rank_follows_the_type_table_and_the_base_width():
    assert ranges(TrainingConfig(model_type="surveyor"), 4096)["lora_r"] == [8, 16, 32]
    assert ranges(TrainingConfig(model_type="oracle"), 4096)["lora_r"] == [32, 64, 128]
    assert ranges(TrainingConfig(model_type="oracle"), 64)["lora_r"] == [32, 64]  # r <= hidden size


def test_learning_rate_range_is_centred_on_the_width_scaled_default():
    cfg = TrainingConfig()
    lo, hi = ranges(cfg, 4096)["learning_rate"]
    assert (lo, hi) == pytest.approx((5e-5, 8e-4))  # 2e-4 / 4, 2e-4 * 4
    lo, hi = ranges(cfg, 256)["learning_rate"]
    assert (lo, hi) == pytest.approx((2e-4, 3.2e-3))  # 8e-4 at hidden 256 (sqrt(16) * 2e-4)


def test_length_is_steps_when_fixed_else_epochs_and_curriculum_only_with_emergence():
    r = ranges(TrainingConfig(max_steps=10), 256)
    assert r["max_steps"] == (5, 10) and "epochs" not in r
    r = ranges(TrainingConfig(epochs=2, use_emergence_weighting=False), 256)
    assert r["epochs"] == (1, 4) and "max_steps" not in r and "curriculum_strategy" not in r
    assert seq_choices(TrainingConfig(max_seq_length=1024)) == [256, 512, 1024]
    assert seq_choices(TrainingConfig(max_seq_length=300)) == [256]
    assert seq_choices(TrainingConfig(max_seq_length=128)) == [128]


def test_apply_refuses_keys_that_are_not_searched():
    cfg = apply(TrainingConfig(), {"lora_r": 4}, output_name="t")
    assert cfg.lora_r == 4 and cfg.output_name == "t"
    with pytest.raises(KeyError):
        apply(TrainingConfig(), {"data_path": ["x"]})


def test_search_flags_are_checked_together():
    with pytest.raises(ConfigError) as e:
        TrainingConfig(hpo_workers=2, hpo_storage="sqlite:///x.db").validate()
    msg = str(e.value)
    assert "--hpo-workers: only applies to a hyperparameter search; add --hpo N" in msg
    assert "--hpo-storage" in msg
    with pytest.raises(ConfigError) as e:
        TrainingConfig(hpo=4, hpo_resume=True, resume=True).validate()
    assert "--output-name" in str(e.value) and "--hpo-resume" in str(e.value)
    with pytest.raises(ConfigError, match="hpo_storage \\(--hpo-storage\\): .*is a file"):
        TrainingConfig(hpo=2, hpo_storage=__file__ + "/study.journal").validate()
    with pytest.raises(ConfigError, match="hpo \\(--hpo\\): must be >= 1"):
        TrainingConfig(hpo=0).validate()
