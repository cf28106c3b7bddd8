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
- "inline": the template writes the assistant content verbatim and the model writes its reasoning
  inside it, between markers read from the template: SmolLM3 (`<think>\\n` R `\\n</think>\\n` A; the
  markers are the empty block its generation prompt holds with thinking off) and Mistral's
  reasoning models (Magistral, Ministral 3 Reasoning: `[THINK]` R `[/THINK]` A, the markers its
  `thinking` content block renders). A turn's content becomes markers + reasoning + answer; turns
  without reasoning stay as they are. Every record renders in the template's default mode (SmolLM3:
  thinking on, `/think`), the mode the exported Ollama template and llama.cpp use; a record whose
  system prompt says `/no_think` renders in SmolLM3's no-thinking mode (the template itself writes
  the empty `<think>\\n\\n</think>\\n` into the prompt), so its reasoning cannot be written and is
  left out.
- "channel": a thinking switch (`enable_thinking`) whose off-mode generation prompt ends with an
  empty reasoning block that the on-mode prompt lacks, under a template that strips reasoning from
  the turns it writes (Gemma 4: `<|channel>thought\\n<channel|>`; it keeps reasoning only in a
  tool-calling turn after the last user message, `<|channel>thought\\n` R `\\n<channel|>`, which
  gives the markers). A record with reasoning renders with thinking on (Gemma 4's `<|think|>` system
  switch) and each turn is trained as the model produces it after the on-mode prompt: markers +
  reasoning + answer + end of turn (a turn without reasoning: the empty block), one example per turn
  with earlier turns as the template writes them (reasoning stripped). A record without reasoning (or
  under `--reasoning drop`) renders in the template's default mode, thinking off, the mode the
  exported Ollama template uses: the turn is the answer the model writes after the prompt's empty
  block (`encoding._after_prompt`).
- "none": the template writes no reasoning (Llama 3.x, Mistral v0.3 / Nemo, SmolLM2, Phi): the
  reasoning is dropped and the run says so (counted in `EncodedSet.reasoning_dropped`, logged once).
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
CHANNEL = "iceburg_reasoning_block"  # "channel": what the model writes before a turn's written text
_CACHE: dict[str, "ReasoningFormat"] = {}


@dataclass(frozen=True)
class ReasoningFormat:
    kind: str  # "field" | "forced" | "inline" | "channel" | "none"
    key: str | None = None  # the message field a "field" template reads
    template_vars: dict[str, Any] = field(default_factory=dict)  # extra variables for every rendering
    open: str = ""  # "inline": the text before the reasoning in the content
    close: str = ""  # "inline": the text between the reasoning and the answer
    toggle: str | None = None  # "inline"/"channel": the template variable that turns thinking on


def text_diff(text: str, other: str) -> tuple[int, int]:
    """[a, b) of `text` that differs from `other` (common prefix and suffix cut; (0, 0) when equal)."""
    if text == other:
        return 0, 0
    a = len(os.path.commonprefix([text, other]))
    room = min(len(text), len(other)) - a
    s = len(os.path.commonprefix([text[::-1][:room], other[::-1][:room]]))
    return a, len(text) - s


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
    return (_probe_toggle(tokenizer, user) or _probe_blocks(tokenizer, user) or _probe_channel(tokenizer, user)
            or ReasoningFormat("none"))


