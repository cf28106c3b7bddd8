"""Streaming JSONL reader that normalises every supported transcript format to `Record`.

Accepted shapes (one JSON object per line; or one JSON document, plain or compressed: see
`read_json_lines`):
- `messages`: [{"role", "content"}] - the seed ChatML format
- `conversation`: same list under another key
- ShareGPT `conversations`: [{"from": "human"|"gpt"|"system", "value"}]
- Alpaca `instruction` (+ optional `input`) + `output`
- the OpenAI Responses API's `input` + `output` items and Gemini's `contents` (`providers.py`), and
  a logged `{"request": ..., "response": ...}` exchange of any supported API
- `prompt` / `response`, `input` / `output`, and TRL's prompt-completion: `prompt` / `completion`,
  both strings, or both lists of messages (the conversational form)
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
so memory does not grow with file size (a JSON document is the exception: read whole). A UTF-8
byte-order mark opening the file is skipped; text holding a lone UTF-16 surrogate is rejected with
its position (it cannot be written as UTF-8).
"""

from __future__ import annotations

import bz2
import gzip
import itertools
import json
import logging
import lzma
import math
import re
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

from ..errors import DataError
from ..records import ROLES, Reason, Record, RejectWriter
from .content import ContentError, attach_reasoning, is_part_list, reasoning_fields, split_parts
from .providers import (exchange_record, gemini_messages, is_exchange_log, is_gemini_log, is_responses_log,
                        responses_messages)
from .tool_calls import TOOL_ROLES, ToolCallError, calls_of, link_results, normalise_tools, result_content, sharegpt_calls

logger = logging.getLogger(__name__)

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bing": "assistant", "bard": "assistant", "model": "assistant",
                  "system": "system", "function_call": "assistant", "observation": "tool", "tool": "tool"}
KNOWN_KEYS = {"messages", "conversation", "conversations", "instruction", "input", "output", "prompt",
              "response", "completion", "contents", "instructions", "systemInstruction", "system_instruction",
              "quality_score", "emergence_score", "metadata", "agent_type", "agent", "system", "signals", "weight",
              "tools", "functions"}


BOM = b"\xef\xbb\xbf"


class InvalidLine(ValueError):
    """Raised by `normalise` with the reason a line is unusable; `code` is its reject code
    (`iceburg.records.REJECT_CODES`)."""

    def __init__(self, message: str, code: str = "invalid_record"):
        super().__init__(message)
        self.code = code


# A data file is JSON Lines or one JSON document: an array of records (Alpaca's alpaca_data.json,
# `json.dump(records, f)`) or pretty-printed objects one after another (`jq .`); plain or compressed
# with gzip, bzip2 or xz, told by its first bytes, not its name (docs/data.md "Files").
# (magic, opener): gzip's magic and its one method (deflate); bzip2's "BZh", a block size 1-9 and
# a block's (or the empty stream's end) magic; xz's stream header magic (RFC 1952, bzip2's format
# notes, the .xz file format 1.1.0)
COMPRESSED = ((re.compile(rb"\x1f\x8b\x08"), gzip.open),
              (re.compile(rb"BZh[1-9](?:1AY&SY|\x17rE8P\x90)"), bz2.open),
              (re.compile(rb"\xfd7zXZ\x00"), lzma.open))
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
FOLDER_PATTERNS = ("*.jsonl", "*.jsonl.gz", "*.jsonl.bz2", "*.jsonl.xz")
_WS = re.compile(r"[ \t\n\r]*")


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their JSON Lines files, plain or compressed
    (`FOLDER_PATTERNS`; sorted, so runs are reproducible)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted({f for pattern in FOLDER_PATTERNS for f in p.rglob(pattern)})
            if not found:
                raise DataError(f"--data-path {p}: folder contains no .jsonl files (nor .jsonl.gz, .jsonl.bz2 "
                                "or .jsonl.xz); name a .json file itself to read it")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"--data-path {p}: no such file or folder")
    return out


