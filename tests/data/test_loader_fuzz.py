"""Every input line accounted for (issue 13): a UTF-8 BOM, lone surrogates, and property-based
fuzzing of the loader and every writer - any line of bytes is kept or rejected with a reason,
nothing crashes, and the counts add up to the lines read."""

from __future__ import annotations

import json
import string

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from iceburg.config import TrainingConfig
from iceburg.data.collector import FineTuningLogger
from iceburg.data.loader import read_records
from iceburg.records import Record, Reject, RejectWriter
from iceburg.truth.report import run_filter_only

GOOD = {"messages": [{"role": "user", "content": "Why is the sky blue?"},
                     {"role": "assistant", "content": "Rayleigh scattering favours short wavelengths."}]}
def _lines(path) -> list[str]:
    """JSONL lines split on "\n" only: str.splitlines() also splits on U+0085 / U+2028, which
    JSON strings may hold raw (hypothesis found b"\xc2\x85")."""
    return [x for x in path.read_text(encoding="utf-8").split("\n") if x]


# A file opening with a compression format's magic bytes is that format (a DataError where it does
# not decompress, tests/data/test_loader.py), not lines: such first lines are left out of the fuzzing.
COMPRESSION_MAGICS = (b"\x1f\x8b\x08", b"\x28\xb5\x2f\xfd", b"\xfd7zXZ\x00", b"BZh")
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def test_a_byte_order_mark_on_the_first_line_is_accepted(tmp_path):
    p = tmp_path / "bom.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n" + json.dumps(GOOD).encode() + b"\n")
    stats: dict = {}
    assert len(list(read_records([p], stats=stats))) == 2 and stats == {"lines": 2, "valid": 2}


def test_a_lone_surrogate_is_rejected_at_load_with_its_position(tmp_path):
    p = tmp_path / "s.jsonl"
    bad = json.dumps(GOOD).replace("Rayleigh", "Ray\\ud800leigh")  # valid JSON, not encodable as UTF-8
    assert "\\ud800" in bad
    p.write_text(json.dumps(GOOD) + "\n" + bad + "\n")
    with RejectWriter(tmp_path / "rejects.jsonl") as rw:
        kept = list(read_records([p], rw))
    assert len(kept) == 1
    (rej,) = [json.loads(x) for x in _lines(tmp_path / "rejects.jsonl")]
    assert rej["line"] == 2 and "lone UTF-16 surrogate '\\ud800' at character 3" in rej["reasons"][0]
    assert json.loads(rej["raw"]) == json.loads(bad)  # the raw line is kept, recoverable


def test_writers_escape_a_lone_surrogate_instead_of_crashing(tmp_path):
    """A record built in Python (not from a file) can still carry one: every writer writes the
    JSON escape, which reads back as the same string."""
    rec = Record(messages=[{"role": "user", "content": "q\ud800"}, {"role": "assistant", "content": "a\udfff"}],
                 metadata={"note": "x\udc80"})
    with RejectWriter(tmp_path / "rejects.jsonl") as rw:
        rw.write(Reject(stage="truth", reasons=["r\ud800"], record=rec.to_json()))
    back = json.loads((tmp_path / "rejects.jsonl").read_text(encoding="utf-8"))
    assert back["record"] == rec.to_json() and back["reasons"] == ["r\ud800"]
    with FineTuningLogger(tmp_path / "log.jsonl") as log:
        log.log_record(rec)
    assert json.loads((tmp_path / "log.jsonl").read_text(encoding="utf-8")) == rec.to_json()


# Lines: arbitrary bytes; arbitrary text; JSON objects with arbitrary (surrogate-holding) strings
# in the places the loader reads; deep nesting; and valid records, so kept lines occur too.
_any_text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=40)
_json_obj = st.fixed_dictionaries({
    "messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "bot"]),
                                                "content": _any_text | st.integers()}), max_size=4)},
    optional={"quality_score": st.floats(allow_nan=True) | st.none() | st.booleans(),
              "metadata": st.dictionaries(_any_text, _any_text, max_size=2) | _any_text,
              "agent_type": _any_text | st.integers(), "weight": st.floats(allow_nan=True)})
