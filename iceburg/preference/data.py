"""Preference records: paired (`chosen` / `rejected`) and unpaired (KTO `completion` + `label`).

Accepted shapes, one JSON object per line (the shapes TRL and LLaMA-Factory take):
- TRL standard:        `prompt` (str) + `chosen` (str) + `rejected` (str)
- TRL conversational:  `prompt` ([messages]) + `chosen` ([assistant messages]) + `rejected` ([...])
- LLaMA-Factory ShareGPT ranking: `conversations` ([{from, value}], ending with the human turn)
                       + `chosen` {from: gpt, value} + `rejected` {from, value}
- LLaMA-Factory OpenAI style: `messages` ([...], ending with the user turn) + `chosen` + `rejected`
                       as {role, content} objects (or plain strings)
- Alpaca ranking:      `instruction` (+ `input`) + `chosen` + `rejected` (strings)
- KTO (TRL):           `prompt` + `completion` + `label` (bool: desirable or not)
- KTO (LLaMA-Factory): `messages`/`conversations` whose last turn is the answer + `kto_tag` (bool)

Optional: `system` (str), `agent_type`, `chosen_score` / `rejected_score` (or UltraFeedback's
`score_chosen` / `score_rejected`, any finite number), `reasons` (list of str), `metadata`.
The prompt and each continuation are validated with the transcript loader's own rules
(`iceburg.data.loader.normalise`: roles, non-empty string contents, system only first), so a
preference line is accepted exactly when its conversations would be. Invalid lines go to the
`RejectWriter` with file, line and reason (`strict=True` raises `DataError` instead).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..data.loader import SHAREGPT_ROLES, InvalidLine, normalise, read_json_lines, reject_line
from ..records import Record, RejectWriter

logger = logging.getLogger(__name__)

Messages = list[dict[str, str]]


@dataclass
class PreferencePair:
    """A prompt (conversation ending with a user turn) and a better and a worse continuation."""

    prompt: Messages
    chosen: Messages  # assistant turn(s) that follow the prompt
    rejected: Messages
    source: str = ""
    line: int = 0
    chosen_score: float | None = None
    rejected_score: float | None = None
    reasons: list[str] = field(default_factory=list)  # why `rejected` is worse (mined pairs)
    agent_type: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.source}:{self.line}" if self.source else Record(self.prompt + self.chosen).content_hash()[:16]

    def chosen_record(self) -> Record:
        return Record(messages=self.prompt + self.chosen, source=self.source, line=self.line,
                      agent_type=self.agent_type)

    def rejected_record(self) -> Record:
        return Record(messages=self.prompt + self.rejected, source=self.source, line=self.line,
                      agent_type=self.agent_type)

    def to_json(self) -> dict[str, Any]:
        """TRL's conversational preference shape plus the scores and reasons (reads back here)."""
        out: dict[str, Any] = {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}
        for k in ("chosen_score", "rejected_score", "agent_type"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        if self.reasons:
            out["reasons"] = self.reasons
        if self.metadata:
            out["metadata"] = self.metadata
        return out


@dataclass
class KTOExample:
    """An unpaired answer with a desirable / undesirable label (KTO)."""

    prompt: Messages
    completion: Messages
    label: bool
    source: str = ""
    line: int = 0
    agent_type: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.source}:{self.line}" if self.source else Record(self.prompt + self.completion).content_hash()[:16]

    def record(self) -> Record:
        return Record(messages=self.prompt + self.completion, source=self.source, line=self.line,
                      agent_type=self.agent_type)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"prompt": self.prompt, "completion": self.completion, "label": self.label}
        if self.agent_type is not None:
            out["agent_type"] = self.agent_type
        if self.metadata:
            out["metadata"] = self.metadata
        return out