def _probe_toggle(tokenizer, user: list[dict[str, Any]]) -> ReasoningFormat | None:
    """SmolLM3: with `enable_thinking=False` the generation prompt ends with an empty think block
    (`<think>\\n\\n</think>\\n`), with thinking on it does not, and an assistant content holding such
    a block is written verbatim. The block's halves are the markers."""
    from jinja2.exceptions import TemplateError

    try:
        off = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True, enable_thinking=False)
        on = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True, enable_thinking=True)
    except TemplateError:
        return None
    at = off.rfind(THINK_OPEN)
    inner, found, after = off[at + len(THINK_OPEN):].partition(THINK_CLOSE)
    if at < 0 or not found or inner.strip() or after.strip() or on.endswith(off[at:]):
        return None
    fmt = ReasoningFormat("inline", open=THINK_OPEN + inner[:len(inner) // 2],
                          close=inner[len(inner) // 2:] + THINK_CLOSE + after, toggle="enable_thinking")
    return fmt if _verbatim(tokenizer, user, fmt, {"enable_thinking": True}) else None


def _probe_blocks(tokenizer, user: list[dict[str, Any]]) -> ReasoningFormat | None:
    """Mistral's reasoning models: a `thinking` content block renders as `[THINK]...[/THINK]` before
    the text. The markers are what the block adds around the probe."""
    blocks = [{"type": "thinking", "thinking": PROBE}, {"type": "text", "text": "a"}]
    try:
        with_block = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": blocks}], tokenize=False)
        plain = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": "a"}], tokenize=False)
    except Exception:  # noqa: BLE001 - a template that cannot take content lists fails in many ways
        return None
    a, b = text_diff(with_block, plain)
    open_, found, close = with_block[a:b].partition(PROBE)
    if not found or "type" in with_block[a:b]:  # a template that prints the list itself
        return None
    fmt = ReasoningFormat("inline", open=open_, close=close)
    return fmt if _verbatim(tokenizer, user, fmt, {}) else None


def _gen_prompt(tokenizer, user: list[dict[str, Any]], **template_vars: Any) -> str | None:
    """What the generation prompt adds to the rendered chat (None when it is not simply appended)."""
    bare = tokenizer.apply_chat_template(user, tokenize=False, **template_vars)
    full = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True, **template_vars)
    return full[len(bare):] if full.startswith(bare) else None


def _probe_channel(tokenizer, user: list[dict[str, Any]]) -> ReasoningFormat | None:
    """Gemma 4: thinking off, the generation prompt ends with an empty reasoning block the on-mode
    prompt lacks; the markers are what the template writes around a reasoning it keeps (a tool-calling
    turn after the last user message), and the empty block must be exactly the markers with nothing
    between them (open + close without its leading whitespace)."""
    try:
        on, off = (_gen_prompt(tokenizer, user, enable_thinking=flag) for flag in (True, False))
    except Exception:  # noqa: BLE001 - a template without the switch may fail in many ways
        return None
    if on is None or off is None or not off.startswith(on) or not off[len(on):].strip():
        return None
    empty = off[len(on):]
    call = {"type": "function", "function": {"name": "probe", "arguments": {}}}
    for key in FIELDS:
        try:
            text = tokenizer.apply_chat_template(
                user + [{"role": "assistant", "content": "", "tool_calls": [call], key: PROBE}], tokenize=False)
        except Exception:  # noqa: BLE001 - a template that cannot take tool calls
            return None
        before, found, after = text.partition(PROBE)
        open_ = next((empty[:k] for k in range(len(empty), 0, -1) if before.endswith(empty[:k])), "")
        rest = empty[len(open_):]
        end = after.find(rest) if found and open_ and rest else -1
        if end >= 0 and not after[:end].strip():
            return ReasoningFormat("channel", key, open=open_, close=after[:end + len(rest)], toggle="enable_thinking")
    return None


def _verbatim(tokenizer, user: list[dict[str, Any]], fmt: ReasoningFormat, template_vars: dict[str, Any]) -> bool:
    """An assistant content of markers + reasoning + answer is written by the template as it is."""
    content = fmt.open + PROBE + fmt.close + "a"
    text = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": content}], tokenize=False,
                                         **template_vars)
    return content in text


def _no_think(messages: list[dict[str, Any]], fmt: ReasoningFormat) -> bool:
    """A record whose system prompt turns thinking off on a switchable template (SmolLM3's
    `/no_think`, which the template obeys by writing an empty block itself): no reasoning to write."""
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    return fmt.toggle is not None and "/no_think" in system


def _inline(messages: list[dict[str, Any]], fmt: ReasoningFormat, mode: str) -> list[dict[str, Any]]:
    """Each assistant turn with reasoning as markers + reasoning + answer in its content (under
    keep); other turns as they are; reasoning fields removed."""
    keep = mode == "keep" and not _no_think(messages, fmt)
    out = []
    for m in messages:
        m = dict(m)
        text = (m.pop("reasoning", None) or "").strip()
        if keep and text and m["role"] == "assistant":
            m["content"] = f"{fmt.open}{text}{fmt.close}{m['content']}"
        out.append(m)
    return out


def _channel(messages: list[dict[str, Any]], fmt: ReasoningFormat, mode: str) -> list[dict[str, Any]]:
    """Under keep: every assistant turn carries the block its model writes first (`CHANNEL`: markers +
    reasoning, or the empty block) and its reasoning in the field the template reads where it keeps
    it; under drop: the reasoning removed (the record renders in the default mode)."""
    out = []
    for m in messages:
        m = dict(m)
        text = (m.pop("reasoning", None) or "").strip()
        if mode == "keep" and m["role"] == "assistant":
            m[CHANNEL] = f"{fmt.open}{text}{fmt.close}" if text else fmt.open + fmt.close.lstrip()
            if text:
                m[fmt.key] = text  # type: ignore[index]
        out.append(m)
    return out


def channel_turn(prefix: str, upto: str, message: dict[str, Any]) -> str:
    """Turn text under a "channel" template (thinking on): the prompt, the block the model writes
    first (reasoning between the markers), then the turn as the template writes it; unchanged where
    the template wrote that block itself (a kept tool-calling turn) or the message carries none."""
    block = message.get(CHANNEL)
    if not block or not upto.startswith(prefix) or upto[len(prefix):].startswith(block):
        return upto
    return prefix + block + upto[len(prefix):]


def prepare_messages(messages: list[dict[str, Any]], fmt: ReasoningFormat, mode: str) -> tuple[list[dict[str, Any]], bool]:
    """The messages to render under `fmt` and `mode` ("keep" | "drop"), and whether reasoning was
    dropped because the template cannot write it (the note `--reasoning keep` owes the user)."""
    if mode not in REASONING:
        raise ValueError(f"reasoning must be one of {REASONING}, got {mode!r}")
    if not any(m.get("reasoning") for m in messages):
        return messages, False
    if fmt.kind == "inline":
        return _inline(messages, fmt, mode), False
    if fmt.kind == "channel":
        return _channel(messages, fmt, mode), False
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


def bind_vars(tokenizer, fmt: ReasoningFormat, messages: list[dict[str, Any]] | None = None):
    """The tokenizer rendering with the format's variables; a "channel" record that carries reasoning
    blocks (`prepare_messages`) renders with thinking on."""
    template_vars = dict(fmt.template_vars)
    if fmt.kind == "channel" and any(CHANNEL in m for m in messages or ()):
        template_vars[fmt.toggle] = True  # type: ignore[index]
    return TemplateVarsTokenizer(tokenizer, template_vars) if template_vars else tokenizer
