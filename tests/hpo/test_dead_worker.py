"""A worker process that died (killed, out of memory) leaves a RUNNING trial: it is marked FAIL."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

optuna = pytest.importorskip("optuna")

from iceburg.hpo.study import fail_dead_trials, open_storage  # noqa: E402


def test_running_trial_of_a_dead_worker_is_failed_and_a_live_one_is_kept(tmp_path):
    study = optuna.create_study(storage=open_storage(str(tmp_path / "s.journal")), study_name="s")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for pid in (dead.pid, os.getpid()):
        t = study.ask()
        t.set_user_attr("host", socket.gethostname())
        t.set_user_attr("pid", pid)
    assert fail_dead_trials(study) == [0]
    trials = optuna.load_study(study_name="s", storage=open_storage(str(tmp_path / "s.journal"))).trials
    assert trials[0].state == optuna.trial.TrialState.FAIL
    assert trials[0].user_attrs["error"] == f"worker process {dead.pid} died"
    assert trials[1].state == optuna.trial.TrialState.RUNNING  # this process is alive


def test_study_folder_refuses_a_study_but_reuses_what_a_failed_start_left(tmp_path):
    from iceburg.errors import IceburgError
    from iceburg.hpo import StudyFolder

    folder = StudyFolder(tmp_path / "s")
    folder.prepare(resume=False)
    (folder.root / "data_stats.json").write_text("{}")  # a start that failed in the pipeline
    folder.prepare(resume=False)
    folder.study_json.write_text("{}")
    with pytest.raises(IceburgError, match="pass --hpo-resume"):
        folder.prepare(resume=False)
    folder.prepare(resume=True)
    other = StudyFolder(tmp_path / "run")
    (other.root / "merged").mkdir(parents=True)  # someone else's folder
    with pytest.raises(IceburgError, match="pass --hpo-resume"):
        other.prepare(resume=False)
