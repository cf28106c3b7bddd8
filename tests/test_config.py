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


# -- sections (issue 24: config in sections) --------------------------------------------------------

def test_every_key_is_in_exactly_one_section():
    import dataclasses

    from iceburg.config import SECTIONS

    placed = [k for names in SECTIONS.values() for k in names]
    assert len(placed) == len(set(placed)), "a key is listed in two sections"
    fields = {f.name for f in dataclasses.fields(TrainingConfig)}
    assert set(placed) == fields, (f"unplaced: {sorted(fields - set(placed))}; "
                                   f"listed but not a field: {sorted(set(placed) - fields)}")


def test_sectioned_yaml_round_trips_and_flat_keys_still_load(tmp_path, caplog):
    cfg = TrainingConfig(model_type="oracle", epochs=4, quantization=["q4_k_m"], min_quality_score=0.6,
                         hpo=3, hpo_workers=2)
    y = tmp_path / "c.yaml"
    y.write_text(cfg.to_yaml())
    text = y.read_text()
    assert text.startswith("run:") and "train:\n  objective: sft\n  epochs: 4" in text
    assert "hpo:\n  hpo: 3\n  hpo_workers: 2" in text  # `hpo` is a section and a key inside it
    with caplog.at_level("WARNING"):
        again = TrainingConfig.from_yaml(y)
    assert again.to_dict() == cfg.to_dict()
    assert "deprecated" not in caplog.text
    y.write_text("epochs: 7\nmodel_type: oracle\nhpo: 2\n")  # the old flat form
    with caplog.at_level("WARNING"):
        old = TrainingConfig.from_yaml(y)
    assert (old.epochs, old.model_type, old.hpo) == (7, ModelType.ORACLE, 2)
    assert "flat keys are deprecated" in caplog.text and "train: {epochs: ...}" in caplog.text


def test_yaml_key_in_the_wrong_section_names_the_right_one(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("export:\n  epochs: 3\ntrain:\n  epochz: 1\n")
    with pytest.raises(ConfigError) as e:
        TrainingConfig.from_yaml(y)
    assert "epochs belongs to section 'train', not 'export'" in str(e.value)
    assert "unknown key train.epochz" in str(e.value)
    args = build_parser().parse_args(["--config", str(y)])
    with pytest.raises(ConfigError):
        make_config(args)


def test_section_view_and_help_by_section():
    cfg = TrainingConfig(epochs=5)
    assert cfg.section("train")["epochs"] == 5 and "nproc" in cfg.section("distributed")
    with pytest.raises(KeyError, match="sections: run, data"):
        cfg.section("nope")
    help_text = build_parser().format_help()
    for title in ("truth filter", "distributed training", "curation on datatrove"):
        assert title in help_text


def test_the_command_line_reports_key_and_value_problems_together(tmp_path):
    """An unknown key no longer hides the bad values beside it: one error names them all."""
    y = tmp_path / "c.yaml"
    y.write_text("train:\n  epochs: 0\n  learning_rate: -1\n  epochz: 2\nbogus: 1\n")
    with pytest.raises(ConfigError) as e:
        make_config(build_parser().parse_args(["--config", str(y), "--lora-r", "0"]))
    msg = str(e.value)
    for part in ("unknown key train.epochz", "unknown key 'bogus'", "epochs (--epochs): must be >= 1",
                 "learning_rate (--learning-rate)", "lora_r (--lora-r): must be >= 1"):
        assert part in msg, part
    y.write_text("train:\n  epochs: 0\n")
    cfg = make_config(build_parser().parse_args(["--config", str(y), "--epochs", "2"]))  # a flag fixes it
    assert cfg.epochs == 2
