"""Message content as agent SDKs write it, turned into the text, calls and reasoning a `Record` holds.

- OpenAI content parts, `"content": [{"type": "text", "text": ...}, ...]` (Chat Completions; the
  Responses API's `input_text` / `output_text`; an assistant's `refusal` part): the text parts
  joined with "\\n", as vLLM's chat_utils joins them before rendering a chat template.
- Anthropic Messages content blocks: `text`; `thinking` -> the message's reasoning;
  `redacted_thinking` (encrypted by the API, no text to learn from) is skipped; `tool_use` -> a
  tool call (its `id` kept); `tool_result` in a user turn -> a `tool` message whose `tool_call_id`
  is the block's `tool_use_id` (the loader then checks it answers a call of the turn before).
- Reasoning on an assistant message: the `reasoning_content` field (DeepSeek API, Qwen3, vLLM and
  llama.cpp servers), `reasoning` (OpenRouter, newer vLLM, and iceburg's own records), `thinking`
  (Ollama's chat API), `thinking` blocks, and inline `<think>...</think>` opening the content (or
  content with only the closing `</think>`: an R1 distill's output, whose template put `<think>\\n`
  into the prompt) -> one `reasoning` string on the message, the answer left in `content`.

Rejected per record, with the part's position and type (reject code in brackets): image, audio,
video and file parts [unsupported_content] (iceburg trains text models), any other part type
[unknown_content_part], reasoning that is not a string or a `<think>` never closed
[invalid_reasoning], a `tool_result` without `tool_use_id` [unmatched_tool_result].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .tool_calls import normalise_call

TEXT_PARTS = ("text", "input_text", "output_text")
MEDIA_PARTS = ("image", "image_url", "input_image", "image_file", "audio", "input_audio", "file",
               "input_file", "document", "video", "video_url")
REASONING_FIELDS = ("reasoning_content", "reasoning", "thinking")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
KNOWN_PARTS = (*TEXT_PARTS, "refusal", "thinking", "redacted_thinking", "tool_use", "tool_result", *MEDIA_PARTS)


class ContentError(ValueError):
    """Content the loader cannot turn into text; `code` is the reject code (`REJECT_CODES`)."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


@dataclass
class Parts:
    """What a list of content parts holds: its text and, by role, reasoning, calls and results."""

    text: str = ""
    reasoning: list[str] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)  # `tool` messages (Anthropic)


def _text(part: dict, key: str, where: str, code: str = "invalid_record") -> str:
    value = part.get(key)
    if not isinstance(value, str):
        raise ContentError(f"{where}: a {part.get('type')!r} part needs a string '{key}', got "
                           f"{type(value).__name__}", code)
    return value


def _refuse_part(kind: Any, role: str, where: str) -> ContentError:
    if kind in MEDIA_PARTS:
        return ContentError(f"{where}: content part of type {kind!r} in a {role} turn: iceburg trains text models, so a "
                            "record with images, audio or files cannot be trained on; remove the part or "
                            "the record", "unsupported_content")
    if kind in KNOWN_PARTS:
        return ContentError(f"{where}: content part of type {kind!r} cannot appear in a {role} turn",
                            "unknown_content_part")
    return ContentError(f"{where}: unknown content part type {kind!r} (known: {', '.join(KNOWN_PARTS)})",
                        "unknown_content_part")


def split_parts(content: list, role: str, where: str) -> Parts:
    """The parts of one message's content list, checked per part (see the module docstring)."""
    out, texts = Parts(), []
    for j, part in enumerate(content):
        w = f"{where} content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in TEXT_PARTS:
            texts.append(_text(part, "text", w))
        elif kind == "refusal" and role == "assistant":
            texts.append(_text(part, "refusal", w))
        elif kind == "thinking" and role == "assistant":
            out.reasoning.append(_text(part, "thinking", w, "invalid_reasoning"))
        elif kind == "redacted_thinking" and role == "assistant":
            continue  # encrypted by the API: nothing a model could learn from
        elif kind == "tool_use" and role == "assistant":
            out.calls.append(normalise_call({"id": part.get("id"), "name": part.get("name"),
                                             "arguments": part.get("input", {})}, w))
        elif kind == "tool_result" and role == "user":
            out.results.append(_tool_result(part, w))
        else:
            raise _refuse_part(kind if kind is not None else type(part).__name__, role, w)
    out.text = "\n".join(texts)
    return out


def _tool_result(part: dict, where: str) -> dict[str, Any]:
    """An Anthropic `tool_result` block as a `tool` message answering the call `tool_use_id`."""
    call_id = part.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise ContentError(f"{where}: a 'tool_result' needs the 'tool_use_id' of the call it answers",
                           "unmatched_tool_result")
    content = part.get("content", "")
    text = split_parts(content, "tool", where).text if isinstance(content, list) else content
    if not isinstance(text, str):
        raise ContentError(f"{where}: 'tool_result' content must be text or text blocks, got "
                           f"{type(text).__name__}", "invalid_tool_call")
    return {"role": "tool", "content": text, "tool_call_id": call_id}


def is_part_list(content: Any) -> bool:
    """True for a list of typed content parts (as opposed to a tool result that is a JSON list)."""
    return isinstance(content, list) and bool(content) and all(
        isinstance(p, dict) and p.get("type") in (*TEXT_PARTS, *MEDIA_PARTS) for p in content)


def reasoning_fields(message: dict, where: str) -> list[str]:
    """The reasoning an input assistant message carries in its fields, in REASONING_FIELDS order."""
    pieces = []
    for key in REASONING_FIELDS:
        value = message.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ContentError(f"{where}: '{key}' must be a string, got {type(value).__name__}",
                               "invalid_reasoning")
        pieces.append(value)
    return pieces


def split_think(content: str, where: str) -> tuple[str | None, str]:
    """(reasoning, answer) of content that opens with `<think>...</think>` or holds only the closing
    tag (R1 distills); (None, content) when it has no think block."""
    body = content.lstrip()
    if body.startswith(THINK_OPEN):
        end = body.find(THINK_CLOSE)
        if end < 0:
            raise ContentError(f"{where}: '<think>' is never closed (the reasoning was cut off, so there "
                               "is no answer to learn)", "invalid_reasoning")
        return body[len(THINK_OPEN):end], body[end + len(THINK_CLOSE):].lstrip()
    if THINK_OPEN not in content and THINK_CLOSE in content:
        head, _, tail = content.partition(THINK_CLOSE)
        return head, tail.lstrip()
    return None, content


def attach_reasoning(message: dict[str, Any], pieces: list[str], where: str) -> dict[str, Any]:
    """`message` (an output assistant message) with inline `<think>` moved out of its content and
    every reasoning piece joined into `reasoning` (absent when there is none)."""
    if isinstance(message.get("content"), str):
        think, message["content"] = split_think(message["content"], where)
        if think is not None:
            pieces = [*pieces, think]
    # vLLM writes the same text as both `reasoning_content` and `reasoning`: kept once
    text = "\n\n".join(dict.fromkeys(p.strip() for p in pieces if p.strip()))
    if text:
        message["reasoning"] = text
    return message