def unpair(pairs: Iterable[PreferencePair]) -> list[KTOExample]:
    """Each pair as two KTO examples (chosen desirable, rejected undesirable), as TRL's
    `unpair_preference_dataset` does, so paired data can train KTO too."""
    out: list[KTOExample] = []
    for p in pairs:
        out.append(KTOExample(p.prompt, p.chosen, True, p.source, p.line, p.agent_type, dict(p.metadata)))
        out.append(KTOExample(p.prompt, p.rejected, False, p.source, p.line, p.agent_type, dict(p.metadata)))
    return out


# -- reading -------------------------------------------------------------------------------------

def read_preferences(paths: Iterable[str | Path], rejects: RejectWriter | None = None, *, strict: bool = False,
                     stats: dict[str, int] | None = None) -> Iterator[PreferencePair | KTOExample]:
    """Yield valid preference records from JSONL files; route every invalid line to `rejects`
    (the transcript reader's line handling: UTF-8, JSON, byte-order mark, every line counted)."""
    stats = stats if stats is not None else {}
    for path, lineno, obj, text in read_json_lines(paths, rejects, strict=strict, stats=stats):
        try:
            item = parse_preference(obj, source=str(path), line=lineno)
        except InvalidLine as e:
            reject_line(rejects, strict, stats, path, lineno, str(e), text)
            continue
        key = "pairs" if isinstance(item, PreferencePair) else "kto"
        stats[key] = stats.get(key, 0) + 1
        yield item


def is_preference_line(obj: Any) -> bool:
    """True for objects in one of the preference shapes (used to tell the files apart)."""
    return isinstance(obj, dict) and (("chosen" in obj and "rejected" in obj) or
                                      ("completion" in obj and "label" in obj) or "kto_tag" in obj)


def parse_preference(obj: Any, source: str = "", line: int = 0) -> PreferencePair | KTOExample:
    """One parsed JSON object as a validated `PreferencePair` or `KTOExample`, or `InvalidLine`."""
    if not isinstance(obj, dict):
        raise InvalidLine(f"expected a JSON object, got {type(obj).__name__}")
    agent = obj.get("agent_type", obj.get("agent"))
    if agent is not None and not isinstance(agent, str):
        raise InvalidLine("field 'agent_type' must be a string")
    meta = obj.get("metadata", {})
    if not isinstance(meta, dict):
        raise InvalidLine(f"field 'metadata' must be an object, got {type(meta).__name__}")
    if "chosen" in obj or "rejected" in obj:
        for k in ("chosen", "rejected"):
            if k not in obj:
                raise InvalidLine(f"field 'chosen' and 'rejected' come together; '{k}' is missing")
        prompt = _prompt(obj, allow_answer=False)
        chosen = _continuation(obj["chosen"], "chosen")
        rejected = _continuation(obj["rejected"], "rejected")
        _validate(prompt, chosen, "chosen")
        _validate(prompt, rejected, "rejected")
        if chosen == rejected:
            raise InvalidLine("'chosen' and 'rejected' are identical: the pair teaches nothing")
        reasons = obj.get("reasons", [])
        if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
            raise InvalidLine("field 'reasons' must be a list of strings")
        return PreferencePair(prompt, chosen, rejected, source, line, _num(obj, "chosen_score", "score_chosen"),
                              _num(obj, "rejected_score", "score_rejected"), list(reasons), agent, dict(meta))
    label = obj.get("label", obj.get("kto_tag"))
    if label is None:
        raise InvalidLine("no preference found: expected 'chosen' + 'rejected' (DPO/ORPO: with 'prompt', "
                          "'messages', 'conversations' or 'instruction'), or 'completion' + 'label' (KTO)")
    if not isinstance(label, bool):
        raise InvalidLine(f"field 'label' must be true or false, got {label!r}")
    if "completion" in obj:
        prompt = _prompt(obj, allow_answer=False)
        completion = _continuation(obj["completion"], "completion")
    else:  # LLaMA-Factory KTO: the conversation's last turn is the labelled answer
        full = _prompt(obj, allow_answer=True)
        if full[-1]["role"] != "assistant":
            raise InvalidLine("KTO line without 'completion': the conversation must end with the labelled "
                              "assistant turn")
        prompt, completion = full[:-1], full[-1:]
    _validate(prompt, completion, "completion")
    return KTOExample(prompt, completion, label, source, line, agent, dict(meta))


