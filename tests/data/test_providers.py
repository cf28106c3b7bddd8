"""OpenAI Responses API and Gemini logs load as the same conversation written as `messages`."""

from __future__ import annotations

import json

import pytest

from iceburg.data.loader import InvalidLine, normalise, read_records
from iceburg.records import RejectWriter

WEATHER_FN = {"name": "get_weather", "description": "Weather now",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
WEATHER = {"type": "function", **WEATHER_FN}  # the Responses API's flat tool
# The same exchange as chat messages: what both providers' shapes must become.
EXPECTED = [
    {"role": "system", "content": "You are a surveyor."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "reasoning": "The weather tool knows.",
     "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}, "id": "c1"}]},
    {"role": "tool", "content": "18C, cloudy", "tool_call_id": "c1", "name": "get_weather"},
    {"role": "assistant", "content": "It is 18C and cloudy in Paris."},
]
RESPONSES = {
    "model": "gpt-5-mini", "instructions": "You are a surveyor.", "tools": [WEATHER],
    "input": [{"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
              {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "The weather tool knows."}]},
              {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "get_weather",
               "arguments": "{\"city\": \"Paris\"}"},
              {"type": "function_call_output", "call_id": "c1", "output": "18C, cloudy"}],
    "output": [{"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": "It is 18C and cloudy in Paris.", "annotations": []}]}],
}
GEMINI = {
    "systemInstruction": {"parts": [{"text": "You are a surveyor."}]},
    "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "Weather now",
                                         "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}}}]}],
    "contents": [
        {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
        {"role": "model", "parts": [{"text": "The weather tool knows.", "thought": True},
                                    {"functionCall": {"id": "c1", "name": "get_weather", "args": {"city": "Paris"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"id": "c1", "name": "get_weather", "response": {"output": "18C, cloudy"}}}]},
        {"role": "model", "parts": [{"text": "It is 18C and cloudy "}, {"text": "in Paris."}]},
    ],
}


def _canonical_tools():
    return [{"type": "function", "function": {k: WEATHER[k] for k in ("name", "description", "parameters")}}]


def test_a_responses_api_exchange_is_the_chat_conversation():
    rec = normalise(RESPONSES)
    assert rec.messages == EXPECTED
    assert rec.tools == _canonical_tools() and rec.metadata == {"model": "gpt-5-mini"}


def test_a_gemini_conversation_is_the_chat_conversation():
    rec = normalise(GEMINI)
    expected = json.loads(json.dumps(EXPECTED))
    expected[3]["content"] = '{"output": "18C, cloudy"}'  # a function response is a JSON object
    assert rec.messages == expected
    assert rec.tools == _canonical_tools()  # Gemini's upper-case schema types in JSON Schema's case


def test_the_python_sdks_snake_case_and_a_plain_string_input():
    snake = {"system_instruction": "Be brief.", "contents": [
        {"role": "user", "parts": [{"text": "Name a prime."}]},
        {"role": "model", "parts": [{"function_call": {"name": "pick", "args": {}}}]},
        {"role": "user", "parts": [{"function_response": {"name": "pick", "response": {"n": 7}}}]},
        {"role": "model", "parts": [{"text": "Seven."}]}]}
    rec = normalise(snake)
    assert [m["role"] for m in rec.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert rec.messages[3]["name"] == "pick"
    rec = normalise({"input": "Name a prime.", "output": [{"role": "assistant", "content": "Seven."}]})
    assert rec.messages == [{"role": "user", "content": "Name a prime."}, {"role": "assistant", "content": "Seven."}]


@pytest.mark.parametrize("obj,code,words", [
    ({"input": "q", "output": [{"type": "web_search_call", "id": "ws_1", "status": "completed"}]},
     "unsupported_content", "'web_search_call' item (a built-in tool)"),
    ({"input": "q", "output": [{"type": "function_call_output", "call_id": "nope", "output": "x"},
                               {"role": "assistant", "content": "Done."}]},
     "unmatched_tool_result", "no preceding tool call"),
    ({"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": "AA"}}]},
                   {"role": "model", "parts": [{"text": "A cat."}]}]}, "unsupported_content", "'inlineData'"),
    ({"contents": [{"role": "narrator", "parts": [{"text": "x"}]}]}, "invalid_record", "unknown Gemini role"),
    ({"contents": [{"role": "user", "parts": [{"text": "q"}]}]}, "invalid_record", "no assistant turn"),
])
def test_what_cannot_train_is_rejected_with_its_place(obj, code, words):
    with pytest.raises(InvalidLine) as err:
        normalise(obj)
    assert err.value.code == code and words in str(err.value)


