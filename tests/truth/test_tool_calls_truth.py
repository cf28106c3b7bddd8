"""The truth filter and emergence signals on tool-calling transcripts: a turn that only calls a tool
is not an empty or cut-off answer, parallel tool results are a well-formed exchange, and duplicate
detection tells apart transcripts that differ only in a call's arguments."""

from __future__ import annotations

import copy

from iceburg.data import sample_data_path
from iceburg.data.loader import read_records
from iceburg.emergence.signals import record_text
from iceburg.records import Record, RejectWriter
from iceburg.truth import TruthFilter
from iceburg.truth import signals as truth_signals
from iceburg.truth.dedup import DedupConfig

ANSWER = ("The Cochrane review of 29 prevention trials found that regular vitamin C does not reduce how "
          "often people catch colds, though it shortens colds by about 8% in adults and 14% in children.")


def call(name, **args):
    return {"type": "function", "function": {"name": name, "arguments": args}}


def transcript(query="vitamin C common cold Cochrane", final=ANSWER):
    return Record(messages=[
        {"role": "user", "content": "What does the Cochrane review say about vitamin C and colds?"},
        {"role": "assistant", "content": "", "tool_calls": [call("web_search", query=query),
                                                             call("fetch_url", url="https://doi.org/10.1002/14651858.CD000980.pub4")]},
        {"role": "tool", "name": "web_search", "content": "[{\"title\": \"Vitamin C for preventing colds\"}]"},
        {"role": "tool", "name": "fetch_url", "content": "Authors' conclusions: ..."},
        {"role": "assistant", "content": final}])


def reasons(rejects: RejectWriter) -> list[str]:
    return list(rejects.counts)


def test_tool_call_turn_is_not_an_empty_answer_and_parallel_results_are_well_formed():
    rec = transcript()
    # what the text signals alone would say about the call turn's empty content
    naive = truth_signals.compute([m["content"] for m in rec.messages if m["role"] == "assistant"])
    assert "empty" in naive.defects
    naive_structure, _ = truth_signals.role_structure(rec.messages)
    assert naive_structure == ["two consecutive turns by the same role"]
    a = TruthFilter().assess(rec)
    assert not a.reasons, a.reasons
    assert rec.signals["truth.structure_problems"] == 0.0


def test_real_defects_in_the_answer_are_still_found():
    w = RejectWriter(None)
    kept, _ = TruthFilter().filter([transcript(final="OK."), transcript(final=ANSWER[:-1] + " and the")],
                                   rejects=w)
    assert kept == [] and sorted(k.split(":")[1] for k in reasons(w)) == ["empty", "truncated"]


def test_call_only_record_is_read_as_its_calls():
    rec = Record(messages=transcript().messages[:2])
    assert not TruthFilter(min_quality_score=0.0).assess(rec).reasons


def test_dedup_keys_include_the_call():
    """Same text, different call: not an exact duplicate (near dedup, which would rightly group such
    close transcripts, is off here to test the exact key)."""
    a, same, other = transcript(), transcript(), transcript(query="vitamin D influenza randomised trials")
    w = RejectWriter(None)
    kept, _ = TruthFilter(min_quality_score=0.0, dedup=DedupConfig(near=False)).filter([a, same, other], rejects=w)
    assert kept == [a, other]
    assert [k.split(":")[0] for k in reasons(w)] == ["dedup"]


def test_emergence_reads_the_calls():
    assert "web_search" in record_text(transcript()) and "vitamin c common cold cochrane" in record_text(transcript())


def test_bundled_tool_transcripts_pass_the_filter(tmp_path):
    for agent in ("surveyor", "dissident"):
        recs = [r for r in read_records([sample_data_path(agent)], RejectWriter(None))
                if any(m.get("tool_calls") for m in r.messages)]
        assert len(recs) >= 5
        w = RejectWriter(None)
        kept, _ = TruthFilter().filter(copy.deepcopy(recs), agent_type=agent, rejects=w)
        assert len(kept) == len(recs), w.counts
