"""Two more providers' log shapes as the chat messages the loader reads (docs/data.md).

- OpenAI Responses API (what the OpenAI Agents SDK and `client.responses.create` log): a request's
  `input` (a string, or a list of items) and the response's `output` (a list of items), with
  optional `instructions` (the system prompt) and flat `tools`. Items: `message` (also untyped
  `{role, content}`; content a string or `input_text` / `output_text` / `refusal` parts),
  `function_call` (`call_id`, `name`, JSON `arguments`) -> a tool call of the assistant turn it
  follows (a new turn where none is open), `function_call_output` (`call_id`, `output`) -> a
  `tool` message, `reasoning` (`content` reasoning_text parts, else its `summary` texts) -> the
  reasoning of the next assistant turn. Items of built-in tools (`web_search_call`,
  `file_search_call`, `computer_call`, ...) are refused [unsupported_content]: their results are
  not in the log as text a model could learn to use.
- Google Gemini (`generateContent` requests, the Python SDK's dicts, ADK sessions): `contents` of
  `{role: user|model, parts}`, optional `systemInstruction` / `system_instruction` and `tools`
  with `functionDeclarations`. Parts: `text` (a model's text parts are joined as the SDK's
  `response.text` joins them, with ""), `thought: true` text -> reasoning, `functionCall` /
  `function_call` (`name`, `args`, optional `id`) -> a tool call, `functionResponse` /
  `function_response` (`name`, `response`) -> a `tool` message. Media and code-execution parts are
  refused [unsupported_content].

A logged exchange `{"request": ..., "response": ...}` of any of these APIs (or Chat Completions and
Anthropic Messages, which the loader reads natively once joined) becomes the provider's record shape
first (`exchange_record`).

These only rename: the messages they return go through the loader's one validation (roles, tool
calls answered by results, reasoning), so a line is accepted exactly when the same conversation
written as `messages` would be. Written by hand: no well-kept library converts these logs to chat
messages for training (each provider's SDK only builds its own requests).
"""

from __future__ import annotations

import json
from typing import Any

from .content import ContentError

BUILT_IN_ITEMS = ("web_search_call", "file_search_call", "computer_call", "computer_call_output",
                  "code_interpreter_call", "image_generation_call", "local_shell_call", "local_shell_call_output",
                  "mcp_call", "mcp_list_tools", "mcp_approval_request", "mcp_approval_response",
                  "custom_tool_call", "custom_tool_call_output")


def is_responses_log(obj: dict) -> bool:
    return "input" in obj and isinstance(obj.get("output"), list)


