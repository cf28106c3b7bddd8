"""The answer assembler and the log folder's names, on byte streams cut at every position."""

from __future__ import annotations

import json

from iceburg.data.collector import AgentLogFolder, agent_folder_name
from iceburg.serve.exchange import SseAssembler, answer_from_json

CHUNKS = [
    {"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hé"}}]},
    {"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"content": "llo 🙂", "reasoning_content": "think"}}]},
    {"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "search", "arguments": '{"topic"'}}]}}]},
    {"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "function": {"arguments": ': "sleep"}'}}]}}]},
    {"id": "c", "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
     "usage": {"completion_tokens": 5}},
]


def test_stream_cut_anywhere_assembles_the_same_answer():
    wire = ("".join(f"data: {json.dumps(c, ensure_ascii=False)}\r\n\r\n" for c in CHUNKS) + ": ping\n\ndata: [DONE]\n\n").encode()
    for cut in range(1, len(wire)):  # every split point, inside UTF-8 sequences and CRLFs included
        asm = SseAssembler()
        asm.feed(wire[:cut])
        asm.feed(wire[cut:])
        assert asm.done and asm.answer.complete
        assert asm.answer.message() == {
            "role": "assistant", "content": "Héllo 🙂", "reasoning_content": "think",
            "tool_calls": [{"type": "function", "id": "call_1",
                            "function": {"name": "search", "arguments": '{"topic": "sleep"}'}}]}
        assert asm.answer.usage == {"completion_tokens": 5}


def test_incomplete_or_error_answers_are_not_complete():
    asm = SseAssembler()
    asm.feed(f"data: {json.dumps(CHUNKS[0])}\n\n".encode())  # no finish_reason: a cut stream
    assert not asm.answer.complete
    asm.feed(b'data: {"error": {"message": "boom"}}\n\n')
    assert asm.answer.error and not asm.answer.complete
    assert not answer_from_json(b"{not json").complete
    ok = answer_from_json(json.dumps({"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}]}).encode())
    assert ok.complete and ok.message() == {"role": "assistant", "content": "hi"}


def test_folder_names_stay_inside_the_log_folder(tmp_path):
    assert agent_folder_name("../../etc/passwd") == "etc_passwd"
    assert agent_folder_name("iceburg-surveyor:v2") == "iceburg-surveyor_v2"
    assert agent_folder_name("..") == "unknown"
    folder = AgentLogFolder(tmp_path, fsync="never")
    path = folder.log("../x", [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])
    folder.close()
    assert path.parent.parent == tmp_path and path.parent.name == "x"
    assert json.loads(path.read_text())["agent_type"] == "../x"
