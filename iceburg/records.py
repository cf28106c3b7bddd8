"""The one record type every stage passes along, and the rejects sink every stage writes to.

A `Record` is a normalised conversation (ChatML-style `messages`; assistant turns may carry
`tool_calls` and `tool` messages carry results, see `iceburg.data.tool_calls`) plus where it came from, the
optional scores a producer attached (`quality_score`, `emergence_score`), free metadata, and the
named signals each stage computes (`signals["truth.repetition"] = 0.12`), so any decision can be
explained afterwards. Stages are functions/objects over `Iterable[Record]`.

Nothing is ever silently dropped: a stage that removes a record hands a `Reject` to a
`RejectWriter` with the stage name, the reasons and the scores. Each reason is a `Reason`: a stable
`code` from `REJECT_CODES` (what counts, reports and preference mining key on) and the human
message (what a person reads); code is never parsed back out of the message.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

ROLES = ("system", "user", "assistant", "tool")

# The stable reject codes, one per way a record can leave the pipeline (docs/data.md "Reject
# codes" lists the same table; tests/data/test_reject_codes.py checks the two agree and that every
# code the package writes is here). A new way to drop a record adds a row here and there.
REJECT_CODES: dict[str, str] = {
    # load (iceburg/data/loader.py, tool_calls.py, content.py)
    "invalid_utf8": "the line is not valid UTF-8",
    "invalid_json": "the line is not valid JSON",
    "invalid_record": "the JSON holds no usable conversation (shape, role, field or score problem)",
    "unencodable_text": "text holds a lone UTF-16 surrogate (not writable as UTF-8)",
    "invalid_tool_call": "a malformed tool call, tool definition or tool result",
    "unmatched_tool_result": "a tool result (Anthropic `tool_result`) with no matching call",
    "unsupported_content": "a content part that cannot be trained on as text (image, audio, file)",
    "unknown_content_part": "a content part of a type the loader does not know",
    "invalid_reasoning": "a reasoning field that is not text",
    # truth (iceburg/truth/signals.py defects, filter.py)
    "empty": "an assistant turn with (almost) no words",
    "repetition": "the answer loops (Gopher repetition rules)",
    "refusal": "an assistant turn opens with a refusal",
    "boilerplate": "most of a turn is boilerplate sentences",
    "truncated": "the final answer looks cut off",
    "garbage": "symbols, control characters or mojibake",
    "low_quality": "quality score below --min-quality-score",
    # dedup (iceburg/truth/dedup.py, filter.py) and emergence (embedding near duplicates)
    "exact_duplicate": "same normalised text as a kept (or earlier rejected) record",
    "duplicate_group_lost": "every copy of an exact-duplicate group was rejected: the text is lost",
    "near_duplicate": "MinHash (dedup) or embedding (emergence) similarity above the threshold",
    # continual training (iceburg/recipes/continual.py): against the previous version's data
    "seen_before": "exact or near duplicate of a record the previous version trained or was held out on",
    # generation (iceburg/generation/keep.py): a generated prompt or transcript that copies a held-out record
    "heldout_duplicate": "a generated prompt or transcript is an exact, near or semantic duplicate of a held-out record",
    # encode (iceburg/training/encoding.py, tool_render.py, preference.py)
    "no_tool_format": "tool calls, but the base's chat template has no tool format",
    "template_refused": "the chat template raised, or could not write the turn or its tool calls",
    "too_long": "no supervised token within --max-seq-length",
    "no_target_turn": "--train-on selects no assistant turn of the record",
}


@dataclass(frozen=True)
class Reason:
    """Why a record was dropped: a stable `code` (a key of `REJECT_CODES`) and the human message."""

    code: str
    message: str

    def __post_init__(self) -> None:
        if self.code not in REJECT_CODES:
            raise ValueError(f"unknown reject code {self.code!r}: add it to REJECT_CODES in iceburg/records.py "
                             "and to the table in docs/data.md")


@dataclass
class Record:
    messages: list[dict[str, Any]]
    source: str = ""
    line: int = 0
    quality_score: float | None = None
    emergence_score: float | None = None
    agent_type: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    # Named signals written by the stages ("truth.repetition", "emergence.novelty", ...).
    signals: dict[str, float] = field(default_factory=dict)
    # Training weight set by the curriculum (1.0 = plain training).
    weight: float = 1.0
    # Function definitions the agent could call (`apply_chat_template(tools=...)`), or None.
    tools: list[dict[str, Any]] | None = None

    @property
    def id(self) -> str:
        """Stable identifier: `file:line` when known, otherwise a content hash."""
        if self.source:
            return f"{self.source}:{self.line}"
        return self.content_hash()[:16]

    def content_hash(self) -> str:
        payload = json.dumps(self.messages, ensure_ascii=False, sort_keys=True)
        if self.tools:
            payload += json.dumps(self.tools, ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def assistant_text(self) -> str:
        """What the assistant said, its tool calls included (`name {"arg": ...}` per call)."""
        return "\n\n".join(turn_text(m) for m in self.messages if m["role"] == "assistant")

    def user_text(self) -> str:
        return "\n\n".join(m["content"] for m in self.messages if m["role"] == "user")

    def to_json(self) -> dict[str, Any]:
        """The JSONL form the loader reads back (round-trips through `iceburg.data.loader`)."""
        out: dict[str, Any] = {"messages": self.messages}
        if self.tools:
            out["tools"] = self.tools
        if self.quality_score is not None:
            out["quality_score"] = self.quality_score
        if self.emergence_score is not None:
            out["emergence_score"] = self.emergence_score
        if self.agent_type is not None:
            out["agent_type"] = self.agent_type
        if self.metadata:
            out["metadata"] = self.metadata
        if self.signals:
            out["signals"] = self.signals
        if self.weight != 1.0:
            out["weight"] = self.weight
        return out


def turn_text(message: dict[str, Any]) -> str:
    """A message's text followed by its tool calls as text (stable: argument keys sorted)."""
    calls = [f"{c['function']['name']} {json.dumps(c['function']['arguments'], ensure_ascii=False, sort_keys=True)}"
             for c in message.get("tool_calls", ())]
    return "\n".join([message["content"], *calls] if message["content"] else calls)


