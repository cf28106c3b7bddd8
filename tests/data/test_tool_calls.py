"""Tool-calling transcripts: every input spelling loads into one shape; malformed calls are rejected
with the line and the reason."""

from __future__ import annotations

import json

import pytest

from iceburg.data.loader import read_records
from iceburg.records import Record, RejectWriter

TOOLS = [{"type": "function", "function": {
    "name": "tide_lookup", "description": "High and low tides for a port.",
    "parameters": {"type": "object", "properties": {"port": {"type": "string"}}, "required": ["port"]}}}]
ANSWER = "High tide at Brest is at 06:12 (6.1 m) and 18:40 (5.9 m)."
RESULT = '{"high": ["06:12", "18:40"]}'
CANONICAL = [
    {"role": "user", "content": "When is high tide in Brest today?"},
    {"role": "assistant", "content": "",
     "tool_calls": [{"type": "function", "function": {"name": "tide_lookup", "arguments": {"port": "Brest"}}}]},
    {"role": "tool", "content": RESULT, "name": "tide_lookup"},
    {"role": "assistant", "content": ANSWER},
]


def load(tmp_path, objs, **kw):
    p = tmp_path / "t.jsonl"
    p.write_text("".join(json.dumps(o) + "\n" for o in objs))
    w = RejectWriter(None)
    stats: dict[str, int] = {}
    recs = list(read_records([p], w, stats=stats, **kw))
    return recs, w, p