def responses_messages(obj: dict) -> list[dict[str, Any]]:
    """The chat messages of one Responses API exchange (module docstring)."""
    inp = obj["input"]
    if isinstance(inp, str):
        items = [("input", {"role": "user", "content": inp})]
    elif isinstance(inp, list):
        items = [(f"input[{i}]", it) for i, it in enumerate(inp)]
    else:
        raise ContentError(f"field 'input' must be a string or a list of items, got {type(inp).__name__}",
                           "invalid_record")
    items += [(f"output[{i}]", it) for i, it in enumerate(obj["output"])]
    msgs: list[dict[str, Any]] = []
    instructions = obj.get("instructions")
    if isinstance(instructions, str) and instructions.strip():
        msgs.append({"role": "system", "content": instructions})
    reasoning: list[str] = []
    for where, item in items:
        if not isinstance(item, dict):
            raise ContentError(f"{where} must be an object, got {type(item).__name__}", "invalid_record")
        kind = item.get("type", "message")
        if kind == "message":
            if "role" not in item:
                raise ContentError(f"{where}: a message item has no 'role'", "invalid_record")
            msgs.append({"role": item["role"], "content": item.get("content")})
        elif kind == "function_call":
            call = {"id": item.get("call_id", item.get("id")), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments", "{}")}}
            if not (msgs and msgs[-1]["role"] == "assistant"):
                msgs.append({"role": "assistant", "content": None})
            msgs[-1].setdefault("tool_calls", []).append(call)
        elif kind == "function_call_output":
            msgs.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": item.get("output", "")})
        elif kind == "reasoning":
            reasoning += _reasoning_texts(item, where)
        elif kind in BUILT_IN_ITEMS:
            raise ContentError(f"{where}: a Responses API {kind!r} item (a built-in tool) cannot be trained on as "
                               "text; remove the record or log a function tool instead", "unsupported_content")
        else:
            raise ContentError(f"{where}: unknown Responses API item type {kind!r}", "unknown_content_part")
        if reasoning and msgs and msgs[-1]["role"] == "assistant" and kind != "reasoning":
            msgs[-1]["reasoning"] = "\n\n".join(reasoning)
            reasoning = []
    return msgs


def _reasoning_texts(item: dict, where: str) -> list[str]:
    parts = item.get("content") or item.get("summary") or []
    if not isinstance(parts, list):
        raise ContentError(f"{where}: a reasoning item's content or summary must be a list", "invalid_reasoning")
    texts = []
    for j, p in enumerate(parts):
        text = p.get("text") if isinstance(p, dict) else None
        if not isinstance(text, str):
            raise ContentError(f"{where} part {j}: reasoning text must be a string", "invalid_reasoning")
        texts.append(text)
    return [t for t in texts if t.strip()]


def is_gemini_log(obj: dict) -> bool:
    return isinstance(obj.get("contents"), list)


def gemini_messages(obj: dict) -> list[dict[str, Any]]:
    """The chat messages of one Gemini conversation (module docstring)."""
    msgs: list[dict[str, Any]] = []
    system = obj.get("systemInstruction", obj.get("system_instruction"))
    if system is not None:
        text = system if isinstance(system, str) else "".join(_gemini_texts(system, "systemInstruction"))
        if text.strip():
            msgs.append({"role": "system", "content": text})
    for i, turn in enumerate(obj["contents"]):
        where = f"contents[{i}]"
        if not isinstance(turn, dict) or not isinstance(turn.get("parts"), list):
            raise ContentError(f"{where} must be an object with a 'parts' list", "invalid_record")
        role = turn.get("role", "user")
        if role == "model":
            msgs.append(_gemini_model_turn(turn["parts"], where))
        elif role in ("user", "function", "tool"):
            msgs += _gemini_user_turn(turn["parts"], where)
        else:
            raise ContentError(f"{where}: unknown Gemini role {role!r} (expected 'user' or 'model')", "invalid_record")
    return msgs


def _part(part: Any, where: str) -> tuple[str, Any]:
    """(kind, value) of one Gemini part: text, thought, call or response."""
    if not isinstance(part, dict):
        raise ContentError(f"{where} must be an object, got {type(part).__name__}", "invalid_record")
    for key, kind in (("functionCall", "call"), ("function_call", "call"), ("functionResponse", "response"),
                      ("function_response", "response")):
        if part.get(key) is not None:
            return kind, part[key]
    if isinstance(part.get("text"), str):
        return ("thought" if part.get("thought") is True else "text"), part["text"]
    media = [k for k in part if part[k] is not None and k not in ("thought", "thoughtSignature", "thought_signature")]
    raise ContentError(f"{where}: a Gemini part with {', '.join(map(repr, media)) or 'no content'} cannot be "
                       "trained on as text (iceburg trains text models); remove the part or the record",
                       "unsupported_content")


def _gemini_texts(content: Any, where: str) -> list[str]:
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list):
        raise ContentError(f"{where} must be a string or an object with a 'parts' list", "invalid_record")
    return [v for j, p in enumerate(parts) for kind, v in [_part(p, f"{where} parts[{j}]")] if kind == "text"]


def _gemini_model_turn(parts: list, where: str) -> dict[str, Any]:
    texts, thoughts, calls = [], [], []
    for j, p in enumerate(parts):
        kind, value = _part(p, f"{where} parts[{j}]")
        if kind == "text":
            texts.append(value)
        elif kind == "thought":
            thoughts.append(value)
        elif kind == "call":
            if not isinstance(value, dict):
                raise ContentError(f"{where} parts[{j}]: a function call must be an object", "invalid_tool_call")
            calls.append({"id": value.get("id"), "type": "function",
                          "function": {"name": value.get("name"), "arguments": value.get("args", {})}})
        else:
            raise ContentError(f"{where} parts[{j}]: a function response in a model turn", "invalid_tool_call")
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        msg["tool_calls"] = [{k: v for k, v in c.items() if v is not None} for c in calls]
    if thoughts:
        msg["reasoning"] = "\n\n".join(thoughts)
    return msg


