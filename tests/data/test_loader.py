"""Loading and validation: every supported format, every kind of bad line, streaming."""

from __future__ import annotations

import json

import pytest

from iceburg.data import sample_data_path
from iceburg.data.loader import read_records
from iceburg.errors import DataError
from iceburg.records import RejectWriter

GOOD = [
    {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "q1"},
                  {"role": "assistant", "content": "a1"}], "quality_score": 0.9, "emergence_score": 0.4,
     "metadata": {"topic": "x"}, "session_id": "s1"},
    {"conversation": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]},
    {"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "q3"},
                       {"from": "gpt", "value": "a3"}]},
    {"instruction": "q4", "input": "ctx", "output": "a4"},
    {"prompt": "q5", "response": "a5"},
    {"input": "q6", "output": "a6"},
]


def write_lines(path, lines):
    with open(path, "wb") as fh:
        for line in lines:
            fh.write((line if isinstance(line, bytes) else line.encode()) + b"\n")
    return path


def test_every_format_normalises_to_messages(tmp_path):
    p = write_lines(tmp_path / "d.jsonl", [json.dumps(o) for o in GOOD])
    recs = list(read_records([p]))
    assert [r.messages[-1]["content"] for r in recs] == ["a1", "a2", "a3", "a4", "a5", "a6"]
    assert recs[0].quality_score == 0.9 and recs[0].emergence_score == 0.4
    assert recs[0].metadata == {"topic": "x", "session_id": "s1"}
    assert recs[2].messages[0] == {"role": "system", "content": "S"}
    assert recs[3].messages[0] == {"role": "user", "content": "q4\n\nctx"}
    assert recs[1].id == f"{p}:2"


@pytest.mark.parametrize("line,reason", [
    ('{"messages": [', "malformed JSON"),
    ('[1, 2]', "expected a JSON object"),
    ('{"messages": [{"content": "x"}]}', "has no 'role'"),
    ('{"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]}', "unknown role 'bot'"),
    ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]}', "empty content"),
    ('{"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "y"}]}', "must be a string"),
    ('{"messages": [{"role": "user", "content": "q"}]}', "no assistant turn"),
    ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "quality_score": 3}', "quality_score"),
    ('{"text": "hello"}', "no conversation found"),
    (b'{"prompt": "caf\xe9", "response": "x"}', "invalid UTF-8"),
])
def test_bad_lines_are_rejected_with_file_line_and_reason(tmp_path, line, reason):
    p = write_lines(tmp_path / "d.jsonl", [json.dumps(GOOD[4]), line])
    stats: dict = {}
    with RejectWriter(tmp_path / "rejects.jsonl") as rw:
        recs = list(read_records([p], rw, stats=stats))
    assert len(recs) == 1 and stats == {"lines": 2, "valid": 1, "rejected": 1}
    rej = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert len(rej) == 1 and rej[0]["source"] == str(p) and rej[0]["line"] == 2
    assert reason in rej[0]["reasons"][0] and rej[0]["stage"] == "load" and "raw" in rej[0]


def test_strict_raises_naming_file_and_line(tmp_path):
    p = write_lines(tmp_path / "d.jsonl", [json.dumps(GOOD[4]), "{oops"])
    with pytest.raises(DataError, match=rf"{p}:2: malformed JSON"):
        list(read_records([p], strict=True))


def test_folder_is_expanded_and_missing_path_is_an_error(tmp_path):
    write_lines(tmp_path / "a.jsonl", [json.dumps(GOOD[4])])
    write_lines(tmp_path / "b.jsonl", [json.dumps(GOOD[5])])
    assert len(list(read_records([tmp_path]))) == 2
    with pytest.raises(DataError, match="no such file"):
        list(read_records([tmp_path / "nope.jsonl"]))


def test_reading_is_streaming(tmp_path):
    """The reader yields the first record before it has read the rest of the file."""
    p = write_lines(tmp_path / "big.jsonl", [json.dumps(GOOD[4])] * 1000)
    it = read_records([p])
    first = next(it)
    assert first.line == 1  # a generator: nothing else consumed yet
    assert sum(1 for _ in it) == 999


def test_bundled_sample_data_has_every_type_and_real_rejects(tmp_path):
    total = 0
    for t in ("base", "surveyor", "dissident", "synthesist", "oracle"):
        path = sample_data_path(t)
        if not path.exists():
            pytest.fail(f"missing bundled sample data {path}")
        stats: dict = {}
        with RejectWriter(tmp_path / f"{t}.rejects.jsonl") as rw:
            recs = list(read_records([path], rw, stats=stats))
        total += len(recs)
        assert stats.get("rejected", 0) >= 2, f"{t}: sample data should carry deliberately bad lines"
        assert any(r.quality_score is not None for r in recs)
    assert total >= 250


def test_record_round_trips_through_to_json(tmp_path):
    from iceburg.data.loader import normalise

    rec = normalise(GOOD[0], source="x", line=1)
    rec.signals["truth.quality"] = 0.8
    rec.weight = 1.5
    back = normalise(json.loads(json.dumps(rec.to_json())))
    assert back.messages == rec.messages and back.signals == {"truth.quality": 0.8} and back.weight == 1.5
    assert back.quality_score == 0.9 and back.metadata == rec.metadata


# Files as users have them (docs/data.md "Files"): compressed logs, JSON documents, TRL's shapes.

