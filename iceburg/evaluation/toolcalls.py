"""Tool calls in a generated answer, and whether they are the calls the held-out transcript made.

A generated turn is read back in the formats the chat templates iceburg trains with write:
- Hermes / Qwen2.5 / Qwen3 / iceburg's ChatML tool template (`training/tool_render.py`): one
  `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>` block per call;
- Mistral: `[TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]`;
- Llama 3.1-3.3 (JSON-based tool calling): the whole turn is `{"name": ..., "parameters": {...}}`,
  optionally after `<|python_tag|>`.
A block that does not parse is a call all the same (named `<unparsed>`), so garbage in a call
block counts as a wrong call, never as "no call".

Accuracy rules (issue 27, the Berkeley Function-Calling Leaderboard's AST check in spirit): the
name must match exactly, the arguments must be equal as JSON values (key order and whitespace do
not matter, types do), parallel calls are compared as a multiset (order does not matter), and a
turn where the transcript made no call is right only when the model makes none.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

UNPARSED = "<unparsed>"
_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)
_DECODER = json.JSONDecoder()


def _call_of(obj: Any) -> tuple[str, str] | None:
    """(name, canonical JSON of the arguments) from a parsed call object, None if it is not one."""
    if not isinstance(obj, dict):
        return None
    fn = obj.get("function") if isinstance(obj.get("function"), dict) else obj
    name = fn.get("name")
    if not isinstance(name, str):
        return None
    args = fn.get("arguments", fn.get("parameters", {}))
    if isinstance(args, str):  # OpenAI spelling: arguments as a JSON string
        try:
            args = json.loads(args)
        except ValueError:
            return name, args
    return name, canonical(args)


def canonical(value: Any) -> str:
    """JSON text that is equal for equal JSON values (sorted keys, no whitespace)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _json_prefix(text: str) -> Any:
    try:
        return _DECODER.raw_decode(text.strip())[0]
    except ValueError:
        return None


def parse_calls(text: str) -> list[tuple[str, str]]:
    """The tool calls a generated turn makes, as (name, canonical arguments) pairs."""
    if "<tool_call>" in text:
        calls = []
        for block in _HERMES.findall(text):
            calls.append(_call_of(_json_prefix(block)) or (UNPARSED, block.strip()))
        return calls
    stripped = text.strip().removeprefix("<|python_tag|>").strip()
    if stripped.startswith("[TOOL_CALLS]"):
        obj = _json_prefix(stripped.removeprefix("[TOOL_CALLS]"))
        items = obj if isinstance(obj, list) else [obj]
        return [_call_of(o) or (UNPARSED, json.dumps(o)) for o in items]
    if stripped.startswith(("{", "[")):
        obj = _json_prefix(stripped)
        items = obj if isinstance(obj, list) else [obj]
        calls = [_call_of(o) for o in items]
        if calls and all(c is not None for c in calls):
            return calls  # type: ignore[return-value]
    return []


def expected_calls(message: dict[str, Any]) -> list[tuple[str, str]]:
    """The calls of a transcript's assistant turn (the loader's canonical shape, data/tool_calls.py)."""
    return [(c["function"]["name"], canonical(c["function"].get("arguments", {})))
            for c in message.get("tool_calls") or ()]


def score_calls(expected: list[tuple[str, str]], made: list[tuple[str, str]]) -> dict[str, float | None]:
    """Per-turn scores: exact (names and arguments, as a multiset), names only, and whether a call
    was made where none was expected (None when calls were expected)."""
    return {"exact": float(Counter(expected) == Counter(made)),
            "names": float(Counter(n for n, _ in expected) == Counter(n for n, _ in made)),
            "false_call": float(bool(made)) if not expected else None}
