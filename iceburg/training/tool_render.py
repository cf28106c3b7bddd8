"""Rendering tool-calling conversations for training.

Records with tool calls are rendered by the model's own chat template with the record's function
definitions passed as `tools=` (Hugging Face's tool-use convention: transformers' chat-templating
docs, "Tool use / function calling"). Templates with native tool support (Llama 3.1/3.2/3.3,
Qwen2.5, Qwen3, Hermes, Mistral Nemo, ...) write the definitions, the calls and the results in
the format the model was trained on; assistant-only masking (`encoding.py`) then supervises the
assistant turns, which include the call text the template writes for them, while tool results
(their own messages) and the definitions (in the system or first user turn) stay unsupervised.

ChatML bases whose template renders only `role` + `content` (iceburg-tiny, many base models given
ChatML), or that and a default system prompt when a chat has none (SmolLM2), would silently drop
the calls. For them iceburg installs `hermes_chatml_template(default system prompt)`: ChatML plus
the Hermes-style tool format of NousResearch's Hermes 2 Pro / Hermes 3 as Qwen2.5 writes it
(definitions as JSON lines inside `<tools></tools>` in the system turn, each call as
`<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>` in the assistant turn, results as
`<tool_response>` blocks in a user turn). It renders a conversation without tools byte for byte
like the base's own template (checked on probe chats before it is installed), and it is saved
with the fine-tuned tokenizer, so the exported GGUF and Ollama template carry it (the Ollama
export proves its Go TEMPLATE against it, default system prompt included). A non-ChatML template that
cannot render tool calls is refused: there is no format the model already knows to fall back on.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from ..data.tool_calls import renders_tools
from ..errors import IceburgError
from ..records import Record

logger = logging.getLogger(__name__)

# Qwen2.5-7B-Instruct's template (llama.cpp models/templates/Qwen-Qwen2.5-7B-Instruct.jinja) without
# its default "You are Qwen" system prompt; Qwen3-0.6B's template does the same. Arguments given as
# a JSON string are written as they are (Qwen3 / Hermes 3 do this too), objects with `tojson`.
_HERMES_TOOLS_HEAD = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\"name\": <function-name>, \"arguments\": "
    "<args-json-object>}\\n</tool_call><|im_end|>\\n' }}"
    "{%- elif messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
)
_HERMES_BODY = (
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' or (message['role'] == 'system' and not loop.first) %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- elif message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant' }}"
    "{%- if message['content'] or not message.tool_calls %}{{- '\\n' + message['content'] }}{%- endif %}"
    "{%- for tool_call in message.tool_calls or [] %}"
    "{%- set call = tool_call.function if tool_call.function is defined else tool_call %}"
    "{{- '\\n<tool_call>\\n{\"name\": \"' + call.name + '\", \"arguments\": ' }}"
    "{%- if call.arguments is string %}{{- call.arguments }}{%- else %}{{- call.arguments | tojson }}{%- endif %}"
    "{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif message['role'] == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message['content'] + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def hermes_chatml_template(default_system: str = "") -> str:
    """The Hermes-style ChatML tool template; with `default_system`, the system turn a base's own
    template writes when a chat has none (SmolLM2: "You are a helpful AI assistant named SmolLM,
    ..."), written the way Qwen2.5's template writes its own default: as the system turn of a chat
    without one, and before the tool definitions when tools are offered."""
    if not default_system:
        return _HERMES_TOOLS_HEAD + _HERMES_BODY
    lit = repr(default_system)  # a Python string literal is a Jinja string literal
    head = _HERMES_TOOLS_HEAD.replace(
        "'\\n\\n' }}{%- endif %}", "'\\n\\n' }}{%- else %}{{- " + lit + " + '\\n\\n' }}{%- endif %}", 1)
    return head + "{%- else %}{{- '<|im_start|>system\\n' + " + lit + " + '<|im_end|>\\n' }}" + _HERMES_BODY


HERMES_CHATML_TEMPLATE = hermes_chatml_template()

_PLAIN_CHAT = [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]
_PLAIN_CHATML = "<|im_start|>user\nu<|im_end|>\n<|im_start|>assistant\na<|im_end|>\n"


class ToolsTokenizer:
    """A tokenizer whose `apply_chat_template` passes a record's `tools=` (everything else delegates).

    Lets `encoding.py` render one record with its function definitions without threading `tools`
    through every helper."""

    def __init__(self, tokenizer, tools: list[dict[str, Any]]):
        self._tokenizer = tokenizer
        self._tools = tools

    def apply_chat_template(self, conversation, **kwargs):
        kwargs.setdefault("tools", self._tools)
        return self._tokenizer.apply_chat_template(conversation, **kwargs)

    def __call__(self, *args, **kwargs):
        return self._tokenizer(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._tokenizer, name)


def bind_tools(tokenizer, tools: list[dict[str, Any]] | None):
    """`tokenizer` rendering with `tools=tools`; the tokenizer itself when there are none."""
    return ToolsTokenizer(tokenizer, tools) if tools else tokenizer


def _chatml_default_system(tokenizer) -> str | None:
    """"" for a plain ChatML template, the default system prompt of a ChatML template that writes
    one when a chat has none (SmolLM2), None for anything else."""
    from jinja2.exceptions import TemplateError

    bos = getattr(tokenizer, "bos_token", None) or ""
    try:
        text = tokenizer.apply_chat_template(_PLAIN_CHAT, tokenize=False)
    except TemplateError:
        return None
    head, tail = "<|im_start|>system\n", "<|im_end|>\n" + _PLAIN_CHATML
    # SmolLM2's BOS is `<|im_start|>` itself: try the text as it is first, then without a BOS.
    for t in (text, text[len(bos):] if bos and text.startswith(bos) else text):
        if t == _PLAIN_CHATML:
            return ""
        if t.startswith(head) and t.endswith(tail) and "<|im_end|>" not in t[len(head):-len(tail)]:
            return t[len(head):-len(tail)]
    return None


# Chats the Hermes template must render byte for byte like the base's own template (no tools).
_SAME_PROBES = [_PLAIN_CHAT, [{"role": "system", "content": "s"}, *_PLAIN_CHAT], [*_PLAIN_CHAT, *_PLAIN_CHAT]]


def _renders_like(tokenizer, template: str) -> bool:
    """The tokenizer's (new) template renders the probe chats exactly like `template` does."""
    from jinja2.exceptions import TemplateError

    try:
        return all(tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=g)
                   == tokenizer.apply_chat_template(c, chat_template=template, tokenize=False, add_generation_prompt=g)
                   for c in _SAME_PROBES for g in (False, True))
    except TemplateError:
        return False