def test_compressed_files_read_as_the_plain_file(tmp_path):
    import bz2
    import gzip
    import lzma

    lines = [json.dumps(o) for o in GOOD]
    plain = [r.messages for r in read_records([write_lines(tmp_path / "d.jsonl", lines)])]
    data = ("\n".join(lines) + "\n").encode()
    for name, compress in (("d.jsonl.gz", gzip.compress), ("d.jsonl.bz2", bz2.compress), ("other.log", lzma.compress)):
        (tmp_path / name).write_bytes(compress(data))  # told by the magic bytes, not the name
        assert [r.messages for r in read_records([tmp_path / name])] == plain, name
    sub = tmp_path / "logs"
    sub.mkdir()
    (sub / "a.jsonl.gz").write_bytes(gzip.compress(data))
    (sub / "notes.json").write_text("{}")  # a folder reads JSON Lines files only
    assert len(list(read_records([sub]))) == len(GOOD)


def test_a_truncated_or_zstd_file_is_an_error_naming_it(tmp_path):
    import gzip

    p = tmp_path / "cut.jsonl.gz"
    p.write_bytes(gzip.compress(("\n".join(json.dumps(GOOD[4]) for _ in range(300)) + "\n").encode())[:-20])
    with pytest.raises(DataError, match=rf"{p}: cannot decompress past line \d+ .*truncated or corrupt"):
        list(read_records([p]))
    z = tmp_path / "d.jsonl.zst"
    z.write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 20)
    with pytest.raises(DataError, match="zstd -d"):
        list(read_records([z]))
    text = write_lines(tmp_path / "bzh.jsonl", ["BZh9 is not bzip2", json.dumps(GOOD[4])])  # magic checked whole
    stats: dict = {}
    assert len(list(read_records([text], stats=stats))) == 1 and stats["rejected"] == 1


def test_a_json_array_file_yields_its_items_numbered(tmp_path):
    compact = tmp_path / "compact.json"
    compact.write_text(json.dumps(GOOD))
    pretty = tmp_path / "pretty.json"
    pretty.write_text("\ufeff" + json.dumps(GOOD, indent=2))  # with a byte-order mark too
    jq = tmp_path / "jq.json"  # `jq .` output: pretty objects one after another
    jq.write_text("".join(json.dumps(o, indent=2) + "\n" for o in GOOD))
    for p in (compact, pretty, jq):
        stats: dict = {}
        recs = list(read_records([p], stats=stats))
        assert [r.messages[-1]["content"] for r in recs] == ["a1", "a2", "a3", "a4", "a5", "a6"], p
        assert [r.line for r in recs] == [1, 2, 3, 4, 5, 6] and recs[0].id == f"{p}:1"
        assert stats == {"documents": 1, "lines": 6, "valid": 6}


def test_a_broken_json_document_keeps_the_items_before_and_rejects_the_rest(tmp_path):
    text = json.dumps(GOOD[:3], indent=2)
    cut = text.index('"conversations"')  # break the third item
    p = tmp_path / "broken.json"
    p.write_text(text[:cut] + "oops, " + text[cut:])
    with RejectWriter(tmp_path / "rejects.jsonl") as rw:
        recs = list(read_records([p], rw))
    assert [r.messages[-1]["content"] for r in recs] == ["a1", "a2"]
    (rej,) = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    line = text[:cut].count("\n") + 1
    assert rej["line"] == 3 and rej["code"] == "invalid_json"
    assert f"malformed JSON document at line {line} column" in rej["reasons"][0]
    assert rej["raw"].startswith("{") and "oops" in rej["raw"]  # the rest of the file is in the reject


def test_json_lines_that_only_look_like_a_document_stay_lines(tmp_path):
    """A list on line 1 followed by records, and a corrupt first line, are one rejected line each."""
    for first in ("[1, 2]", '{"messages": ['):
        p = write_lines(tmp_path / "d.jsonl", [first, json.dumps(GOOD[4]), json.dumps(GOOD[5])])
        stats: dict = {}
        with RejectWriter(tmp_path / "rejects.jsonl") as rw:
            recs = list(read_records([p], rw, stats=stats))
        assert [r.line for r in recs] == [2, 3] and stats == {"lines": 3, "valid": 2, "rejected": 1}, first


def test_trl_prompt_completion_records(tmp_path):
    conv = {"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "q"}],
            "completion": [{"role": "assistant", "content": "a"}]}
    p = write_lines(tmp_path / "d.jsonl", [
        json.dumps({"prompt": "q", "completion": "a"}), json.dumps(conv),
        json.dumps({"prompt": "q", "completion": "a", "label": True}),
        json.dumps({"prompt": "q", "completion": "bad", "label": False}),
        json.dumps({"prompt": [{"role": "user", "content": "q"}], "completion": "a"}),
        json.dumps({"text": "plain text"})])
    with RejectWriter(tmp_path / "rejects.jsonl") as rw:
        recs = list(read_records([p], rw))
    assert [r.messages for r in recs] == [
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], conv["prompt"] + conv["completion"],
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]]
    rej = {r["line"]: r["reasons"][0] for r in map(json.loads, (tmp_path / "rejects.jsonl").read_text().splitlines())}
    assert "--objective kto" in rej[4] and "both be strings or both lists" in rej[5] and "plain text" in rej[6]
