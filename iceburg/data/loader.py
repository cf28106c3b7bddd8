"""Streaming JSONL reader that normalises every supported transcript format to `Record`.

Accepted shapes (one JSON object per line):
- `messages`: [{"role", "content"}] - the seed ChatML format
- `conversation`: same list under another key
- ShareGPT `conversations`: [{"from": "human"|"gpt"|"system", "value"}]
- Alpaca `instruction` (+ optional `input`) + `output`
- `prompt` / `response`, `input` / `output`
- tool use in any of the conversation shapes (OpenAI/HF `tool_calls`, `tool` results, a `tools`
  list, ShareGPT `function_call`/`observation`, the older single `function_call`): normalised and
  checked by `tool_calls.py` (docs/tools.md)
- content as the SDKs write it (`content.py`): OpenAI content parts, Anthropic Messages blocks
  (`text`, `thinking`, `tool_use`, `tool_result`; `tools` with `input_schema`), the `developer` role
  (= system), and reasoning (`reasoning_content` / `reasoning` / `thinking` fields, `<think>` blocks)
  as one `reasoning` field on the assistant message (docs/data.md lists every shape)

Optional fields kept on the record: `quality_score`, `emergence_score`, `agent_type`/`agent`,
`metadata` (plus any other top-level keys, stored under metadata). Invalid lines never stop the
run silently and never disappear: each goes to the `RejectWriter` with file, line and reason;
`strict=True` raises `DataError` naming the file and line instead. Lines are read one at a time,
so memory does not grow with file size. A UTF-8 byte-order mark opening the file is skipped; text
holding a lone UTF-16 surrogate is rejected with its position (it cannot be written as UTF-8).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..errors import DataError
from ..records import ROLES, Reason, Record, RejectWriter
from .content import ContentError, attach_reasoning, is_part_list, reasoning_fields, split_parts
from .tool_calls import TOOL_ROLES, ToolCallError, calls_of, link_results, normalise_tools, result_content, sharegpt_calls

logger = logging.getLogger(__name__)

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bing": "assistant", "bard": "assistant", "model": "assistant",
                  "system": "system", "function_call": "assistant", "observation": "tool", "tool": "tool"}
KNOWN_KEYS = {"messages", "conversation", "conversations", "instruction", "input", "output", "prompt",
              "response", "quality_score", "emergence_score", "metadata", "agent_type", "agent",
              "system", "signals", "weight", "tools", "functions"}


BOM = b"\xef\xbb\xbf"


class InvalidLine(ValueError):
    """Raised by `normalise` with the reason a line is unusable; `code` is its reject code
    (`iceburg.records.REJECT_CODES`)."""

    def __init__(self, message: str, code: str = "invalid_record"):
        super().__init__(message)
        self.code = code


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their `*.jsonl` files (sorted, so runs are reproducible)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.rglob("*.jsonl"))
            if not found:
                raise DataError(f"--data-path {p}: folder contains no .jsonl files")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"--data-path {p}: no such file or folder")
    return out


def read_json_lines(paths: Iterable[str | Path], rejects: RejectWriter | None = None, *,
                    strict: bool = False, stats: dict[str, int] | None = None) -> Iterator[tuple[Path, int, Any, str]]:
    """Yield `(path, line number, parsed JSON, text)` for every line that is valid UTF-8 JSON;
    route every other line to `rejects` (a UTF-8 byte-order mark on the first line is accepted).
    Shared by the transcript reader and the preference reader, so both account for every line."""
    stats = stats if stats is not None else {}
    for path in expand_paths(paths):
        try:
            fh = open(path, "rb")
        except OSError as e:
            raise DataError(f"--data-path {path}: cannot read ({e.strerror})") from e
        with fh:
            for lineno, raw in enumerate(fh, start=1):
                if not raw.strip():
                    stats["blank"] = stats.get("blank", 0) + 1  # skipped, but accounted for
                    continue
                stats["lines"] = stats.get("lines", 0) + 1
                if lineno == 1 and raw.startswith(BOM):
                    raw = raw[len(BOM):]  # a UTF-8 byte-order mark (Windows editors, PowerShell) opens the file
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    reject_line(rejects, strict, stats, path, lineno, f"invalid UTF-8 at byte {e.start}",
                                raw.decode("utf-8", "replace"), code="invalid_utf8")
                    continue
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as e:
                    reject_line(rejects, strict, stats, path, lineno, f"malformed JSON: {e.msg} (column {e.colno})",
                                text, code="invalid_json")
                    continue
                except RecursionError:  # json's C scanner recurses per nesting level
                    reject_line(rejects, strict, stats, path, lineno, "malformed JSON: nested too deeply", text,
                                code="invalid_json")
                    continue
                yield path, lineno, obj, text


def read_records(paths: Iterable[str | Path], rejects: RejectWriter | None = None, *,
                 strict: bool = False, stats: dict[str, int] | None = None) -> Iterator[Record]:
    """Yield valid records from JSONL files; route every invalid line to `rejects`."""
    stats = stats if stats is not None else {}
    for path, lineno, obj, text in read_json_lines(paths, rejects, strict=strict, stats=stats):
        try:
            record = normalise(obj, source=str(path), line=lineno)
        except InvalidLine as e:
            reject_line(rejects, strict, stats, path, lineno, str(e), text, code=e.code)
            continue
        stats["valid"] = stats.get("valid", 0) + 1
        yield record


def reject_line(rejects: RejectWriter | None, strict: bool, stats: dict[str, int], path: Path,
                lineno: int, reason: str, raw: str, code: str = "invalid_record") -> None:
    if strict:
        raise DataError(f"{path}:{lineno}: {reason} (--strict is on; fix the line or drop --strict "
                        "to write it to rejects.jsonl and continue)")
    stats["rejected"] = stats.get("rejected", 0) + 1
    logger.debug("rejecting %s:%d: %s", path, lineno, reason)
    if rejects is not None:
        rejects.drop("load", None, [Reason(code, reason)], raw=raw.rstrip("\n")[:20000], source=str(path), line=lineno)


def coerce_record(item: Any, index: int, source: str = "") -> tuple[Record | None, str]:
    """The public edge for the original API's dicts: a `Record` passes through, a dict in any
    input shape is validated by `normalise` (one definition of a usable conversation); returns
    `(None, reason)` for anything else. Stages call this once and then work on Records only."""
    if isinstance(item, Record):
        return item, ""
    if not isinstance(item, dict):
        return None, f"expected a Record or a dict, got {type(item).__name__}"
    try:
        return normalise(item, source=source, line=index + 1), ""
    except InvalidLine as e:
        return None, str(e)


def normalise(obj: Any, source: str = "", line: int = 0) -> Record:
    """Turn one parsed JSON object into a validated `Record`, or raise `InvalidLine`."""
    if not isinstance(obj, dict):
        raise InvalidLine(f"expected a JSON object, got {type(obj).__name__}")
    try:
        messages = _messages(obj)
        for i, m in enumerate(messages):
            if m["role"] == "assistant":
                attach_reasoning(m, [m.pop("reasoning")] if "reasoning" in m else [], f"message {i} (assistant)")
        tools = normalise_tools(obj.get("tools", obj.get("functions")),
                                "tools" if "tools" in obj else "functions")
        _validate_messages(messages)
        link_results(messages, tools)
    except (ToolCallError, ContentError) as e:
        raise InvalidLine(str(e), e.code) from e
    scores = {k: _score(obj, k) for k in ("quality_score", "emergence_score")}
    meta = obj.get("metadata", {})
    if not isinstance(meta, dict):
        raise InvalidLine(f"field 'metadata' must be an object, got {type(meta).__name__}")
    meta = dict(meta)
    for k, v in obj.items():
        if k not in KNOWN_KEYS:
            meta[k] = v
    agent = obj.get("agent_type", obj.get("agent"))
    if agent is not None and not isinstance(agent, str):
        raise InvalidLine("field 'agent_type' must be a string")
    signals = obj.get("signals", {})
    if not isinstance(signals, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                for v in signals.values()):
        raise InvalidLine("field 'signals' must be an object of numbers")
    weight = obj.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
        raise InvalidLine(f"field 'weight' must be a non-negative number, got {weight!r}")
    return Record(messages=messages, source=source, line=line, agent_type=agent, metadata=meta, tools=tools,
                  signals={k: float(v) for k, v in signals.items()}, weight=float(weight), **scores)


def _score(obj: dict, key: str) -> float | None:
    v = obj.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v) or not 0 <= v <= 1:
        raise InvalidLine(f"field '{key}' must be a number in [0, 1], got {v!r}")
    return float(v)


def _messages(obj: dict) -> list[dict[str, str]]:
    for key in ("messages", "conversation"):
        if key in obj:
            msgs = obj[key]
            if not isinstance(msgs, list):
                raise InvalidLine(f"field '{key}' must be a list of messages, got {type(msgs).__name__}")
            out = []
            for i, m in enumerate(msgs):
                if not isinstance(m, dict):
                    raise InvalidLine(f"{key}[{i}] must be an object with 'role' and 'content'")
                if "role" not in m:
                    raise InvalidLine(f"{key}[{i}] has no 'role'")
                out.extend(_chat_messages(m, f"{key}[{i}]"))
            return _with_system(obj, out)
    if "conversations" in obj:
        convs = obj["conversations"]
        if not isinstance(convs, list):
            raise InvalidLine("field 'conversations' must be a list of {from, value} turns")
        out = []
        for i, m in enumerate(convs):
            if not isinstance(m, dict) or "from" not in m or "value" not in m:
                raise InvalidLine(f"conversations[{i}] must be an object with 'from' and 'value'")
            speaker = str(m["from"]).lower()
            role = SHAREGPT_ROLES.get(speaker)
            if role is None:
                raise InvalidLine(f"conversations[{i}]: unknown speaker {m['from']!r} "
                                  f"(known: {', '.join(sorted(SHAREGPT_ROLES))})")
            if speaker == "function_call":  # LLaMA-Factory: the value is the call's JSON
                out.append({"role": "assistant", "content": "",
                            "tool_calls": sharegpt_calls(m["value"], f"conversations[{i}] (function_call)")})
            elif role == "tool":
                out.append({"role": "tool", "content": result_content(m["value"])})
            else:
                out.append({"role": role, "content": m["value"]})
        return _with_system(obj, out)
    if "instruction" in obj and "output" in obj:
        instr, extra = obj["instruction"], obj.get("input") or ""
        if not isinstance(instr, str) or not isinstance(extra, str):
            raise InvalidLine("Alpaca fields 'instruction' and 'input' must be strings")
        user = f"{instr}\n\n{extra}" if extra.strip() else instr
        return _with_system(obj, [{"role": "user", "content": user},
                                  {"role": "assistant", "content": obj["output"]}])
    for q, a in (("prompt", "response"), ("input", "output")):
        if q in obj and a in obj:
            return _with_system(obj, [{"role": "user", "content": obj[q]},
                                      {"role": "assistant", "content": obj[a]}])
    raise InvalidLine("no conversation found: expected 'messages', 'conversation', 'conversations' "
                      "(ShareGPT), 'instruction'+'output' (Alpaca), 'prompt'+'response' or 'input'+'output'")


def _chat_messages(m: dict, where: str) -> list[dict[str, Any]]:
    """One OpenAI/HF/Anthropic-style message as canonical messages: tool calls and results in
    their canonical shape, content parts as text (`content.py`); an Anthropic user turn holding
    `tool_result` blocks becomes one `tool` message per result (then the user's text, if any)."""
    role = "system" if m["role"] == "developer" else m["role"]  # OpenAI's name for it in o1 and later
    if isinstance(role, str) and role in TOOL_ROLES:  # `function` (older API), `ipython` (Llama 3.1)
        return [_tool_message(m, where)]
    content = m.get("content")
    parts = split_parts(content, role, where) if isinstance(content, list) else None
    if parts is not None and parts.results:
        return parts.results + ([{"role": role, "content": parts.text}] if parts.text.strip() else [])
    calls = calls_of(m, where) if role == "assistant" else []
    if parts is not None:
        content, calls = parts.text, calls + parts.calls
    if "content" not in m and not calls:
        raise InvalidLine(f"{where} has no 'content'")
    out: dict[str, Any] = {"role": role, "content": "" if content is None and calls else content}
    if calls:
        out["tool_calls"] = calls
    reasoning = [*(parts.reasoning if parts else []), *reasoning_fields(m, where)] if role == "assistant" else []
    if reasoning:
        # vLLM writes one text as both reasoning_content and reasoning: kept once; inline <think>
        # is added by attach_reasoning
        out["reasoning"] = "\n\n".join(dict.fromkeys(r.strip() for r in reasoning if r.strip()))
    return [out]


def _tool_message(m: dict, where: str) -> dict[str, Any]:
    content = m.get("content")
    text = split_parts(content, "tool", where).text if is_part_list(content) else result_content(content)
    out: dict[str, Any] = {"role": "tool", "content": text}
    for k in ("name", "tool_call_id"):
        if m.get(k) is not None:
            out[k] = str(m[k])
    return out


def _with_system(obj: dict, msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    system = obj.get("system")
    if isinstance(system, list):  # Anthropic: a list of text blocks
        system = split_parts(system, "system", "field 'system'").text
    if isinstance(system, str) and system.strip() and not (msgs and msgs[0].get("role") == "system"):
        return [{"role": "system", "content": system}] + msgs
    return msgs


def _validate_messages(msgs: list[dict[str, Any]]) -> None:
    if not msgs:
        raise InvalidLine("conversation has no messages")
    for i, m in enumerate(msgs):
        role, content = m["role"], m["content"]
        if not isinstance(role, str) or role not in ROLES:
            raise InvalidLine(f"message {i}: unknown role {role!r} (expected one of {', '.join(ROLES)})")
        if not isinstance(content, str):
            raise InvalidLine(f"message {i} ({role}): 'content' must be a string, got {type(content).__name__}")
        if not content.isascii():
            _check_encodable(content, f"message {i} ({role})")
        # A turn that is only a tool call has no text; a tool may return nothing.
        if not content.strip() and not m.get("tool_calls") and role != "tool":
            raise InvalidLine(f"message {i} ({role}): empty content")
        if role == "system" and i != 0:
            raise InvalidLine(f"message {i}: a system message is only allowed first")
    if not any(m["role"] == "assistant" for m in msgs):
        raise InvalidLine("conversation has no assistant turn (nothing to learn from)")


def _check_encodable(text: str, where: str) -> None:
    """A JSON string may hold a lone UTF-16 surrogate (`"\\ud800"` is valid JSON) that no UTF-8
    writer or tokenizer can encode; such text is a broken producer's output, so the line is rejected
    here with the position instead of crashing a later stage."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidLine(f"{where}: lone UTF-16 surrogate {text[e.start]!r} at character {e.start} "
                          "(not encodable as UTF-8; the producer split a surrogate pair)", "unencodable_text") from None