def uses_tools(records: Iterable[Record]) -> bool:
    return any(r.tools or any(m.get("tool_calls") or m["role"] == "tool" for m in r.messages) for r in records)


class ToolFormatMissing(IceburgError):
    """The base's chat template has no way to write tool calls (and is not plain ChatML)."""


SKIP_REASON = ("tool calls: the base model's chat template has no tool format, so the calls cannot be "
               "rendered for training; use a base whose template supports tools (docs/tools.md)")


def tool_policy(tokenizer, records: Iterable[Record]):
    """What training does with tool-calling records: `(template kind, skip)` where `skip(record)`
    gives a reject reason for a record that cannot be rendered (None = keep). A base with no tool
    format (e.g. Phi-3.5, Gemma 2) still trains on the rest:
    its tool-calling records go to rejects.jsonl (stage "encode") with the reason, not silently."""
    records = list(records)
    try:
        return ensure_tool_template(tokenizer, records), None
    except ToolFormatMissing as e:
        n = sum(uses_tools([r]) for r in records)
        logger.warning("%d tool-calling record(s) are dropped (rejects.jsonl, stage encode): %s", n, e)
        return "unsupported", (lambda r: SKIP_REASON if uses_tools([r]) else None)


def ensure_tool_template(tokenizer, records: Iterable[Record]) -> str | None:
    """Make sure the tokenizer's template renders the records' tool use.

    Returns None when no record uses tools or the template renders them natively, "hermes" when
    the ChatML template (plain, or with a default system prompt as SmolLM2's) was replaced by
    `hermes_chatml_template(default)`, checked to render chats without tools exactly as before.
    Raises `IceburgError` for a template that can render neither."""
    if not uses_tools(records) or renders_tools(tokenizer):
        return None
    default = _chatml_default_system(tokenizer)
    original = tokenizer.chat_template
    if default is not None and isinstance(original, str):
        tokenizer.chat_template = hermes_chatml_template(default)
        if _renders_like(tokenizer, original):
            logger.warning("the base's ChatML template cannot render tool calls: using the Hermes-style ChatML "
                           "tool template%s (docs/tools.md); it is saved with the fine-tuned tokenizer",
                           " with its default system prompt" if default else "")
            return "hermes"
        tokenizer.chat_template = original
    raise ToolFormatMissing(
        "the training data has tool calls, but the base model's chat template does not render them (a "
        "probe conversation's call and result vanish from the text) and it is not ChatML, so there is no "
        "tool format this model knows; choose a base whose template supports tools (Llama 3.1/3.2, "
        "Qwen2.5/3, Hermes, Mistral Nemo; docs/tools.md) or drop the tool-calling records")