_line = st.one_of(
    st.binary(max_size=80).map(lambda b: b.replace(b"\n", b" ")),
    _any_text.map(lambda t: t.replace("\n", " ").encode("utf-8", "surrogatepass")),
    _json_obj.map(lambda o: json.dumps(o).encode()),  # ensure_ascii: surrogates become \udXXX escapes
    st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n),
    st.just(json.dumps(GOOD).encode()),
    st.just(b"\xef\xbb\xbf" + json.dumps(GOOD).encode()),
)


@FUZZ
@given(lines=st.lists(_line, min_size=1, max_size=12))
def test_any_line_is_kept_or_rejected_with_a_reason(tmp_path_factory, lines):
    assume(not lines[0].startswith(COMPRESSION_MAGICS))
    d = tmp_path_factory.mktemp("fuzz")
    p = d / "in.jsonl"
    p.write_bytes(b"\n".join(lines) + b"\n")
    stats: dict = {}
    with RejectWriter(d / "rejects.jsonl") as rw:
        kept = list(read_records([p], rw, stats=stats))
    rejects = [json.loads(x) for x in _lines(d / "rejects.jsonl")]
    if stats.get("documents"):  # the first line opened one JSON document (e.g. `[]` alone): items count
        assert sorted([r.line for r in kept] + [r["line"] for r in rejects]) == list(range(1, stats.get("lines", 0) + 1))
    else:
        assert stats.get("lines", 0) + stats.get("blank", 0) == p.read_bytes().count(b"\n")
    assert stats.get("valid", 0) == len(kept) and stats.get("rejected", 0) == len(rejects) == rw.total
    assert len(kept) + len(rejects) == stats.get("lines", 0)
    assert all(r["reasons"] and r["reasons"][0] and r["stage"] == "load" for r in rejects)
    assert sorted([r.line for r in kept] + [r["line"] for r in rejects]) == sorted(set(
        [r.line for r in kept] + [r["line"] for r in rejects]))  # each line once
    for r in kept:  # kept records are writable as UTF-8 and read back equal
        assert json.loads(json.dumps(r.to_json(), ensure_ascii=False).encode("utf-8")) == r.to_json()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_line, min_size=1, max_size=10))
def test_filter_only_counts_add_up_to_the_lines_read(tmp_path_factory, lines):
    """The whole --filter-only writer chain (rejects, spool, filtered.jsonl, report) on fuzzed
    input: no crash, every file parses, every line is in filtered.jsonl or rejects.jsonl."""
    assume(not lines[0].startswith(COMPRESSION_MAGICS))
    d = tmp_path_factory.mktemp("fo")
    p = d / "in.jsonl"
    p.write_bytes(b"\n".join(lines) + b"\n")
    rep = run_filter_only([str(p)], d / "out", TrainingConfig(), workers=1)
    s = rep["stats"]
    filtered = _lines(d / "out" / "filtered.jsonl")
    rejects = _lines(d / "out" / "rejects.jsonl")
    assert all(json.loads(x) for x in filtered + rejects)
    assert rep["lines_read"] == rep["load_rejected"] + s["total_input"]
    assert s["total_input"] == (s["final_output"] + s["low_quality_removed"] + s["exact_duplicates_removed"]
                                + s["near_duplicates_removed"] + s["invalid_removed"])
    assert len(filtered) == s["final_output"] and len(filtered) + len(rejects) == rep["lines_read"]


@FUZZ
@given(text=st.text(alphabet=st.characters(codec=None, exclude_categories=()) | st.sampled_from(
    list(string.printable)), max_size=200))
def test_reject_writer_round_trips_any_string(tmp_path_factory, text):
    d = tmp_path_factory.mktemp("rw")
    with RejectWriter(d / "r.jsonl") as rw:
        rw.write(Reject(stage="load", reasons=[text or "x"], raw=text))
    back = json.loads((d / "r.jsonl").read_text(encoding="utf-8"))
    # lone surrogates come back as themselves; a high+low pair written apart reads back joined
    assert back["raw"].encode("utf-16", "surrogatepass") == text.encode("utf-16", "surrogatepass")
