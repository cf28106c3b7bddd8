"""The parts of `iceburg generate` that need no teacher: the job log (torn lines, settings), the
prompt parser, seed ranking, and the leak check on real records with the real embedder."""

from __future__ import annotations

import json
import re

import pytest

from iceburg.errors import IceburgError
from iceburg.generation.ask import parse_prompt
from iceburg.generation.job import JobFolder
from iceburg.records import Record


def test_job_log_keeps_whole_lines_and_refuses_other_settings(tmp_path):
    job = JobFolder(tmp_path / "job")
    assert job.open({"model_type": "surveyor", "seed": 0}) is False
    job.append({"key": "ask:0", "response": {"text": "a"}})
    job.append({"key": "answer:0", "error": "timeout"})  # a failed call is logged, not finished
    with open(job.requests, "ab") as fh:  # what a kill inside the write leaves
        fh.write(b'{"key": "ask:1", "resp')
    (job.root / ".rejects.jsonl.tmp123").write_text("partial")  # a writer killed before its rename
    assert job.open({"model_type": "surveyor", "seed": 0}) is True
    assert list(job.finished()) == ["ask:0"]
    assert job.requests.read_bytes().endswith(b"}\n")
    assert not list(job.root.glob(".*.jsonl.*"))
    job.append({"key": "ask:1", "response": {"text": "b"}})
    assert list(job.finished()) == ["ask:0", "ask:1"]
    with pytest.raises(IceburgError, match=r"seed: 0 -> 1.*new --job folder"):
        job.open({"model_type": "surveyor", "seed": 1})


@pytest.mark.parametrize("reply, prompt", [
    ("New task: How do tides affect coastal erosion?", "How do tides affect coastal erosion?"),
    ('Sure, happy to help.\nAnd here is the new task:\n"What limits lithium supply?"\nThis is rarer.',
     "What limits lithium supply?"),
    ("<task>\nSummarise the evidence on microplastics in drinking water.\n</task>",
     "Summarise the evidence on microplastics in drinking water."),
])
def test_parse_prompt_takes_the_task_out_of_a_chatty_reply(reply, prompt):
    assert parse_prompt(reply) == prompt


def test_combined_rank_puts_the_seed_high_on_every_signal_first():
    from iceburg.generation.seeds import _combine

    recs = [Record(messages=[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}],
                   source="d", line=i) for i in range(3)]
    rows = [(recs[0], "curated", {"gap": 0.1, "ifd": 0.5}), (recs[1], "curated", {"gap": 0.9, "ifd": 1.2}),
            (recs[2], "curated", {"gap": 0.5, "ifd": 0.9})]
    seeds = _combine(rows)
    assert [s.source for s in seeds] == ["d:1", "d:2", "d:0"] and seeds[0].score == 1.0 and seeds[-1].score == 0.0
    assert json.loads(json.dumps(seeds[0].to_json()))["parts"] == {"gap": 0.9, "ifd": 1.2}


def test_curator_drops_a_reworded_copy_of_a_heldout_record():
    from iceburg.data import sample_data_path
    from iceburg.config import ModelType
    from iceburg.data.loader import read_records
    from iceburg.emergence import SentenceEmbedder
    from iceburg.generation.keep import Curator, NearIndex
    from iceburg.records import RejectWriter
    from iceburg.truth.filter import TruthFilter

    records = list(read_records([str(sample_data_path(ModelType.SURVEYOR))], RejectWriter(None)))[:6]
    emb = SentenceEmbedder()
    held, train = NearIndex(emb), NearIndex(emb)
    held.add(records[:3], "heldout")
    train.add(records[3:5], "training")
    cur = Curator(TruthFilter(), "surveyor", held, train, NearIndex(emb))
    copy = json.loads(json.dumps(records[1].messages))
    count = iter(range(10**6))  # every 20th word replaced (~5%), layout kept so the truth filter still passes it
    copy[-1]["content"] = re.sub(r"[A-Za-z]{4,}", lambda m: "indeed" if next(count) % 20 == 0 else m[0],
                                 copy[-1]["content"])
    reasons = cur.check(Record(messages=copy))
    assert [r.code for r in reasons] == ["heldout_duplicate"] and "heldout:" in reasons[0].message
    assert [r.code for r in cur.check(Record(messages=records[3].messages))] == ["exact_duplicate"]
    assert cur.check(records[5]) == [] and cur.kept == [records[5]]
    assert [r.code for r in cur.check(records[5])] == ["exact_duplicate"]  # now among the generated
