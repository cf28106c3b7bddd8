"""Reasoning traces through training: each turn's `reasoning` written the way the base's own chat
template writes it, supervised as part of the assistant turn (`--reasoning keep`, the default).

A `Record`'s assistant messages carry `reasoning` (one string, `iceburg/data/content.py`). Chat
templates differ in where it goes, so the format is read from the template itself by probing it:
- "field": the template renders a message field: Qwen3 / Qwen3.5 `reasoning_content` (inside
  `<think>...</think>` before the answer), gpt-oss `thinking` (its analysis channel). The field is
  set from `reasoning`; the usual prefix rendering then supervises reasoning + answer + end of turn.
- "forced": the generation prompt opens the think block (DeepSeek-R1 distills end it with
  `<think>\\n`) and a finished turn is written without reasoning (everything before `</think>` is
  cut), so the prompt is not a prefix of the rendered turn. The turn is trained as the model
  produces it after that prompt: `reasoning \\n</think>\\n\\n answer <end of turn>`, one example
  per turn (earlier turns are context without reasoning, as the template writes them). llama.cpp's
  copy of these templates appends `</think>` to the prompt unless `enable_thinking` is true, so
  they are rendered with `enable_thinking=True`, which gives DeepSeek's original prompt.
- "none": the template writes no reasoning (Llama 3.x, Mistral, SmolLM2, Phi): the reasoning is
  dropped and the run says so (counted in `EncodedSet.reasoning_dropped`, logged once).
`--reasoning drop` removes it under every template (a forced template then trains an empty think
block, `</think>\\n\\n answer` after the prompt's `<think>\\n`, as the template writes a turn with
thinking off).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

REASONING = ("keep", "drop")
PROBE = "iceburg-reasoning-probe-7"
FIELDS = ("reasoning_content", "thinking", "reasoning")  # Qwen3/Qwen3.5, gpt-oss, others
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
_CACHE: dict[str, "ReasoningFormat"] = {}


@dataclass(frozen=True)
class ReasoningFormat:
    kind: str  # "field" | "forced" | "none"
    key: str | None = None  # the message field a "field" template reads
    template_vars: dict[str, Any] = field(default_factory=dict)  # extra variables for every rendering


def reasoning_format(tokenizer) -> ReasoningFormat:
    """How the tokenizer's chat template writes reasoning (probed once per template text)."""
    template = getattr(tokenizer, "chat_template", None)
    if not isinstance(template, str):
        return ReasoningFormat("none")
    if template not in _CACHE:
        _CACHE[template] = _probe(tokenizer)
    return _CACHE[template]


def _probe(tokenizer) -> ReasoningFormat:
    from jinja2.exceptions import TemplateError

    user = [{"role": "user", "content": "u"}]
    try:
        for key in FIELDS:
            text = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": "a", key: PROBE}],
                                                 tokenize=False)
            if PROBE in text:
                return ReasoningFormat("field", key)
        prompt = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True,
                                               enable_thinking=True)
    except TemplateError:
        return ReasoningFormat("none")
    if prompt.endswith(THINK_OPEN + "\n"):
        return ReasoningFormat("forced", template_vars={"enable_thinking": True})
    return ReasoningFormat("none")


def prepare_messages(messages: list[dict[str, Any]], fmt: ReasoningFormat, mode: str) -> tuple[list[dict[str, Any]], bool]:
    """The messages to render under `fmt` and `mode` ("keep" | "drop"), and whether reasoning was
    dropped because the template cannot write it (the note `--reasoning keep` owes the user)."""
    if mode not in REASONING:
        raise ValueError(f"reasoning must be one of {REASONING}, got {mode!r}")
    if not any(m.get("reasoning") for m in messages):
        return messages, False
    out = []
    for m in messages:
        if "reasoning" not in m:
            out.append(m)
            continue
        m = dict(m)
        text = m.pop("reasoning")
        if mode == "keep" and fmt.kind == "field":
            m[fmt.key] = text  # type: ignore[index]
        elif mode == "keep" and fmt.kind == "forced":
            m["reasoning"] = text  # read by forced_turn, ignored by the template
        out.append(m)
    return out, mode == "keep" and fmt.kind == "none"


def forced_turn(prefix: str, upto: str, message: dict[str, Any]) -> str | None:
    """The text of a turn under a template whose generation prompt `prefix` opens the think block:
    the prompt, then what the model writes after it (reasoning, `\\n</think>\\n\\n`, the turn as the
    template writes it). None when the prompt does not end with an opened think block."""
    common = len(os.path.commonprefix([prefix, upto]))
    if not prefix[common:].endswith(THINK_OPEN + "\n"):
        return None
    reasoning = (message.get("reasoning") or "").strip()
    # no reasoning: the empty block `<think>\n</think>` the template itself writes with thinking off
    # (a second "\n" would merge with the prompt's into one token the prompt never ends with)
    think = f"{reasoning}\n{THINK_CLOSE}" if reasoning else THINK_CLOSE
    return f"{prefix}{think}\n\n{upto[common:].lstrip()}"


class TemplateVarsTokenizer:
    """A tokenizer whose `apply_chat_template` passes extra template variables (everything else
    delegates), like `tool_render.ToolsTokenizer` does for `tools=`."""

    def __init__(self, tokenizer, template_vars: dict[str, Any]):
        self._tokenizer = tokenizer
        self._vars = template_vars

    def apply_chat_template(self, conversation, **kwargs):
        for k, v in self._vars.items():
            kwargs.setdefault(k, v)
        return self._tokenizer.apply_chat_template(conversation, **kwargs)

    def __call__(self, *args, **kwargs):
        return self._tokenizer(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._tokenizer, name)


def bind_vars(tokenizer, fmt: ReasoningFormat):
    return TemplateVarsTokenizer(tokenizer, fmt.template_vars) if fmt.template_vars else tokenizer