def _gemini_user_turn(parts: list, where: str) -> list[dict[str, Any]]:
    results, texts = [], []
    for j, p in enumerate(parts):
        kind, value = _part(p, f"{where} parts[{j}]")
        if kind == "response":
            if not isinstance(value, dict):
                raise ContentError(f"{where} parts[{j}]: a function response must be an object", "invalid_tool_call")
            result = {"role": "tool", "content": json.dumps(value.get("response", {}), ensure_ascii=False)}
            for key, out in (("name", "name"), ("id", "tool_call_id")):
                if value.get(key) is not None:
                    result[out] = str(value[key])
            results.append(result)
        elif kind in ("text", "thought"):
            texts.append(value)
        else:
            raise ContentError(f"{where} parts[{j}]: a function call in a user turn", "invalid_tool_call")
    return results + ([{"role": "user", "content": "\n".join(texts)}] if texts else [])


def is_exchange_log(obj: dict) -> bool:
    return isinstance(obj.get("request"), dict) and isinstance(obj.get("response"), dict)


def exchange_record(obj: dict) -> dict:
    """A logged API exchange, `{"request": <request body>, "response": <response body>, ...}` (what
    logging proxies and SDK hooks write), as one record in the provider's own shape: Chat Completions
    (request `messages` + the response's one choice), Anthropic Messages (request `messages` and
    `system` + the response's `content` blocks), the Responses API (request `input` and
    `instructions` + response `output`) or Gemini (request `contents` + the response's one candidate).
    The request's `tools` come along; its `model` and the other top-level keys go to metadata. A
    response with several choices or candidates is refused: one record per answer."""
    req, resp = obj["request"], obj["response"]
    rest = {k: v for k, v in obj.items() if k not in ("request", "response")}
    if "model" in req:
        rest.setdefault("model", req["model"])
    tools = {"tools": req["tools"]} if req.get("tools") else {}
    if "choices" in resp:  # OpenAI Chat Completions
        return {**rest, **tools, "messages": [*_list(req, "messages"), _one(resp, "choices")["message"]]}
    if "output" in resp and "input" in req:  # OpenAI Responses
        return {**rest, **tools, "input": req["input"], "output": resp["output"],
                **({"instructions": req["instructions"]} if req.get("instructions") else {})}
    if "candidates" in resp:  # Gemini
        system = req.get("systemInstruction", req.get("system_instruction"))
        return {**rest, **tools, "contents": [*_list(req, "contents"), _one(resp, "candidates")["content"]],
                **({"systemInstruction": system} if system is not None else {})}
    if isinstance(resp.get("message"), dict) and "messages" in req:  # Ollama's native /api/chat
        return {**rest, **tools, "messages": [*_list(req, "messages"), resp["message"]]}
    if "content" in resp and "messages" in req:  # Anthropic Messages
        answer = {"role": resp.get("role", "assistant"), "content": resp["content"]}
        return {**rest, **tools, "messages": [*_list(req, "messages"), answer],
                **({"system": req["system"]} if req.get("system") else {})}
    raise ContentError("field 'response' is not a Chat Completions, Ollama chat, Responses, Anthropic Messages or "
                       "Gemini response body (no 'choices', 'message', 'output', 'content' or 'candidates')",
                       "invalid_record")


def _list(body: dict, key: str) -> list:
    value = body.get(key)
    if not isinstance(value, list):
        raise ContentError(f"field 'request.{key}' must be a list, got {type(value).__name__}", "invalid_record")
    return value


def _one(resp: dict, key: str) -> dict:
    items = resp.get(key)
    if not isinstance(items, list) or len(items) != 1 or not isinstance(items[0], dict):
        n = len(items) if isinstance(items, list) else 0
        raise ContentError(f"field 'response.{key}' holds {n} answers: a record trains on one (log one per "
                           "request, n=1, or split them into one record per answer)", "invalid_record")
    return items[0]