def check_calls_rendered(text: str, spans: list[tuple[int, int]], messages: list[dict[str, Any]],
                         where: str) -> None:
    """Every call of every assistant turn must lie in that turn's supervised span (its name and its
    string arguments), so a template that drops or moves calls cannot train silently without them."""
    turns = [m for m in messages if m["role"] == "assistant"]
    for m, (a, b) in zip(turns, spans):
        _check_turn(text[a:b], m, where)


def _check_turn(span_text: str, message: dict[str, Any], where: str) -> None:
    for call in message.get("tool_calls", ()):
        fn = call["function"]
        missing = [fn["name"]] if fn["name"] not in span_text else []
        missing += [v for v in fn["arguments"].values() if isinstance(v, str) and v not in span_text
                    and v.encode("unicode_escape").decode() not in span_text]
        if missing:
            raise IceburgError(f"{where}: the chat template does not write tool call {fn['name']!r} into the "
                               f"assistant turn (missing {missing[:3]}); the call would not be learned")


def render_with_tools(spans_fn, tokenizer, record: Record):
    """`spans_fn(tokenizer, messages)` (encoding.assistant_spans) with the record's `tools=`; for
    records with calls, checks every call landed in its turn's span and turns a template's refusal
    (Llama 3.x: "only supports single tool-calls at once") into an error naming the record."""
    from jinja2.exceptions import TemplateError

    calls = any(m.get("tool_calls") for m in record.messages)
    try:
        text, spans = spans_fn(bind_tools(tokenizer, record.tools), record.messages)
    except TemplateError as e:
        if not calls:
            raise
        raise IceburgError(f"{record.id}: the chat template refuses this tool-calling conversation: {e}") from e
    if calls:
        check_calls_rendered(text, spans, record.messages, record.id)
    return text, spans



def call_hole(text: str, other: str, span: tuple[int, int], token_starts: list[int], mode: str) -> tuple[int, int]:
    """The characters of a turn's call text that `--supervise-tool-calls mode` leaves unsupervised, in
    `text` (the turn as trained), given `other` (the same turn with its calls removed, "none", or one
    call's arguments emptied, "name") and `span` = [a, b) where the two differ (`reasoning.text_diff`).

    - "name", arguments that are a JSON object (Llama 3.x `"parameters"`, Qwen/Hermes `"arguments"`,
      gpt-oss's message, Mistral's `[TOOL_CALLS]`): `other` writes `{}`, so the difference is the
      object's inside; its braces are added.
    - Text written only with the calls (or only with arguments: Qwen3.5's `<parameter=...>` blocks)
      can be cut at several places that read the same where it borders repeated characters
      (`<tool_call>` before `<|im_end|>`, `>\n<` in Qwen3.5): the one nearest the difference whose
      ends are both token starts is taken, so no stray piece of the call (a lone `<`) trains.
    - "name": the token holding the arguments' first character is theirs (Llama 3's ` {"` starts with
      the template's space), so the hole starts at that token.
    """
    a, b = span
    starts = set(token_starts) | {len(text)}
    if mode == "name" and other[a - 1:a + 1] == "{}" and text[b:b + 1] == "}":
        a, b = a - 1, b + 1
    elif len(text) - len(other) == b - a:
        a, b = _token_aligned(text, a, b, starts)
    return (max((s for s in starts if s <= a), default=a) if mode == "name" else a), b


def _token_aligned(text: str, a: int, b: int, starts: set[int]) -> tuple[int, int]:
    """The inserted text [a, b) moved (where the characters it passes repeat) to the nearest place
    whose ends are both token starts; unmoved when there is none."""
    left = right = 0
    while a - left > 0 and text[a - left - 1] == text[b - left - 1]:
        left += 1
    while b + right < len(text) and text[a + right] == text[b + right]:
        right += 1
    for k in sorted(range(-left, right + 1), key=abs):
        if a + k in starts and b + k in starts:
            return a + k, b + k
    return a, b
