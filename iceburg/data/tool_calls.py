"""Tool calls in transcripts: one canonical shape for every input format, validated per line.

Agents call tools, so a research-agent transcript is often
`user -> assistant(tool_calls) -> tool(result) -> assistant(answer)`. The input formats spell
that differently; this module turns each into the one shape `Record.messages` carries, which is
the shape Hugging Face chat templates read (transformers' chat-templating docs, "Tool use"):

- assistant: `{"role": "assistant", "content": str, "tool_calls": [{"type": "function",
  "function": {"name": str, "arguments": dict}, "id"?: str}]}`; `content` may be "" when the turn
  is only a call. `arguments` is always an object: Llama 3.x and Qwen2.5 templates print it with
  `| tojson`, which would double-encode a JSON string. The key is absent on turns without calls
  (Llama 3.x templates test `'tool_calls' in message`).
- tool result: `{"role": "tool", "content": str, "name": str, "tool_call_id"?: str}`; a
  non-string result is stored as its JSON text.
- record-level `tools`: a list of `{"type": "function", "function": {"name", "description"?,
  "parameters"?}}` (JSON-schema function definitions, the `tools=` argument of
  `apply_chat_template`).

Accepted spellings: OpenAI / HF `tool_calls` with `arguments` as an object or a JSON string;
Anthropic `tool_use` / `tool_result` blocks (turned into these by `content.py`) and tool
definitions with `input_schema`;
`tool` messages with `name` and/or `tool_call_id`; OpenAI's older single `function_call` on an
assistant message with `function` role results; ShareGPT / LLaMA-Factory `function_call` and
`observation` turns with a `tools` column that may itself be a JSON string; a top-level `functions`
list (the older API's name for `tools`).

Rejected with the reason (the loader adds file and line): arguments that are not JSON or not an
object, a call without a function name, a call to a function that is not in `tools` when `tools`
is given, a tool result with no preceding call, a `tool_call_id` that matches no pending call.
"""

from __future__ import annotations

import json
from typing import Any

from ..records import turn_text

TOOL_ROLES = {"tool", "function", "observation", "ipython"}


class ToolCallError(ValueError):
    """A malformed tool call or tool definition; the message is the reject reason, `code` its
    reject code (`iceburg.records.REJECT_CODES`)."""

    def __init__(self, message: str, code: str = "invalid_tool_call"):
        super().__init__(message)
        self.code = code


