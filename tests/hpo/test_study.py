"""Hyperparameter search on iceburg-tiny with a handful of very short trials (4 steps, 256 tokens).

What is checked: a pruned trial stops early; the best config reproduces its eval loss when rerun
with --config; a crashed trial is recorded as failed and a resumed study goes on; two worker
processes share one study without losing or duplicating trials.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("optuna")

from iceburg.config import TrainingConfig  # noqa: E402
from iceburg.errors import IceburgError  # noqa: E402
from iceburg.hpo import run_study  # noqa: E402
from iceburg.hpo.study import open_storage  # noqa: E402

pytestmark = pytest.mark.slow

SHORT = dict(model_type="surveyor", max_steps=4, eval_steps=2, max_seq_length=256, num_threads=2)
# Trial 0 moves the tiny model (3e-3; its default is 8e-4); trial 1 is the same but 15x slower.
# Evaluations at steps 2 and 4: at step 2 trial 1's loss is above the median of the completed
# trial 0 and it is pruned, 2 steps before its end.
GOOD = {"learning_rate": 3e-3, "lora_r": 16, "lora_alpha_ratio": 2, "lora_dropout": 0.0, "max_steps": 4,
        "curriculum_strategy": "weighted"}
SLOW = {**GOOD, "learning_rate": 2e-4}


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("hpo")
    cfg = TrainingConfig(**SHORT, hpo=3, output_dir=str(out), output_name="study")
    return cfg, run_study(cfg, enqueue=[GOOD, SLOW])


def test_pruned_trial_stops_early_and_completed_ones_finish(study):
    _, rep = study
    good, slow = rep.rows[0], rep.rows[1]
    assert good["state"] == "COMPLETE" and slow["state"] == "PRUNED", rep.rows
    done = metrics(good["run_dir"])
    assert max(m["step"] for m in done if m["type"] == "train") == 4
    assert (Path(good["run_dir"]) / "result.json").exists() and (Path(good["run_dir"]) / "adapter").is_dir()
    pruned = metrics(slow["run_dir"])
    assert max(m["step"] for m in pruned if m["type"] == "train") == slow["last_step"] == 2
    good_at_2 = next(m["eval_loss"] for m in done if m["type"] == "eval" and m["step"] == 2)
    assert pruned[-1]["type"] == "eval" and pruned[-1]["eval_loss"] > good_at_2
    assert not (Path(slow["run_dir"]) / "result.json").exists()


def test_study_folder_holds_table_plots_report_and_runs_the_pipeline_once(study):
    cfg, rep = study
    root = rep.root
    rows = list(csv.DictReader((root / "trials.csv").open()))
    assert [r["trial"] for r in rows] == ["0", "1", "2"] and all(float(r["wall_s"]) > 0 for r in rows)
    assert rows[0]["learning_rate"] == "0.003" and rows[0]["lora_alpha"] == "32"
    assert (root / "optimization_history.png").stat().st_size > 1000
    assert (root / "param_importances.png").exists() == (rep.counts.get("COMPLETE", 0) >= 2)
    report = (root / "report.md").read_text()
    assert f"best: trial {rep.best_trial}" in report and "## Search ranges" in report
    # one pipeline for all trials: the study folder has its stats and rejects; trials reuse them
    stats = json.loads((root / "data_stats.json").read_text())
    assert stats["load"]["rejected"] >= 1 and (root / "rejects.jsonl").stat().st_size > 0
    for r in rep.rows:
        trial_stats = json.loads((Path(r["run_dir"]) / "data_stats.json").read_text())
        assert trial_stats["load"] == stats["load"] and trial_stats["curriculum"] == r["curriculum_strategy"]
        assert json.loads((Path(r["run_dir"]) / "config.json").read_text())["learning_rate"] == r["learning_rate"]


def test_best_config_reproduces_its_eval_loss_with_dash_dash_config(study, tmp_path):
    from iceburg.cli import main

    _, rep = study
    assert main(["--config", str(rep.best_config), "--output-dir", str(tmp_path), "--output-name", "rerun"]) == 0
    result = json.loads((tmp_path / "rerun" / "result.json").read_text())
    assert result["eval_loss_after"] == pytest.approx(rep.best_value, abs=1e-5)
    assert result["steps"] == rep.best_overrides["max_steps"]


def test_crashed_trial_is_recorded_failed_and_the_resumed_study_goes_on(study, tmp_path):
    cfg, rep = study
    shutil.copytree(rep.root, tmp_path / "study")  # the journal is in the folder: a copy is a study
    (tmp_path / "study" / "trials" / "trial-0003").write_text("a file where trial 3's run folder goes")
    again = TrainingConfig(**{**SHORT, "hpo": 5, "hpo_resume": True, "output_dir": str(tmp_path),
                              "output_name": "study"})
    rep2 = run_study(again)
    assert [r["trial"] for r in rep2.rows] == [0, 1, 2, 3, 4]
    assert [r["state"] for r in rep2.rows][:3] == [r["state"] for r in rep.rows]
    assert rep2.rows[3]["state"] == "FAIL" and "NotADirectoryError" in rep2.rows[3]["error"]
    assert rep2.rows[4]["state"] in ("COMPLETE", "PRUNED") and Path(rep2.rows[4]["run_dir"]).is_dir()
    with pytest.raises(IceburgError, match="--hpo-resume to continue"):
        run_study(TrainingConfig(**{**SHORT, "hpo": 5, "output_dir": str(tmp_path), "output_name": "study"}))
    with pytest.raises(IceburgError, match="holds no study"):
        run_study(TrainingConfig(**{**SHORT, "hpo": 5, "hpo_resume": True, "output_dir": str(tmp_path),
                                    "output_name": "none"}))


def test_two_worker_processes_share_one_study_through_the_cli(tmp_path, tiny_model_dir):
    import optuna

    from iceburg.cli import main

    argv = ["--model-type", "surveyor", "--hpo", "3", "--hpo-workers", "2", "--max-steps", "2",
            "--eval-steps", "1", "--max-seq-length", "256", "--threads", "1",
            "--output-dir", str(tmp_path), "--output-name", "par"]
    assert main(argv) == 0
    root = tmp_path / "par"
    trials = optuna.load_study(study_name="par", storage=open_storage(str(root / "study.journal"))).trials
    assert [t.number for t in trials] == [0, 1, 2]  # nothing lost, nothing past N
    assert all(t.state.is_finished() for t in trials)
    assert len({t.user_attrs["pid"] for t in trials}) == 2 and {t.user_attrs["worker"] for t in trials} == {0, 1}
    dirs = [t.user_attrs["run_dir"] for t in trials]
    assert len(set(dirs)) == 3 and all((Path(d) / "config.json").exists() for d in dirs)
    assert sorted(p.name for p in (root / "trials").iterdir()) == ["trial-0000", "trial-0001", "trial-0002"]