@dataclass
class Reject:
    """Why one input line or record did not make it into training."""

    stage: str  # "load", "truth", "dedup", "emergence", "encode"
    reasons: list[str]  # the human messages
    source: str = ""
    line: int = 0
    record: dict[str, Any] | None = None  # the normalised record, when there was one
    raw: str | None = None  # the raw line, when it could not be parsed
    details: dict[str, Any] = field(default_factory=dict)  # scores, duplicate_of, ...
    codes: list[str] = field(default_factory=list)  # REJECT_CODES, one per reason

    @property
    def code(self) -> str:
        """The code this reject is counted under: its first reason's."""
        return self.codes[0] if self.codes else "unspecified"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "stage": self.stage,
            "source": self.source,
            "line": self.line,
            "code": self.code,
            "codes": self.codes,
            "reasons": self.reasons,
        }
        if self.details:
            out["details"] = self.details
        if self.record is not None:
            out["record"] = self.record
        if self.raw is not None:
            out["raw"] = self.raw
        return out


class RejectWriter:
    """Collects rejects into a JSONL file, written atomically (temp file + rename on close).

    Counts per `stage:code` (the first reason's code, e.g. `truth:refusal`) are kept for the stats. Use as a context manager; `path=None`
    keeps counts only (for library use where the caller does not want a file).
    """

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path is not None else None
        self.counts: dict[str, int] = {}
        self.total = 0
        self._fh = None
        self._tmp: str | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
            # backslashreplace: a lone surrogate ("\\ud800", valid JSON) is written as its JSON
            # escape and reads back identical, as in the collector and --filter-only writers
            self._fh = os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace")

    def drop(self, stage: str, record: "Record | None", reasons: Iterable[Reason],
             details: dict[str, Any] | None = None, *, raw: str | None = None,
             source: str = "", line: int = 0) -> None:
        """The one way a stage drops something: a record (kept in full, with its origin) or, when
        there is no record, the raw input (`raw`, with `source`/`line`). `reasons`: `Reason`s."""
        reasons = list(reasons)
        bad = [r for r in reasons if not isinstance(r, Reason)]
        if bad or not reasons:
            raise TypeError(f"RejectWriter.drop({stage!r}) needs Reason(code, message) items, got {bad or reasons!r}")
        self.write(Reject(stage=stage, reasons=[r.message for r in reasons], codes=[r.code for r in reasons],
                          source=record.source if record is not None else source,
                          line=record.line if record is not None else line,
                          record=record.to_json() if record is not None else None,
                          raw=raw, details=dict(details or {})))

    def write(self, reject: Reject) -> None:
        key = f"{reject.stage}:{reject.code}"
        self.counts[key] = self.counts.get(key, 0) + 1
        self.total += 1
        if self._fh is not None:
            self._fh.write(json.dumps(reject.to_json(), ensure_ascii=False) + "\n")

    def extend(self, rejects: Iterable[Reject]) -> None:
        for r in rejects:
            self.write(r)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None
            os.replace(self._tmp, self.path)  # type: ignore[arg-type]

    def __enter__(self) -> "RejectWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fold_system_text(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """For templates with no system role (Gemma): the leading system message's text prepended to
    the first user message ("system\n\nuser"). Training and the Ollama export fold it alike."""
    if not messages or messages[0]["role"] != "system":
        return messages
    rest = [dict(m) for m in messages[1:]]
    first_user = next((i for i, m in enumerate(rest) if m["role"] == "user"), None)
    if first_user is not None:
        rest[first_user]["content"] = messages[0]["content"] + "\n\n" + rest[first_user]["content"]
    return rest