def _json_value(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ToolCallError(f"{what} is not valid JSON ({e.msg} at column {e.colno}): {text[:80]!r}") from e


def normalise_tools(raw: Any, where: str = "tools") -> list[dict[str, Any]] | None:
    """The record's function definitions in the wrapped OpenAI shape, or None when absent."""
    if raw is None or raw == "" or raw == []:
        return None
    if isinstance(raw, str):
        raw = _json_value(raw, f"field '{where}'")
    if not isinstance(raw, list):
        raise ToolCallError(f"field '{where}' must be a list of function definitions, got {type(raw).__name__}")
    raw = [d for t in raw for d in _declarations(t)]
    out = []
    for i, t in enumerate(raw):
        if not isinstance(t, dict):
            raise ToolCallError(f"{where}[{i}] must be an object, got {type(t).__name__}")
        # Anthropic client tools are `{name, description, input_schema}` (type absent or "custom")
        fn = t.get("function", t) if t.get("type", "function") in ("function", "custom") else None
        if not isinstance(fn, dict):
            raise ToolCallError(f"{where}[{i}]: only function tools are supported (OpenAI type 'function', "
                                f"Anthropic client tools), got type {t.get('type')!r}")
        name = fn.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ToolCallError(f"{where}[{i}] has no function name")
        params = fn.get("parameters", fn.get("input_schema", {"type": "object", "properties": {}}))
        if not isinstance(params, dict):
            raise ToolCallError(f"{where}[{i}] ({name}): 'parameters' must be a JSON-schema object")
        clean: dict[str, Any] = {"name": name}
        if fn.get("description") is not None:
            clean["description"] = str(fn["description"])
        clean["parameters"] = params
        out.append({"type": "function", "function": clean})
    return out


def _declarations(tool: Any) -> list[Any]:
    """Gemini groups functions as `{"functionDeclarations": [...]}` (`function_declarations` in the
    Python SDK's dicts): each declaration is one function tool."""
    if isinstance(tool, dict):
        for key in ("functionDeclarations", "function_declarations"):
            if isinstance(tool.get(key), list):
                return [_gemini_declaration(d) for d in tool[key]]
    return [tool]


def _gemini_declaration(d: Any) -> Any:
    """A Gemini declaration as a function tool: its schema from `parameters` (Gemini's OpenAPI
    subset, whose type names are upper case: "OBJECT", "STRING") in JSON Schema's lower case, or
    from `parametersJsonSchema` as it is."""
    if not isinstance(d, dict):
        return d
    out = {k: d[k] for k in ("name", "description") if k in d}
    schema = d.get("parametersJsonSchema", d.get("parameters_json_schema"))
    if schema is None and d.get("parameters") is not None:
        schema = _lower_types(d["parameters"])
    if schema is not None:
        out["parameters"] = schema
    return out


def _lower_types(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_lower_types(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    return {k: (v.lower() if k == "type" and isinstance(v, str) else _lower_types(v)) for k, v in schema.items()}


def normalise_call(raw: Any, where: str) -> dict[str, Any]:
    """One tool call (OpenAI `tool_calls` item, or a bare `{name, arguments}`) in canonical form."""
    if isinstance(raw, str):
        raw = _json_value(raw, where)
    if not isinstance(raw, dict):
        raise ToolCallError(f"{where} must be an object with a function name and arguments")
    fn = raw.get("function", raw)
    if not isinstance(fn, dict):
        raise ToolCallError(f"{where}: 'function' must be an object with 'name' and 'arguments'")
    name = fn.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ToolCallError(f"{where} has no function name")
    args = fn.get("arguments", fn.get("parameters", {}))
    if isinstance(args, str):
        args = _json_value(args, f"{where} ({name}) arguments") if args.strip() else {}
    if not isinstance(args, dict):
        raise ToolCallError(f"{where} ({name}): arguments must be a JSON object, got {type(args).__name__}")
    call: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": args}}
    if raw.get("id") is not None:
        call["id"] = str(raw["id"])
    return call


def calls_of(msg: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """The canonical calls an input assistant message carries (`tool_calls` or `function_call`)."""
    calls = []
    raw = msg.get("tool_calls")
    if raw is not None:
        if not isinstance(raw, list):
            raise ToolCallError(f"{where}: 'tool_calls' must be a list")
        calls += [normalise_call(c, f"{where} tool_calls[{j}]") for j, c in enumerate(raw)]
    if msg.get("function_call") is not None:
        calls.append(normalise_call(msg["function_call"], f"{where} function_call"))
    return calls


def sharegpt_calls(value: Any, where: str) -> list[dict[str, Any]]:
    """LLaMA-Factory `function_call` turn: a JSON object `{name, arguments}` or a list of them."""
    parsed = _json_value(value, where) if isinstance(value, str) else value
    items = parsed if isinstance(parsed, list) else [parsed]
    if not items:
        raise ToolCallError(f"{where}: empty function_call")
    return [normalise_call(c, where if len(items) == 1 else f"{where}[{j}]") for j, c in enumerate(items)]


def result_content(content: Any) -> str:
    """A tool result as text: strings as they are, anything else as its JSON."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    return json.dumps(content, ensure_ascii=False)


def link_results(msgs: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> None:
    """Check calls against `tools` and give every tool result the name of the call it answers.

    A result answers the call with its `tool_call_id`, else the next unanswered call of the same
    name, else the next unanswered call. Results must follow the assistant turn that made the calls
    (possibly after other results). Raises `ToolCallError` naming the message index.
    """
    known = {t["function"]["name"] for t in tools} if tools else None
    pending: list[dict[str, Any]] = []
    for i, m in enumerate(msgs):
        role = m["role"]
        if role == "assistant":
            pending = list(m.get("tool_calls", []))
            for c in pending:
                name = c["function"]["name"]
                if known is not None and name not in known:
                    raise ToolCallError(f"message {i} (assistant): calls unknown function {name!r} "
                                        f"(the record's tools define: {', '.join(sorted(known))})")
        elif role == "tool":
            if not pending:
                named = f" (tool_call_id {m['tool_call_id']!r})" if "tool_call_id" in m else ""
                raise ToolCallError(f"message {i} (tool): tool result{named} with no preceding tool call",
                                    "unmatched_tool_result")
            call = _answered_call(m, pending, i)
            pending.remove(call)
            if "name" not in m:
                m["name"] = call["function"]["name"]
            if "id" in call and "tool_call_id" not in m:
                m["tool_call_id"] = call["id"]
        else:
            pending = []


def _answered_call(m: dict[str, Any], pending: list[dict[str, Any]], i: int) -> dict[str, Any]:
    if "tool_call_id" in m:
        call = next((c for c in pending if c.get("id") == m["tool_call_id"]), None)
        if call is None:
            raise ToolCallError(f"message {i} (tool): tool_call_id {m['tool_call_id']!r} matches no call "
                                f"of the preceding assistant turn", "unmatched_tool_result")
        return call
    if "name" in m:
        call = next((c for c in pending if c["function"]["name"] == m["name"]), None)
        if call is None:
            raise ToolCallError(f"message {i} (tool): result of {m['name']!r}, but the preceding assistant "
                                f"turn called {', '.join(c['function']['name'] for c in pending)}",
                                "unmatched_tool_result")
        return call
    return pending[0]


def has_parallel_calls(messages: list[dict[str, Any]]) -> bool:
    return any(len(m.get("tool_calls", ())) > 1 for m in messages)


def split_parallel_calls(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages with every parallel call turn split into consecutive single calls, each followed by
    its own results (`--split-parallel-calls`, for templates that write one call per turn, as
    Llama 3.x does). The turn's text and reasoning stay on its first call; results are matched to
    calls as `link_results` matched them (by id, else by name, else in order)."""
    out: list[dict[str, Any]] = []
    i = 0
    while i < len(messages):
        m = messages[i]
        j = i + 1
        while j < len(messages) and messages[j]["role"] == "tool":
            j += 1
        if m["role"] != "assistant" or len(m.get("tool_calls", ())) < 2:
            out.append(m)
            i += 1
            continue
        answers = _answers(m["tool_calls"], messages[i + 1:j])
        for k, call in enumerate(m["tool_calls"]):
            turn = {"role": "assistant", "content": m["content"] if k == 0 else "", "tool_calls": [call]}
            if k == 0 and m.get("reasoning"):
                turn["reasoning"] = m["reasoning"]
            out += [turn, *answers[k]]
        i = j
    return out


def _answers(calls: list[dict[str, Any]], results: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The results answering each call (positions as in `calls`)."""
    pending = list(range(len(calls)))
    out: list[list[dict[str, Any]]] = [[] for _ in calls]
    for r in results:
        by_id = [k for k in pending if "tool_call_id" in r and calls[k].get("id") == r["tool_call_id"]]
        by_name = [k for k in pending if calls[k]["function"]["name"] == r.get("name")]
        k = (by_id or by_name or pending or [len(calls) - 1])[0]
        if k in pending:
            pending.remove(k)
        out[k].append(r)
    return out


def has_tool_calls(messages: list[dict[str, Any]]) -> bool:
    return any(m.get("tool_calls") for m in messages) or any(m["role"] == "tool" for m in messages)


def answer_turns(messages: list[dict[str, Any]]) -> list[str]:
    """The assistant text the truth filter's text signals read.

    A turn that only calls tools is an action, not an empty or cut-off answer, so the signals
    (empty, truncated, refusal, repetition, ...) read the answers: assistant turns without calls.
    A record whose assistant only calls tools is read as its calls' text (`name {"arg": ...}`)."""
    answers = [m["content"] for m in messages if m["role"] == "assistant" and not m.get("tool_calls")]
    return answers or [turn_text(m) for m in messages if m["role"] == "assistant"]


def structure_view(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages for turn-order checks: parallel tool results (consecutive `tool` messages) count as
    one turn, so `assistant(calls) -> tool -> tool -> assistant` is a well-formed exchange."""
    return [m for i, m in enumerate(messages)
            if not (m["role"] == "tool" and i and messages[i - 1]["role"] == "tool")]


# Probe chat for "does this template write tool calls at all": names no template could invent.
_PROBE_FN = "iceburg_probe_lookup"
_PROBE_TOOLS = [{"type": "function", "function": {
    "name": _PROBE_FN, "description": "Probe.",
    "parameters": {"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]}}}]
_PROBE_CHAT = [
    {"role": "user", "content": "Look it up."},
    {"role": "assistant", "content": "",
     "tool_calls": [{"type": "function", "function": {"name": _PROBE_FN, "arguments": {"key": "kestrel-42"}}}]},
    {"role": "tool", "name": _PROBE_FN, "content": "probe-result-17"},
    {"role": "assistant", "content": "Done."},
]


def renders_tools(tokenizer) -> bool:
    """True when the chat template writes tool definitions, calls and results into the text."""
    from jinja2.exceptions import TemplateError

    try:
        text = tokenizer.apply_chat_template(_PROBE_CHAT, tools=_PROBE_TOOLS, tokenize=False)
    except TemplateError:
        return False
    return '"key"' in text and "kestrel-42" in text and "probe-result-17" in text and text.count(_PROBE_FN) >= 2