def open_data_file(path: Path) -> BinaryIO:
    """The file's bytes, decompressed where its first bytes are gzip's, bzip2's or xz's magic."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(10)
        if head.startswith(ZSTD_MAGIC):
            raise DataError(f"--data-path {path}: zstd-compressed, which Python's standard library cannot "
                            f"read; decompress it first (zstd -d {path}) or compress it with gzip, bzip2 or xz")
        for magic, opener in COMPRESSED:
            if magic.match(head):
                return opener(path, "rb")
        return open(path, "rb")
    except OSError as e:
        raise DataError(f"--data-path {path}: cannot read ({e.strerror or e})") from e


def read_json_lines(paths: Iterable[str | Path], rejects: RejectWriter | None = None, *,
                    strict: bool = False, stats: dict[str, int] | None = None) -> Iterator[tuple[Path, int, Any, str]]:
    """Yield `(path, line number, parsed JSON, text)` for every line that is valid UTF-8 JSON;
    route every other line to `rejects` (a UTF-8 byte-order mark on the first line is accepted).
    A file that is one JSON document (`_as_document`) yields its records with their item number
    (from 1) as the line number: item N is line N of the same records written as JSON Lines.
    Shared by the transcript reader and the preference reader, so both account for every line."""
    stats = stats if stats is not None else {}
    for path in expand_paths(paths):
        with open_data_file(path) as fh:
            lines = _lines_of(fh, path)
            head: list[bytes] = []
            for raw in lines:  # up to the first line with content
                head.append(raw)
                if raw.strip():
                    break
            if head and _may_open_document(head[-1]):
                first = b"".join(head)
                data = first + b"".join(lines)  # a document is read whole
                document = _as_document(data, len(first))
                if document is not None:
                    stats["documents"] = stats.get("documents", 0) + 1
                    yield from _document_records(path, *document, rejects, strict, stats)
                    continue
                head, lines = [], iter(_split_lines(data))
            yield from _json_lines(path, itertools.chain(head, lines), rejects, strict, stats)


def _lines_of(fh: BinaryIO, path: Path) -> Iterator[bytes]:
    n = 0
    try:
        for n, raw in enumerate(fh, start=1):
            yield raw
    except (OSError, EOFError, lzma.LZMAError) as e:  # a truncated or corrupt compressed stream
        raise DataError(f"--data-path {path}: cannot decompress past line {n} ({e}); the file is truncated "
                        "or corrupt (gzip -t, bzip2 -t or xz -t names the problem)") from e


def _split_lines(data: bytes) -> list[bytes]:
    """Lines as a binary file iterates them: split at b"\\n" only, ends kept."""
    parts = data.split(b"\n")
    return [p + b"\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _json_lines(path: Path, lines: Iterable[bytes], rejects: RejectWriter | None, strict: bool,
                stats: dict[str, int]) -> Iterator[tuple[Path, int, Any, str]]:
    for lineno, raw in enumerate(lines, start=1):
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
            hint = " (the file looks like pretty-printed JSON: a .jsonl file holds one object per line)" \
                if lineno == 1 and text.strip() in ("{", "[") else ""
            reject_line(rejects, strict, stats, path, lineno, f"malformed JSON: {e.msg} (column {e.colno}){hint}",
                        text, code="invalid_json")
            continue
        except RecursionError:  # json's C scanner recurses per nesting level
            reject_line(rejects, strict, stats, path, lineno, "malformed JSON: nested too deeply", text,
                        code="invalid_json")
            continue
        yield path, lineno, obj, text


def _may_open_document(first: bytes) -> bool:
    """Whether a first line can open a JSON document: an array, or an object that the line does
    not close (a JSON Lines record ends its line with `}`)."""
    line = first.removeprefix(BOM).strip()
    return line.startswith(b"[") or (line.startswith(b"{") and line.endswith((b"{", b"[", b",", b":")))


_Document = tuple[str, list[tuple[int, int, Any]], "tuple[int, str] | None"]


def _as_document(data: bytes, first_end: int) -> _Document | None:
    """`(text, records, error)` (`_document_values`) where the file is one JSON document, else None
    (read it as JSON Lines): a first line that is a JSON array alone with nothing after it, or a
    first line that does not parse alone while the document's first record does parse whole (so a
    corrupt first line of a JSON Lines file stays one rejected line, and the lines after it are
    read as lines)."""
    try:
        text = data.removeprefix(BOM).decode("utf-8")
    except UnicodeDecodeError:
        return None
    try:
        alone = json.loads(data[:first_end].removeprefix(BOM))
    except (ValueError, RecursionError):
        alone = None
    if alone is not None and not (isinstance(alone, list) and not data[first_end:].strip()):
        return None
    values, error = _document_values(text)
    return (text, values, error) if values or alone is not None else None


def _document_values(text: str) -> tuple[list[tuple[int, int, Any]], tuple[int, str] | None]:
    """The records of a JSON document as `(start, end, value)`: the items of a top-level array, or
    whitespace-separated values one after another; and where parsing stopped short, `(position,
    message)`. The items before an error are kept."""
    decoder, out = json.JSONDecoder(), []
    i = _WS.match(text).end()
    array = text.startswith("[", i)
    if array:
        i = _WS.match(text, i + 1).end()
    try:
        while i < len(text):
            if array and text.startswith("]", i):
                rest = _WS.match(text, i + 1).end()
                return out, None if rest == len(text) else (rest, "data after the array's closing ']'")
            value, end = decoder.raw_decode(text, i)
            out.append((i, end, value))
            i = _WS.match(text, end).end()
            if array and text.startswith(",", i):
                i = _WS.match(text, i + 1).end()
            elif array and not text.startswith("]", i):
                return out, (i, "expected ',' or ']' after an item")
    except json.JSONDecodeError as e:
        return out, (e.pos, e.msg)
    except RecursionError:
        return out, (i, "nested too deeply")
    return out, (len(text), "the array is not closed (no ']')") if array else None


def _document_records(path: Path, text: str, values: list[tuple[int, int, Any]], error: tuple[int, str] | None,
                      rejects: RejectWriter | None, strict: bool,
                      stats: dict[str, int]) -> Iterator[tuple[Path, int, Any, str]]:
    for n, (start, end, value) in enumerate(values, start=1):
        stats["lines"] = stats.get("lines", 0) + 1
        yield path, n, value, text[start:end]
    if error is not None:
        pos, msg = error
        line, column = text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)
        stats["lines"] = stats.get("lines", 0) + 1
        reject_line(rejects, strict, stats, path, len(values) + 1,
                    f"malformed JSON document at line {line} column {column}: {msg}; the file from there on is "
                    "not read (fix it there, or write the records as JSON Lines)",
                    text[values[-1][1] if values else 0:].lstrip(" \t\r\n,"), code="invalid_json")


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
        if is_exchange_log(obj):  # {"request": body, "response": body}: the provider's record shape
            obj = exchange_record(obj)
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
    if is_responses_log(obj):  # OpenAI Responses API: input items + output items
        return _message_list(responses_messages(obj), "Responses items")
    if is_gemini_log(obj):  # Gemini: contents of parts
        return _message_list(gemini_messages(obj), "Gemini turns")
    for key in ("messages", "conversation"):
        if key in obj:
            return _with_system(obj, _message_list(obj[key], key))
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
    if "prompt" in obj and "completion" in obj and obj.get("label") is False:
        raise InvalidLine("a KTO record marked undesirable ('label': false) is not an answer to learn: "
                          "train such files with --objective kto")
    if "prompt" in obj and "completion" in obj and isinstance(obj["prompt"], list):
        if not isinstance(obj["completion"], list):  # TRL's conversational prompt-completion
            raise InvalidLine("fields 'prompt' and 'completion' must both be strings or both lists of messages")
        return _with_system(obj, _message_list(obj["prompt"], "prompt") + _message_list(obj["completion"], "completion"))
    for q, a in (("prompt", "completion"), ("prompt", "response"), ("input", "output")):
        if q in obj and a in obj:
            return _with_system(obj, [{"role": "user", "content": obj[q]},
                                      {"role": "assistant", "content": obj[a]}])
    hint = (" ('text' alone is plain text, not a conversation: iceburg trains on a conversation's assistant "
            "turns)") if "text" in obj else ""
    raise InvalidLine("no conversation found: expected 'messages', 'conversation', 'conversations' "
                      "(ShareGPT), 'instruction'+'output' (Alpaca), 'prompt'+'completion', 'prompt'+'response' "
                      f"or 'input'+'output'{hint}")


def _message_list(msgs: Any, key: str) -> list[dict[str, Any]]:
    if not isinstance(msgs, list):
        raise InvalidLine(f"field '{key}' must be a list of messages, got {type(msgs).__name__}")
    out: list[dict[str, Any]] = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise InvalidLine(f"{key}[{i}] must be an object with 'role' and 'content'")
        if "role" not in m:
            raise InvalidLine(f"{key}[{i}] has no 'role'")
        out.extend(_chat_messages(m, f"{key}[{i}]"))
    return out


def _chat_messages(m: dict, where: str) -> list[dict[str, Any]]:
    """One OpenAI/HF/Anthropic-style message as canonical messages: tool calls and results in
    their canonical shape, content parts as text (`content.py`); an Anthropic user turn holding
    `tool_result` blocks becomes one `tool` message per result (then the user's text, if any)."""
    role = "system" if m["role"] == "developer" else m["role"]  # OpenAI's name for it in o1 and later
    if isinstance(role, str) and role in TOOL_ROLES:  # `function` (older API), `ipython` (Llama 3.1)
        return [_tool_message(m, where)]
    content = m.get("content")
    if content is None and role == "assistant" and isinstance(m.get("refusal"), str):
        content = m["refusal"]  # OpenAI: a refused turn has `refusal` text and null content
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
