"""Logs as agent SDKs write them (docs/data.md, "Content as the SDKs write it"): OpenAI content
parts, Anthropic Messages blocks, the developer role and reasoning fields load with 0 rejects and
keep their text, calls, results and reasoning; each kind of bad input is one reject with file,
line, code and a reason naming what is wrong."""

from __future__ import annotations

import json

import pytest

from iceburg.data.loader import read_records
from iceburg.records import RejectWriter

SEARCH = {"name": "web_search", "description": "Search the web.",
          "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}

OPENAI_PARTS = {"messages": [
    {"role": "developer", "content": [{"type": "text", "text": "Cite sources."}]},
    {"role": "user", "content": [{"type": "text", "text": "Is 91 prime?"}, {"type": "input_text", "text": "Be brief."}]},
    {"role": "assistant", "content": [{"type": "output_text", "text": "No: 91 = 7 x 13."}],
     "reasoning_content": "Try 7.", "reasoning": "Try 7."}]}

ANTHROPIC = {"system": [{"type": "text", "text": "You are a surveyor."}], "tools": [SEARCH], "messages": [
    {"role": "user", "content": "What links sleep and memory?"},
    {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "Search first.", "signature": "sig"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": "Let me search."},
        {"type": "tool_use", "id": "toolu_1", "name": "web_search", "input": {"q": "sleep memory"}},
        {"type": "tool_use", "id": "toolu_2", "name": "web_search", "input": {"q": "slow-wave sleep"}}]},
    {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "Diekelmann 2010"}]},
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Walker 2017", "is_error": False},
        {"type": "text", "text": "Summarise both."}]},
    {"role": "assistant", "content": [{"type": "text", "text": "Walker (2017) and Diekelmann (2010) agree."}]}]}

INLINE = [
    {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>\nR1\n</think>\n\nA1"}]},
    {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "R2\n</think>\n\nA2"}]},
    {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "A3", "thinking": "R3"}]},
    {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>\n\n</think>\n\nA4"}]},
    {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "<think>R5</think>A5"}]},
    {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "A6", "reasoning": "R6"}]},
]


def load(tmp_path, objs):
    path = tmp_path / "log.jsonl"
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    with RejectWriter(tmp_path / "rejects.jsonl") as rejects:
        records = list(read_records([path], rejects))
    rows = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    return records, rows, path


def test_openai_content_parts_and_the_developer_role(tmp_path):
    (rec,), rows, _ = load(tmp_path, [OPENAI_PARTS])
    assert rows == []
    assert rec.messages == [
        {"role": "system", "content": "Cite sources."},
        {"role": "user", "content": "Is 91 prime?\nBe brief."},  # text parts joined with "\n" (vLLM)
        {"role": "assistant", "content": "No: 91 = 7 x 13.", "reasoning": "Try 7."}]  # vLLM's copy kept once


def test_an_anthropic_messages_log(tmp_path):
    (rec,), rows, _ = load(tmp_path, [ANTHROPIC])
    assert rows == []
    m = rec.messages
    assert m[0] == {"role": "system", "content": "You are a surveyor."}
    assert m[2]["content"] == "Let me search." and m[2]["reasoning"] == "Search first."
    assert [(c["id"], c["function"]) for c in m[2]["tool_calls"]] == [
        ("toolu_1", {"name": "web_search", "arguments": {"q": "sleep memory"}}),
        ("toolu_2", {"name": "web_search", "arguments": {"q": "slow-wave sleep"}})]
    # each tool_result is a tool message linked by id (in the log's order), then the user's text
    assert m[3:6] == [{"role": "tool", "content": "Diekelmann 2010", "tool_call_id": "toolu_2", "name": "web_search"},
                      {"role": "tool", "content": "Walker 2017", "tool_call_id": "toolu_1", "name": "web_search"},
                      {"role": "user", "content": "Summarise both."}]
    assert m[6] == {"role": "assistant", "content": "Walker (2017) and Diekelmann (2010) agree."}
    assert rec.tools == [{"type": "function", "function": {"name": "web_search", "description": "Search the web.",
                                                           "parameters": SEARCH["input_schema"]}}]
    # the normalised record round-trips through the loader unchanged
    (again,), rows, _ = load(tmp_path, [rec.to_json()])
    assert rows == [] and again.messages == rec.messages and again.tools == rec.tools


def test_reasoning_fields_and_inline_think_blocks(tmp_path):
    recs, rows, _ = load(tmp_path, INLINE)
    assert rows == []
    assert [(r.messages[-1]["content"], r.messages[-1].get("reasoning")) for r in recs] == [
        ("A1", "R1"), ("A2", "R2"), ("A3", "R3"), ("A4", None), ("A5", "R5"), ("A6", "R6")]


BAD = [
    ({"messages": [{"role": "user", "content": [{"type": "hologram", "data": "x"}]},
                   {"role": "assistant", "content": "a"}]},
     "unknown_content_part", "messages[0] content[0]: unknown content part type 'hologram'"),
    ({"messages": [{"role": "user", "content": "q"},
                   {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "web_search",
                                                      "input": {"q": "x"}}]},
                   {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "r"}]},
                   {"role": "assistant", "content": "a"}]},
     "unmatched_tool_result", "message 2 (tool): tool_call_id 'toolu_9' matches no call"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "r"}]},
                   {"role": "assistant", "content": "a"}]},
     "unmatched_tool_result", "message 0 (tool): tool result (tool_call_id 'toolu_1') with no preceding tool call"),
    ({"messages": [{"role": "user", "content": "q"},
                   {"role": "assistant", "content": "a", "reasoning_content": ["not", "text"]}]},
     "invalid_reasoning", "messages[1]: 'reasoning_content' must be a string, got list"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                                {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
                   {"role": "assistant", "content": "a"}]},
     "unsupported_content", "messages[0] content[1]: content part of type 'image_url' in a user turn"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "..."}}]},
                   {"role": "assistant", "content": "a"}]},
     "unsupported_content", "content part of type 'input_audio'"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>never closed"}]},
     "invalid_reasoning", "'<think>' is never closed"),
]


@pytest.mark.parametrize("obj,code,reason", BAD, ids=[c for _, c, _ in BAD])
def test_bad_input_is_one_reject_with_file_line_code_and_reason(tmp_path, obj, code, reason):
    recs, rows, path = load(tmp_path, [OPENAI_PARTS, obj, ANTHROPIC])
    assert len(recs) == 2  # the good lines around it load
    (row,) = rows
    assert (row["stage"], row["source"], row["line"], row["code"]) == ("load", str(path), 2, code)
    assert reason in row["reasons"][0], row["reasons"]
    assert json.loads(row["raw"]) == obj  # the line itself is kept, recoverable