def test_a_file_of_both_shapes_loads_line_by_line(tmp_path):
    p = tmp_path / "agents.jsonl"
    p.write_text(json.dumps(RESPONSES) + "\n" + json.dumps(GEMINI) + "\n")
    with RejectWriter(tmp_path / "rejects.jsonl") as rw:
        recs = list(read_records([p], rw))
    assert [r.messages[-1]["content"] for r in recs] == ["It is 18C and cloudy in Paris."] * 2 and rw.total == 0


def test_an_openai_refusal_field_is_the_turns_text():
    """Chat Completions write a refused turn as `refusal` text with null content: kept as the turn's
    text, where the truth filter's refusal rule sees it (it was an opaque 'content must be a string')."""
    from iceburg.truth import signals

    rec = normalise({"messages": [{"role": "user", "content": "q"},
                                  {"role": "assistant", "content": None, "refusal": "I can't help with that."}]})
    assert rec.messages[-1] == {"role": "assistant", "content": "I can't help with that."}
    assert "refusal" in signals.compute([rec.messages[-1]["content"]]).defects


def test_a_logged_request_and_response_is_the_providers_record():
    """Logging proxies write each exchange as {"request": body, "response": body}: every supported
    API's pair gives the conversation the joined record would; several answers are refused."""
    chat = {"request": {"model": "gpt-4o", "messages": [{"role": "user", "content": "Weather in Paris?"}],
                        "tools": [{"type": "function", "function": WEATHER_FN}]},
            "response": {"id": "c", "choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": "It is 18C and cloudy in Paris.", "refusal": None}}]},
            "latency_ms": 812}
    rec = normalise(chat)
    assert rec.messages == [EXPECTED[1], EXPECTED[4]] and rec.tools == _canonical_tools()
    assert rec.metadata == {"latency_ms": 812, "model": "gpt-4o"}
    anthropic = {"request": {"model": "claude", "system": "You are a surveyor.", "messages": [EXPECTED[1]]},
                 "response": {"type": "message", "role": "assistant",
                              "content": [{"type": "text", "text": "It is 18C and cloudy in Paris."}]}}
    responses = {"request": {k: RESPONSES[k] for k in ("model", "instructions", "tools", "input")},
                 "response": {"id": "resp_1", "output": RESPONSES["output"]}}
    gemini = {"request": {k: GEMINI[k] for k in ("systemInstruction", "tools")} | {"contents": GEMINI["contents"][:3]},
              "response": {"candidates": [{"content": GEMINI["contents"][3], "finishReason": "STOP"}]}}
    assert normalise(anthropic).messages == [EXPECTED[0], EXPECTED[1], EXPECTED[4]]
    assert normalise(responses).messages == normalise(RESPONSES).messages
    assert normalise(gemini).messages == normalise(GEMINI).messages
    ollama = {"request": {"model": "qwen3:4b", "messages": [EXPECTED[1]], "stream": False},
              "response": {"model": "qwen3:4b", "done": True, "message": {
                  "role": "assistant", "thinking": "Recall the forecast.", "content": "It is 18C and cloudy in Paris."}}}
    assert normalise(ollama).messages == [EXPECTED[1], {**EXPECTED[4], "reasoning": "Recall the forecast."}]
    two = {"request": chat["request"], "response": {"choices": [chat["response"]["choices"][0]] * 2}}
    with pytest.raises(InvalidLine, match="holds 2 answers"):
        normalise(two)
    with pytest.raises(InvalidLine, match="not a Chat Completions"):
        normalise({"request": {"messages": []}, "response": {"status": "ok"}})
