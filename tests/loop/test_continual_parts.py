"""Continual training's parts on the bundled sample transcripts, without a model: seen_before
against the parent's data, replay selection, the same-base check, lineage bookkeeping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iceburg.config import TrainingConfig
from iceburg.data import sample_data_path
from iceburg.data.loader import normalise
from iceburg.pipeline import PipelineState
from iceburg.recipes.continual import (Parent, check_same_base, replay_count, replay_step, seen_before_step)
from iceburg.recipes.lineage import (LineageError, add_version, current_run, ensure_root, lineage_target,
                                     next_version, publish, read_lineage, rollback)
from iceburg.records import RejectWriter
from iceburg.run_folder import RunFolder


def _valid(lines: list[str]) -> list[str]:
    """The sample file's lines that load (it also holds deliberately broken ones for the loader)."""
    out = []
    for line in lines:
        try:
            normalise(json.loads(line))
            out.append(line)
        except Exception:  # noqa: BLE001 - broken sample lines are skipped, whatever the reason
            continue
    return out


LINES = _valid(sample_data_path(TrainingConfig(model_type="surveyor").model_type).read_text(encoding="utf-8")
               .splitlines())
OTHER = _valid(sample_data_path(TrainingConfig(model_type="oracle").model_type).read_text(encoding="utf-8")
               .splitlines())  # another agent's transcripts: new data unrelated to the parent's


def _row(i: int, quality: float = 0.5, emergence: float = 0.5, obj: dict | None = None) -> dict:
    return {"source": "surveyor.jsonl", "line": i + 1, "record": obj or json.loads(LINES[i]),
            "scores": {"quality_score": quality, "emergence_score": emergence}}


def _parent(tmp_path: Path, train: list[dict], heldout: list[dict]) -> Parent:
    return Parent(RunFolder(tmp_path / "v1"), {}, {}, train, heldout)


def _edited(i: int) -> dict:
    """Line i with three words of its first assistant turn changed (a near copy: about 6 of some
    hundreds of word 2-grams differ, Jaccard ~0.95, far above the 0.5 threshold)."""
    obj = json.loads(LINES[i])
    turn = next(m for m in obj["messages"] if m["role"] == "assistant")
    turn["content"] = turn["content"].replace(" the ", " a ", 3)
    return obj


def test_seen_before_drops_exact_and_near_copies_of_the_parents_data_only(tmp_path):
    parent = _parent(tmp_path, [_row(i) for i in range(20)], [_row(i) for i in range(20, 25)])
    new = [json.loads(LINES[3]), json.loads(LINES[22]), _edited(5), _edited(21)] + \
          [json.loads(OTHER[i]) for i in range(6)]
    with RejectWriter(tmp_path / "rejects.jsonl") as rejects:
        state = PipelineState(cfg=TrainingConfig(), rejects=rejects,
                              records=[normalise(o, "new.jsonl", i + 1) for i, o in enumerate(new)])
        seen_before_step(parent)(state)
    assert [r.line for r in state.records] == [5, 6, 7, 8, 9, 10]  # the six unrelated records stay
    assert state.stats["continual"] == {"parent": str(parent.run.root), "seen_before": 4, "new_records": 6}
    rows = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [r["codes"] for r in rows] == [["seen_before"]] * 4
    assert [r["details"]["similarity"] == 1.0 for r in rows] == [True, True, False, False]
    assert "of surveyor.jsonl:4, which v1 already saw" in rows[0]["reasons"][0]


def test_replay_takes_the_best_scored_share(tmp_path):
    rows = [_row(i, quality=q, emergence=1 - q) for i, q in enumerate([0.2, 0.9, 0.5, 0.7, 0.1, 0.8])]
    parent = _parent(tmp_path, rows, [])
    # k / (new + k) = fraction: 6 new records at 0.25 -> 2 replayed; capped by what the parent has
    assert (replay_count(6, 0.25, 10), replay_count(6, 0.0, 10), replay_count(30, 0.5, 6)) == (2, 0, 6)

    def replayed(by: str, fraction: float = 0.25) -> list[int]:
        state = PipelineState(cfg=TrainingConfig(), rejects=None,
                              records=[normalise(json.loads(OTHER[i]), "new.jsonl", i + 1) for i in range(6)])
        replay_step(parent, fraction, by, seed=0)(state)
        assert state.stats["continual"]["replay"] == len(state.records) - 6
        return [r.line for r in state.records[6:]]

    assert replayed("quality") == [2, 6]  # qualities 0.9 and 0.8
    assert replayed("emergence") == [5, 1]  # emergence 0.9 and 0.8
    assert replayed("random") == replayed("random") and len(replayed("random")) == 2  # seeded
    assert replayed("quality", 0.0) == []