def openai(arguments, **extra_tool):
    return {"messages": [
        {"role": "user", "content": "When is high tide in Brest today?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "tide_lookup", "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": RESULT, **extra_tool},
        {"role": "assistant", "content": ANSWER}], "tools": TOOLS}


def test_the_issue_example_loads(tmp_path):
    """The transcript from the issue (arguments as an object, a named tool result) used to be rejected
    with `message 2 (assistant): empty content`."""
    recs, w, _ = load(tmp_path, [{"messages": CANONICAL}])
    assert w.total == 0 and recs[0].messages == CANONICAL and recs[0].tools is None


@pytest.mark.parametrize("arguments", [{"port": "Brest"}, '{"port": "Brest"}'], ids=["object", "json-string"])
def test_openai_shape_with_ids_and_tools(tmp_path, arguments):
    (rec,), w, _ = load(tmp_path, [openai(arguments)])
    call = rec.messages[1]["tool_calls"][0]
    assert call == {"type": "function", "id": "call_1", "function": {"name": "tide_lookup", "arguments": {"port": "Brest"}}}
    assert rec.messages[1]["content"] == ""
    # the result learns the name of the call it answers
    assert rec.messages[2] == {"role": "tool", "content": RESULT, "tool_call_id": "call_1", "name": "tide_lookup"}
    assert rec.tools == TOOLS


def test_sharegpt_function_call_and_observation(tmp_path):
    obj = {"conversations": [
        {"from": "human", "value": "When is high tide in Brest today?"},
        {"from": "function_call", "value": json.dumps({"name": "tide_lookup", "arguments": {"port": "Brest"}})},
        {"from": "observation", "value": RESULT},
        {"from": "gpt", "value": ANSWER}], "tools": json.dumps(TOOLS)}  # LLaMA-Factory keeps tools as a string
    (rec,), w, _ = load(tmp_path, [obj])
    assert rec.messages == CANONICAL and rec.tools == TOOLS


def test_older_function_call_and_function_role(tmp_path):
    obj = {"messages": [
        CANONICAL[0],
        {"role": "assistant", "content": None, "function_call": {"name": "tide_lookup", "arguments": '{"port": "Brest"}'}},
        {"role": "function", "name": "tide_lookup", "content": {"high": ["06:12", "18:40"]}},
        CANONICAL[3]], "functions": [TOOLS[0]["function"]]}
    (rec,), w, _ = load(tmp_path, [obj])
    assert rec.messages[1] == CANONICAL[1]
    assert rec.messages[2] == {"role": "tool", "content": '{"high": ["06:12", "18:40"]}', "name": "tide_lookup"}
    assert rec.tools == TOOLS  # bare definitions are wrapped in the OpenAI shape


def test_parallel_calls_pair_results_by_name(tmp_path):
    calls = [{"type": "function", "function": {"name": n, "arguments": {"port": p}}}
             for n, p in (("tide_lookup", "Brest"), ("tide_lookup", "Cork"))]
    obj = {"messages": [CANONICAL[0], {"role": "assistant", "content": "Checking both ports.", "tool_calls": calls},
                        {"role": "tool", "content": "a"}, {"role": "tool", "content": "b"}, CANONICAL[3]]}
    (rec,), w, _ = load(tmp_path, [obj])
    assert [m.get("name") for m in rec.messages] == [None, None, "tide_lookup", "tide_lookup", None]


def test_round_trip_through_to_json(tmp_path):
    (rec,), _, _ = load(tmp_path, [openai({"port": "Brest"})])
    (again,), _, _ = load(tmp_path, [rec.to_json()])
    assert again.messages == rec.messages and again.tools == rec.tools


BAD = [
    (openai("{port: Brest}"), "tool_calls[0] (tide_lookup) arguments is not valid JSON", "invalid_tool_call"),
    (openai('["Brest"]'), "arguments must be a JSON object, got list", "invalid_tool_call"),
    ({**openai({"port": "Brest"}), "tools": [{"type": "function", "function": {"name": "weather"}}]},
     "calls unknown function 'tide_lookup' (the record's tools define: weather)", "invalid_tool_call"),
    ({"messages": [CANONICAL[0], {"role": "tool", "content": RESULT}, CANONICAL[3]]},
     "message 1 (tool): tool result with no preceding tool call", "unmatched_tool_result"),
    (openai({"port": "Brest"}, tool_call_id="call_9"), "tool_call_id 'call_9' matches no call", "unmatched_tool_result"),
    ({"messages": [CANONICAL[0], {"role": "assistant", "content": "", "tool_calls": [{"function": {"arguments": {}}}]}]},
     "tool_calls[0] has no function name", "invalid_tool_call"),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "tide_lookup(Brest)"}]},
     "conversations[1] (function_call) is not valid JSON", "invalid_tool_call"),
    ({"messages": [CANONICAL[0], {"role": "assistant", "content": ""}]}, "message 1 (assistant): empty content",
     "invalid_record"),
]


@pytest.mark.parametrize("obj,reason,code", BAD, ids=[r[:30] for _, r, _ in BAD])
def test_malformed_tool_calls_are_rejected_with_line_and_reason(tmp_path, obj, reason, code):
    p = tmp_path / "t.jsonl"
    p.write_text("".join(json.dumps(o) + "\n" for o in [{"messages": CANONICAL}, obj]))
    with RejectWriter(tmp_path / "rejects.jsonl") as w:
        recs = list(read_records([p], w))
    assert len(recs) == 1 and w.total == 1 and w.counts == {f"load:{code}": 1}
    (row,) = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert reason in row["reasons"][0] and row["code"] == code and row["line"] == 2, row


def test_strict_names_file_and_line(tmp_path):
    from iceburg.errors import DataError

    with pytest.raises(DataError, match=r"t\.jsonl:2: .*arguments is not valid JSON"):
        load(tmp_path, [{"messages": CANONICAL}, openai("{bad")], strict=True)


def test_assistant_text_and_hash_include_the_call():
    a = Record(messages=CANONICAL)
    other = json.loads(json.dumps(CANONICAL))
    other[1]["tool_calls"][0]["function"]["arguments"]["port"] = "Cork"
    b = Record(messages=other)
    assert 'tide_lookup {"port": "Brest"}' in a.assistant_text()
    assert a.content_hash() != b.content_hash()
