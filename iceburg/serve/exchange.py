"""One chat exchange as a training record: the request's messages and tools plus the answer the
client received, assembled from a JSON response or from streamed SSE deltas.

OpenAI's streaming shape (also Ollama's `/v1`, llama.cpp's and vLLM's servers): `data: {chunk}`
events separated by a blank line, ending with `data: [DONE]`; each chunk's `choices[i].delta`
carries a piece of `content` (or `reasoning_content` / `reasoning`), and `tool_calls` pieces keyed
by `index` whose `function.arguments` strings concatenate to the call's JSON (the name comes once,
except from llama-cpp-python 0.3.36, which repeats it whole in every delta); `finish_reason`
arrives on the last chunk of a choice and `usage` (when the server sends it) on a chunk of its own.
Only choice 0 is recorded (agents ask for one answer; `n` > 1 is noted in the metadata).

An answer is complete only when a `finish_reason` arrived and no error event did; anything else
(a cut stream, an `error` event) is not a training record.
"""

from __future__ import annotations

import codecs
import json
import time
from dataclasses import dataclass, field
from typing import Any

# Request fields kept in the record's metadata (sampling settings matter when the data is judged
# later); never headers, so keys and tokens cannot reach the log.
REQUEST_PARAMS = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "seed", "stop", "tool_choice",
                  "n", "response_format")


@dataclass
class Answer:
    """Choice 0 of a chat completion as the client received it."""

    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish_reason: str | None = None
    model: str | None = None
    response_id: str | None = None
    usage: dict[str, Any] | None = None
    error: str | None = None

    @property
    def complete(self) -> bool:
        return self.finish_reason is not None and self.error is None

    def message(self) -> dict[str, Any]:
        """The assistant message in OpenAI's shape (arguments as JSON strings; the loader parses them)."""
        msg: dict[str, Any] = {"role": "assistant", "content": "".join(self.content)}
        if self.calls:
            msg["tool_calls"] = [self.calls[i] for i in sorted(self.calls)]
        if self.reasoning:
            msg["reasoning_content"] = "".join(self.reasoning)
        return msg

    def _add_text(self, m: dict[str, Any]) -> None:
        """The answer text and the reasoning (under either server's key) of a message or a delta."""
        if isinstance(m.get("content"), str):
            self.content.append(m["content"])
        for key in ("reasoning_content", "reasoning"):
            if isinstance(m.get(key), str):
                self.reasoning.append(m[key])

    def add_choice_message(self, m: dict[str, Any]) -> None:
        """A non-streamed `choices[0].message`."""
        self._add_text(m)
        for i, call in enumerate(m.get("tool_calls") or []):
            self.calls[i] = call

    def add_delta(self, d: dict[str, Any]) -> None:
        """One streamed `choices[0].delta`."""
        self._add_text(d)
        for piece in d.get("tool_calls") or []:
            call = self.calls.setdefault(int(piece.get("index", len(self.calls))),
                                         {"type": "function", "function": {"name": "", "arguments": ""}})
            if piece.get("id"):
                call["id"] = piece["id"]
            fn = piece.get("function") or {}
            name = fn.get("name") or ""
            if name != call["function"]["name"]:  # llama-cpp-python repeats the whole name in every delta
                call["function"]["name"] += name
            call["function"]["arguments"] += fn.get("arguments") or ""


def answer_from_json(body: bytes) -> Answer:
    """A non-streamed chat completion response body."""
    ans = Answer()
    try:
        obj = json.loads(body)
    except ValueError as e:
        ans.error = f"response is not JSON: {e}"
        return ans
    if not isinstance(obj, dict) or not obj.get("choices"):
        ans.error = "response has no choices"
        return ans
    _take_header(ans, obj)
    choice = obj["choices"][0]
    ans.add_choice_message(choice.get("message") or {})
    ans.finish_reason = choice.get("finish_reason")
    return ans


def _take_header(ans: Answer, obj: dict[str, Any]) -> None:
    ans.model = obj.get("model") or ans.model
    ans.response_id = obj.get("id") or ans.response_id
    if isinstance(obj.get("usage"), dict):
        ans.usage = obj["usage"]
    if obj.get("error"):
        ans.error = json.dumps(obj["error"])[:500]


class SseAssembler:
    """Feed raw response bytes as they arrive; `done` turns True at `data: [DONE]`."""

    def __init__(self) -> None:
        self.answer = Answer()
        self.done = False
        self.choices = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._buf = ""

    def feed(self, data: bytes) -> None:
        self._buf = (self._buf + self._decoder.decode(data)).replace("\r\n", "\n")
        while "\n\n" in self._buf:
            event, self._buf = self._buf.split("\n\n", 1)
            self._event(event)

    def _event(self, event: str) -> None:
        data = "\n".join(line[5:].removeprefix(" ") for line in event.split("\n") if line.startswith("data:"))
        if not data:
            return  # comments (": ping") and event-only lines
        if data.strip() == "[DONE]":
            self.done = True
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            self.answer.error = f"stream event is not JSON: {data[:80]!r}"
            return
        if not isinstance(chunk, dict):
            return
        _take_header(self.answer, chunk)
        for choice in chunk.get("choices") or []:
            self.choices = max(self.choices, int(choice.get("index", 0)) + 1)
            if choice.get("index", 0) != 0:
                continue
            self.answer.add_delta(choice.get("delta") or {})
            self.answer.finish_reason = choice.get("finish_reason") or self.answer.finish_reason


def record_fields(request: dict[str, Any], answer: Answer, *, stream: bool, latency_s: float,
                  first_byte_s: float | None, upstream: str, path: str) -> dict[str, Any]:
    """The `messages`, `tools` and `metadata` of the training record for one completed exchange."""
    meta: dict[str, Any] = {
        "source": "iceburg-collect",
        "model": answer.model or request.get("model"),
        "requested_model": request.get("model"),
        "response_id": answer.response_id,
        "finish_reason": answer.finish_reason,
        "usage": answer.usage,
        "latency_ms": round(latency_s * 1000, 3),
        "first_byte_ms": None if first_byte_s is None else round(first_byte_s * 1000, 3),
        "stream": stream,
        "upstream": upstream,
        "path": path,
        "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "params": {k: request[k] for k in REQUEST_PARAMS if k in request},
    }
    tools = request.get("tools") or request.get("functions")
    return {"messages": [*request["messages"], answer.message()], "tools": tools or None, "metadata": meta}