class _Base:
    def __init__(self, **kw):
        self.kw = kw

    def to_dict(self) -> dict:
        return self.kw


def test_a_different_base_is_refused_naming_both(tmp_path):
    parent = Parent(RunFolder(tmp_path / "v1"), {}, {"spec": "iceburg-tiny", "path": "/a", "architecture": "llama",
                                                     "param_count": 2_600_000}, [], [])
    check_same_base(_Base(spec="iceburg-tiny", path="/a", architecture="llama", param_count=2_600_000), parent)
    with pytest.raises(LineageError, match=r"trained on base iceburg-tiny .*this run's base is smollm2-135m.*drop\s+--base-model"):
        check_same_base(_Base(spec="smollm2-135m", path="/b", architecture="llama", param_count=134_515_008), parent)


def test_lineage_keeps_order_and_refuses_unpassed_publish_and_unpublished_rollback(tmp_path):
    v1 = RunFolder(tmp_path / "surveyor" / "v1")
    v1.root.mkdir(parents=True)
    v1.write_json(v1.result, {"success": True, "eval_loss_after": 1.5})
    lineage = ensure_root(v1, "surveyor")
    assert [v["version"] for v in lineage["versions"]] == ["v1"] and next_version(lineage) == "v2"
    folder = v1.root.parent
    add_version(folder, {"version": "v2", "run": "v2", "parent": "v1", "passed": False, "published": False,
                         "gates": [{"passed": False, "message": "gate previous_heldout_loss<=base+0.02: FAILED"}]})
    with pytest.raises(LineageError, match="v2 did not pass its gates.*previous_heldout_loss"):
        publish(folder, "v2")
    with pytest.raises(LineageError, match="v1 was never published"):
        rollback(folder, "v1")
    with pytest.raises(LineageError, match=r"no version v7 \(versions: v1, v2\)"):
        rollback(folder, "v7")
    add_version(folder, {**read_lineage(folder)["versions"][0], "published": True})  # replaced in place
    assert [v["version"] for v in read_lineage(folder)["versions"]] == ["v1", "v2"]
    assert rollback(folder, "v1")[-1] == "current surveyor version: v1"
    with pytest.raises(LineageError, match="lineage of surveyor, not oracle"):
        ensure_root(v1, "oracle")


def test_serve_resolves_a_line_of_versions_to_its_current_version(tmp_path, capsys):
    """`iceburg serve runs/surveyor` / `iceburg serve surveyor`: lineage.json's `current`, read at each
    start, so a rollback followed by a restart serves the rolled-back version."""
    from iceburg.app import main

    folder = tmp_path / "runs" / "surveyor"
    for name in ("v1", "v2"):
        (folder / name).mkdir(parents=True)
    entries = [{"version": v, "run": v, "parent": p, "passed": True, "published": False} for v, p in
               (("v1", None), ("v2", "v1"))]
    RunFolder(folder).write_json(folder / "lineage.json", {"model_type": "surveyor", "current": None,
                                                            "versions": entries})
    root = tmp_path / "runs"
    assert lineage_target(str(folder), root) == folder and lineage_target("surveyor", root) == folder
    assert lineage_target("iceburg-surveyor", root) == folder
    assert lineage_target(str(folder / "v2"), root) is None  # a run folder is served as it is
    assert lineage_target("no-such-thing.gguf", root) is None  # left to serve's own "no such file" error
    with pytest.raises(LineageError, match=r"0 lineages of oracle under .*pass --root"):
        lineage_target("oracle", root)
    with pytest.raises(LineageError, match=r"no version is current \(none published yet\).*iceburg publish"):
        current_run(folder)
    assert main(["serve", "surveyor", "--root", str(root)]) == 2  # refused before any model loads
    assert "none published yet" in capsys.readouterr().err
    add_version(folder, {**entries[0], "published": True})
    add_version(folder, {**entries[1], "published": True})
    rollback(folder, "v2")
    assert current_run(folder) == (folder / "v2", "v2")
    rollback(folder, "v1")
    assert current_run(folder) == (folder / "v1", "v1")
    (tmp_path / "other" / "surveyor").mkdir(parents=True)
    RunFolder(folder).write_json(tmp_path / "other" / "surveyor" / "lineage.json",
                                 {"model_type": "surveyor", "current": None, "versions": []})
    with pytest.raises(LineageError, match="2 lineages of surveyor"):
        lineage_target("surveyor", tmp_path)
