"""Config validation: every problem reported at once, naming the flag; YAML precedence."""

from __future__ import annotations

import pytest

from iceburg.cli import build_parser, make_config
from iceburg.config import ModelType, TrainingConfig
from iceburg.errors import ConfigError


def test_all_problems_reported_at_once():
    cfg = TrainingConfig(model_type="wizard", epochs=0, learning_rate=5.0, curriculum_strategy="random",
                         export_formats=["tflite"], output_name="../escape", data_path=["/nope.jsonl"])
    with pytest.raises(ConfigError) as e:
        cfg.validate()
    text = str(e.value)
    for flag in ("--model-type", "--epochs", "--learning-rate", "--curriculum", "--formats", "--output-name",
                 "--data-path"):
        assert flag in text
    assert len(e.value.problems) == 7


def test_yaml_then_flags_precedence_and_unknown_keys(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("epochs: 7\nlearning_rate: 0.001\nmodel_type: oracle\n")
    args = build_parser().parse_args(["--config", str(y), "--model-type", "dissident", "--epochs", "2"])
    cfg = make_config(args)
    assert cfg.epochs == 2 and cfg.learning_rate == 0.001 and cfg.model_type is ModelType.DISSIDENT
    y.write_text("epochz: 3\n")
    with pytest.raises(ConfigError, match="unknown key 'epochz'"):
        make_config(build_parser().parse_args(["--config", str(y)]))


def test_lora_and_learning_rate_resolution():
    assert TrainingConfig(model_type="oracle").resolved_lora() == (64, 128)
    assert TrainingConfig(model_type="surveyor", lora_r=8).resolved_lora() == (8, 16)
    cfg = TrainingConfig()
    assert cfg.resolved_learning_rate(4096) == pytest.approx(2e-4)
    assert cfg.resolved_learning_rate(256) == pytest.approx(8e-4)
    assert cfg.resolved_learning_rate(64) == 1e-3
    assert TrainingConfig(learning_rate=3e-5).resolved_learning_rate(256) == 3e-5
