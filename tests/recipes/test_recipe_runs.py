"""The recipes on the real iceburg-tiny base: `open_run` creates, refuses and reopens run folders;
the SFT and preference recipes end in the same `finish_run` (result.json is the returned result,
report.html is built); a pipeline error still leaves rejects.jsonl to read."""

from __future__ import annotations

import json

import pytest

from iceburg.config import TrainingConfig
from iceburg.errors import DataError, IceburgError
from iceburg.recipes.run import open_run
from iceburg.run_folder import RunFolder


def test_open_run_creates_refuses_and_reopens(tmp_path, tiny_model_dir):
    cfg = TrainingConfig(model_type="surveyor", output_dir=str(tmp_path))
    run, base = open_run(cfg)
    assert cfg.output_name and run.root == tmp_path / cfg.output_name  # <type>-<UTC time>, set on cfg
    assert cfg.output_name.startswith(f"{cfg.model_type.value}-")
    assert json.loads(run.config.read_text()) == json.loads(json.dumps(cfg.to_dict()))
    assert json.loads(run.base_model.read_text())["source"] == base.source == "embedded"

    with pytest.raises(IceburgError, match="--resume"):  # an interrupted run is never overwritten
        open_run(TrainingConfig(model_type="surveyor", output_dir=str(tmp_path), output_name=cfg.output_name))
    again = TrainingConfig(model_type="surveyor", output_dir=str(tmp_path), output_name=cfg.output_name,
                           resume=True)
    run2, base2 = open_run(again, base=base)  # a search passes the base it resolved once
    assert run2 == run and base2 is base


def _sft(tmp_path, **kw) -> TrainingConfig:
    return TrainingConfig(model_type="dissident", output_dir=str(tmp_path), output_name="r", max_steps=2,
                          batch_size=1, gradient_accumulation_steps=1, max_seq_length=128,
                          use_emergence_weighting=False, export_formats=[], num_threads=1, **kw)


def _finished_like_sft(result, run: RunFolder) -> None:
    # finish_run: the returned result is what result.json holds, and the report is built from it
    assert json.loads(run.result.read_text()) == json.loads(json.dumps(result.to_dict(), default=str))
    assert run.report.is_file() and (run.merged / "model.safetensors").is_file()
    assert result.adapter_dir == run.adapter and result.merged_dir == run.merged


@pytest.mark.slow
def test_sft_recipe_finishes_through_finish_run(tmp_path, tiny_model_dir):
    from iceburg.recipes.sft import train_sft

    cfg = _sft(tmp_path)
    result = train_sft(cfg)
    run = RunFolder(tmp_path / "r")
    _finished_like_sft(result, run)
    stats, plan = json.loads(run.data_stats.read_text()), json.loads(run.plan.read_text())
    assert result.steps == 2 and stats["train_examples"] == result.train_examples
    assert plan["world"]["world_size"] == 1 and plan["backend"] == "torch"  # prepare_on_main wrote the plan


@pytest.mark.slow
def test_preference_recipe_finishes_like_sft(tmp_path, tiny_model_dir):
    from iceburg.recipes.preference import train_preference_run

    cfg = TrainingConfig(model_type="surveyor", objective="dpo", output_dir=str(tmp_path), output_name="r",
                         max_steps=1, batch_size=4, gradient_accumulation_steps=1, max_seq_length=96,
                         export_formats=[], num_threads=1)
    result = train_preference_run(cfg.validate())
    run = RunFolder(tmp_path / "r")
    _finished_like_sft(result, run)
    assert result.objective == "dpo" and result.steps == 1 and run.preferences.is_file()


def test_pipeline_error_stops_with_rejects_written(tmp_path, tiny_model_dir):
    from iceburg.recipes.sft import train_sft

    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n{\"messages\": []}\n", encoding="utf-8")
    with pytest.raises(DataError, match="no valid records"):
        train_sft(_sft(tmp_path, data_path=[str(bad)]))
    rejects = [json.loads(line) for line in (tmp_path / "r" / "rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejects] == [1, 2]  # the message's "see rejects.jsonl" holds

