"""The data pipeline: a plain list of steps; every line read is kept, held out or rejected."""

from __future__ import annotations

import json

from iceburg.config import TrainingConfig
from iceburg.pipeline import TRAIN_STEPS, prepare, read_step, run_steps, split_step
from iceburg.records import Reason, Record, RejectWriter


def test_prepare_accounts_for_every_line(tmp_path):
    cfg = TrainingConfig(model_type="surveyor", use_emergence_weighting=False)
    with RejectWriter(tmp_path / "rejects.jsonl") as rejects:
        data = prepare(cfg, rejects)
        total_rejected = rejects.total
    kept = len(data.curriculum.records) + len(data.eval_records)
    assert data.records_read == kept + total_rejected
    assert data.eval_records and data.stats["curriculum"] == "plain"
    lines = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert len(lines) == total_rejected
    assert {x["stage"] for x in lines} <= {"load", "truth", "dedup"}
    assert all(x["reasons"] and x["source"] and x["line"] > 0 for x in lines)


def test_steps_compose(tmp_path):
    cfg = TrainingConfig(model_type="oracle", eval_fraction=0.2)
    state = run_steps(cfg, RejectWriter(None), (read_step, split_step))
    assert len(state.eval_records) == round(0.2 * (len(state.records) + len(state.eval_records)))
    assert [s.__name__ for s in TRAIN_STEPS] == ["read_step", "truth_step", "split_step", "emergence_step"]


def test_reject_writer_drop_keeps_record_and_survives_lone_surrogates(tmp_path):
    rec = Record(messages=[{"role": "user", "content": "q \ud800"}, {"role": "assistant", "content": "a"}],
                 source="f.jsonl", line=3)
    with RejectWriter(tmp_path / "r.jsonl") as w:
        w.drop("truth", rec, [Reason("empty", "empty: 1 word")], {"quality": 0.1})
        w.drop("load", None, [Reason("invalid_json", "malformed JSON")], raw="{bad", source="f.jsonl", line=4)
    rows = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows[0]["record"]["messages"][0]["content"] == "q \ud800" and rows[0]["line"] == 3
    assert rows[1] == {"stage": "load", "source": "f.jsonl", "line": 4, "code": "invalid_json",
                       "codes": ["invalid_json"], "reasons": ["malformed JSON"], "raw": "{bad"}
    assert w.counts == {"truth:empty": 1, "load:invalid_json": 1}