def _num(obj: dict, *keys: str) -> float | None:
    for k in keys:
        v = obj.get(k)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InvalidLine(f"field '{k}' must be a finite number, got {v!r}")
        return float(v)
    return None


def _prompt(obj: dict, allow_answer: bool) -> Messages:
    """The conversation before the answer, as ChatML messages (system prepended from `system`)."""
    if "prompt" in obj:
        p = obj["prompt"]
        msgs = [{"role": "user", "content": p}] if isinstance(p, str) else _message_list(p, "prompt")
    elif "messages" in obj or "conversation" in obj:
        key = "messages" if "messages" in obj else "conversation"
        msgs = _message_list(obj[key], key)
    elif "conversations" in obj:
        msgs = _message_list(obj["conversations"], "conversations")
    elif "instruction" in obj:
        instr, extra = obj["instruction"], obj.get("input") or ""
        if not isinstance(instr, str) or not isinstance(extra, str):
            raise InvalidLine("Alpaca fields 'instruction' and 'input' must be strings")
        msgs = [{"role": "user", "content": f"{instr}\n\n{extra}" if extra.strip() else instr}]
    else:
        raise InvalidLine("no prompt found: expected 'prompt', 'messages', 'conversations' or 'instruction'")
    system = obj.get("system")
    if isinstance(system, str) and system.strip() and not (msgs and msgs[0]["role"] == "system"):
        msgs = [{"role": "system", "content": system}] + msgs
    if not msgs:
        raise InvalidLine("the prompt has no messages")
    if not allow_answer and msgs[-1]["role"] != "user":
        raise InvalidLine(f"the prompt must end with a user turn, not {msgs[-1]['role']!r} "
                          "(the answers go in 'chosen' / 'rejected' / 'completion')")
    return msgs


def _message(m: Any, where: str) -> dict[str, str]:
    if not isinstance(m, dict):
        raise InvalidLine(f"{where} must be an object with 'role' and 'content' (or 'from' and 'value')")
    if "role" in m and "content" in m:
        return {"role": m["role"], "content": m["content"]}
    if "from" in m and "value" in m:
        role = SHAREGPT_ROLES.get(str(m["from"]).lower())
        if role is None:
            raise InvalidLine(f"{where}: unknown speaker {m['from']!r} (known: {', '.join(sorted(SHAREGPT_ROLES))})")
        return {"role": role, "content": m["value"]}
    raise InvalidLine(f"{where} must be an object with 'role' and 'content' (or 'from' and 'value')")


def _message_list(v: Any, key: str) -> Messages:
    if not isinstance(v, list):
        raise InvalidLine(f"field '{key}' must be a list of messages, got {type(v).__name__}")
    return [_message(m, f"{key}[{i}]") for i, m in enumerate(v)]


def _continuation(v: Any, key: str) -> Messages:
    if isinstance(v, str):
        msgs = [{"role": "assistant", "content": v}]
    elif isinstance(v, dict):
        msgs = [_message(v, key)]
    else:
        msgs = _message_list(v, key)
    if not msgs:
        raise InvalidLine(f"field '{key}' has no messages")
    bad = [m["role"] for m in msgs if m["role"] != "assistant"]
    if bad:
        raise InvalidLine(f"field '{key}' must hold assistant turns only, found role {bad[0]!r}")
    return msgs


def _validate(prompt: Messages, continuation: Messages, key: str) -> None:
    try:
        normalise({"messages": prompt + continuation})
    except InvalidLine as e:
        raise InvalidLine(f"prompt + {key}: {e}", e.code) from None  # keep the reject code


def write_jsonl(path: Path, items: Iterable[PreferencePair | KTOExample]) -> int:
    """Write records atomically (temp file + rename); returns the count."""
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as fh:
        for it in items:
            fh.write(json.dumps(it.to_json(), ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n
