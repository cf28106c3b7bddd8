"""Ollama TEMPLATEs that handle tools (`.Tools`, a message's `.ToolCalls`, `tool` results), proven.

`chat_templates.match_family` identifies a model's chat family from conversations without tools.
For the families whose Jinja template has a tool format, this module holds a Go template that also
renders Ollama's `.Tools` (the request's function definitions), assistant `.ToolCalls` and `tool`
messages the way the model's own template does with `apply_chat_template(..., tools=...)`:

- `chatml` (Qwen2.5 and iceburg's Hermes-style ChatML tool template, `training/tool_render.py`):
  definitions as JSON lines in `<tools></tools>` in the system turn, calls as `<tool_call>` blocks,
  results as `<tool_response>` blocks in a user turn (Qwen2.5-7B-Instruct's template).
- `llama3-header` (Llama 3.1/3.2/3.3 Instruct): "Environment: ipython" in the system header, the
  definitions (`tojson(indent=4)`) and instructions opening the first user message, a call as
  `{"name": ..., "parameters": ...}`, results in the `ipython` role as a JSON string; one call per
  turn (the template raises on more).
- `chatml` again, variant `qwen3` (Qwen3): as Qwen2.5, and a tool-calling turn after the last user
  message keeps its reasoning (`.Thinking`) in a `<think>` block; earlier turns drop it.
- `chatml-block` (Qwen3.5): definitions as JSON lines with XML-call instructions, the system text
  after them; calls as `<function=NAME>` with one `<parameter=KEY>` per argument (values as Python's
  `str`: True/False/None, objects and lists as JSON); every turn after the last user message opens
  with a think block holding `.Thinking` (empty when none). Ollama hands a template a call's
  arguments as a Go map, which `range` walks in key order: arguments whose names are not in key
  order are written in another order than Hugging Face's (insertion order) and than training.
- `granite` (Granite 4): Hermes-style definitions after the system text (replacing the default
  system prompt), `<tool_call>` JSON, `<tool_response>` blocks.
- `ministral3` (Ministral 3): `[AVAILABLE_TOOLS]` + the definitions as one JSON list,
  `[TOOL_CALLS]NAME[ARGS]{json}` per call, `[TOOL_RESULTS]...[/TOOL_RESULTS]`.
A family may hold several variants; the first the Go check proves is used. `harmony` (gpt-oss) has
none: why is in `TOOL_GAPS`; SmolLM3's template has no tool format.

Proof: the Go template is rendered with Go's text/template (the helper emulates Ollama's values:
`.Tools` as api.Tool, `.ToolCalls` as api.ToolCall) on probe chats with tools and compared with
the Jinja rendering. JSON inside the text is compared as data: Ollama prints arguments and
definitions with Go's encoding/json (compact, keys sorted) while Hugging Face's `tojson` writes
`", "` / `": "` separators in insertion order, so the bytes of a JSON value differ while the value
is the same; everything outside JSON values must be equal byte for byte. The Go template must also
still render the family's plain probes byte for byte. A family without a tool format, a template
that does not render tools, or a failed proof leaves the TEMPLATE without tool support and the
export report says so.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

from ..data.tool_calls import renders_tools
from .chat_templates import TemplateMatch, go_literal, go_render

logger = logging.getLogger(__name__)

ToolRender = Callable[[list[dict], "list[dict] | None"], str]  # (messages, tools) -> text + generation prompt

def _lit(text: str) -> str:
    return go_literal(text) if text else ""


_SYS0 = '(and .Messages (eq (index .Messages 0).Role "system"))'
_NEXT_NOT_TOOL = '(or (eq (len (slice $.Messages $i)) 1) (ne (index (slice $.Messages $i) 1).Role "tool"))'
_HERMES_INSTRUCTIONS = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with "
    "function signatures within <tools></tools> XML tags:\n<tools>")
_HERMES_FORMAT = ('\n</tools>\n\nFor each function call, return a json object with function name and arguments '
                  'within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": '
                  "<args-json-object>}\n</tool_call><|im_end|>\n")


# Qwen2.5 / Hermes: "<|im_start|>assistant", then "\n" + content unless a call-only turn, then each call.
_HERMES_ASSISTANT = ("{{ if or $m.Content (not $m.ToolCalls) }}\n{{ $m.Content }}{{ end }}"
                     '{{ range $m.ToolCalls }}\n<tool_call>\n{"name": "{{ .Function.Name }}", "arguments": '
                     "{{ json .Function.Arguments }}}\n</tool_call>{{ end }}")
# Qwen3: "\n", the reasoning of a turn after the last user message (a tool loop) in a think block, the
# content, then the calls ("\n" before each but a first one that follows no content). The think tags
# are template text around `.Thinking`, where Ollama reads its thinking tags from (thinking.InferTags).
_QWEN3_ASSISTANT = ("\n{{ if and (gt $i $lastUser) $m.Thinking }}<think>\n{{ $m.Thinking }}\n</think>\n\n{{ end }}"
                    "{{ $m.Content }}{{ range $j, $c := $m.ToolCalls }}{{ if or $j $m.Content }}\n{{ end }}"
                    '<tool_call>\n{"name": "{{ $c.Function.Name }}", "arguments": {{ json $c.Function.Arguments }}}'
                    "\n</tool_call>{{ end }}")
# The index of the last user message (Qwen3's and Qwen3.5's "last query"; Go has no reverse loop).
_LAST_USER = '{{ $lastUser := -1 }}{{ range $i, $m := .Messages }}{{ if eq $m.Role "user" }}{{ $lastUser = $i }}{{ end }}{{ end }}'


def _qwen3_tools_go(p: dict) -> str:
    return _LAST_USER + _chatml_tools_go(p, _QWEN3_ASSISTANT)


def _chatml_tools_go(p: dict, assistant: str = _HERMES_ASSISTANT) -> str:
    # A run of tool results opens one user turn: `$prev` holds the previous role (Go templates have
    # no arithmetic to look one message back); the look-ahead slices from the current message.
    default = p.get("default_system") or ""
    sys_text = f"{{{{ if {_SYS0} }}}}{{{{ (index .Messages 0).Content }}}}\n\n" + (
        f"{{{{ else }}}}{go_literal(default)}\n\n" if default else "") + "{{ end }}"
    plain_sys = (f"{{{{ else if {_SYS0} }}}}<|im_start|>system\n{{{{ (index .Messages 0).Content }}}}<|im_end|>\n"
                 + (f"{{{{ else }}}}<|im_start|>system\n{go_literal(default)}<|im_end|>\n" if default else ""))
    return (
        "{{ if .Tools }}<|im_start|>system\n" + sys_text + go_literal(_HERMES_INSTRUCTIONS)
        + "{{ range .Tools }}\n{{ json . }}{{ end }}" + go_literal(_HERMES_FORMAT) + plain_sys + "{{ end }}"
        '{{ $prev := "" }}{{ range $i, $m := .Messages }}'
        '{{ if or (eq $m.Role "user") (and (eq $m.Role "system") (ne $i 0)) }}'
        "<|im_start|>{{ $m.Role }}\n{{ $m.Content }}<|im_end|>\n"
        '{{ else if eq $m.Role "assistant" }}<|im_start|>assistant' + assistant + "<|im_end|>\n"
        '{{ else if eq $m.Role "tool" }}{{ if ne $prev "tool" }}<|im_start|>user{{ end }}'
        "\n<tool_response>\n{{ $m.Content }}\n</tool_response>"
        f"{{{{ if {_NEXT_NOT_TOOL} }}}}<|im_end|>\n{{{{ end }}}}"
        "{{ end }}{{ $prev = $m.Role }}{{ end }}<|im_start|>assistant\n")


_QWEN35_INSTRUCTIONS = (
    "\n</tools>\n\nIf you choose to call a function ONLY reply in the following format with NO suffix:\n\n"
    "<tool_call>\n<function=example_function_name>\n<parameter=example_parameter_1>\nvalue_1\n</parameter>\n"
    "<parameter=example_parameter_2>\nThis is the value for the second parameter\nthat can span\nmultiple lines\n"
    "</parameter>\n</function>\n</tool_call>\n\n<IMPORTANT>\nReminder:\n- Function calls MUST follow the specified "
    "format: an inner <function=...></function> block must be nested within <tool_call></tool_call> XML tags\n"
    "- Required parameters MUST be specified\n- You may provide optional reasoning for your function call in "
    "natural language BEFORE the function call, but NOT after\n- If there is no function call available, answer "
    "the question like normal with your current knowledge and do not tell the user about function calls\n</IMPORTANT>")
# An argument value as Qwen3.5's template writes it (`value | string`, objects and lists `tojson`):
# Ollama hands a template the decoded JSON (Go bool, nil, float64, string, map, slice), told apart with
# the builtin `printf "%T"`; Python writes True/False/None.
_QWEN35_VALUE = ('{{ $t := printf "%T" $v }}{{ if eq $t "bool" }}{{ if $v }}True{{ else }}False{{ end }}'
                 '{{ else if eq $t "<nil>" }}None{{ else if or (eq $t "map[string]interface {}") (eq $t "[]interface {}") }}'
                 "{{ json $v }}{{ else }}{{ $v }}{{ end }}")


def _qwen35_tools_go(p: dict) -> str:
    """Qwen3.5: definitions as JSON lines in `<tools>` with XML-call instructions, the system text after
    them; every assistant turn after the last user message opens with a think block (empty when it has
    no reasoning); calls as `<function=NAME>` with one `<parameter=KEY>` per argument (Ollama ranges a
    call's arguments in key order: Go map); results in `<tool_response>` blocks of one user turn."""
    plain = _plain_system(p)
    call = ("{{ range $j, $c := $m.ToolCalls }}{{ if $j }}\n{{ else if $m.Content }}\n\n{{ end }}<tool_call>\n"
            "<function={{ $c.Function.Name }}>\n{{ range $k, $v := $c.Function.Arguments }}<parameter={{ $k }}>\n"
            + _QWEN35_VALUE + "\n</parameter>\n{{ end }}</function>\n</tool_call>{{ end }}")
    return (
        _LAST_USER + "{{ if .Tools }}<|im_start|>system\n# Tools\n\nYou have access to the following functions:\n\n"
        "<tools>{{ range .Tools }}\n{{ json . }}{{ end }}" + go_literal(_QWEN35_INSTRUCTIONS)
        + f"{{{{ if {_SYS0} }}}}\n\n{{{{ (index .Messages 0).Content }}}}{{{{ end }}}}<|im_end|>\n" + plain + "{{ end }}"
        '{{ $prev := "" }}{{ range $i, $m := .Messages }}'
        '{{ if eq $m.Role "user" }}<|im_start|>user\n{{ $m.Content }}<|im_end|>\n'
        '{{ else if eq $m.Role "assistant" }}<|im_start|>assistant\n'
        "{{ if gt $i $lastUser }}<think>\n{{ $m.Thinking }}\n</think>\n\n{{ end }}{{ $m.Content }}" + call + "<|im_end|>\n"
        '{{ else if eq $m.Role "tool" }}{{ if ne $prev "tool" }}<|im_start|>user{{ end }}'
        "\n<tool_response>\n{{ $m.Content }}\n</tool_response>"
        f"{{{{ if {_NEXT_NOT_TOOL} }}}}<|im_end|>\n{{{{ end }}}}"
        "{{ end }}{{ $prev = $m.Role }}{{ end }}" + _lit(p["gen"]))


_GRANITE_TOOLS_PREFIX = (
    "You are a helpful assistant with access to the following tools. You may call one or more tools to assist with "
    "the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>")
_GRANITE_TOOLS_SUFFIX = (
    '\n</tools>\n\nFor each tool call, return a json object with function name and arguments within '
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call>. If a tool does not exist in the provided list of tools, notify the user that you do not have the "
    "ability to fulfill the request.")


def _plain_system(p: dict) -> str:
    """The turn family's learned system block (chat_templates._turns_go) as an `else if` branch."""
    return (f"{{{{ else if {_SYS0} }}}}" + _lit(p["sys_open"]) + "{{ (index .Messages 0).Content }}" + _lit(p["sys_close"])
            + "{{ else }}" + _lit(p["default"]))


def _granite_tools_go(p: dict) -> str:
    """Granite 4: the definitions (JSON lines in `<tools>`) follow the system text in the system turn
    (and replace the default system prompt); calls as Hermes `<tool_call>` JSON after the content;
    results in `<tool_response>` blocks of one user turn."""
    return (
        "{{ if .Tools }}<|start_of_role|>system<|end_of_role|>" + f"{{{{ if {_SYS0} }}}}{{{{ (index .Messages 0).Content }}}}"
        "\n\n{{ end }}" + go_literal(_GRANITE_TOOLS_PREFIX) + "{{ range .Tools }}\n{{ json . }}{{ end }}"
        + go_literal(_GRANITE_TOOLS_SUFFIX) + "<|end_of_text|>\n" + _plain_system(p) + "{{ end }}"
        '{{ $prev := "" }}{{ range $i, $m := .Messages }}'
        '{{ if or (eq $m.Role "user") (and (eq $m.Role "system") (ne $i 0)) }}'
        "<|start_of_role|>{{ $m.Role }}<|end_of_role|>{{ $m.Content }}<|end_of_text|>\n"
        '{{ else if eq $m.Role "assistant" }}<|start_of_role|>assistant<|end_of_role|>{{ $m.Content }}'
        "{{ range $j, $c := $m.ToolCalls }}{{ if or $j $m.Content }}\n{{ end }}"
        '<tool_call>\n{"name": "{{ $c.Function.Name }}", "arguments": {{ json $c.Function.Arguments }}}\n</tool_call>'
        "{{ end }}<|end_of_text|>\n"
        '{{ else if eq $m.Role "tool" }}{{ if ne $prev "tool" }}<|start_of_role|>user<|end_of_role|>{{ end }}'
        "\n<tool_response>\n{{ $m.Content }}\n</tool_response>"
        f"{{{{ if {_NEXT_NOT_TOOL} }}}}<|end_of_text|>\n{{{{ end }}}}"
        "{{ end }}{{ $prev = $m.Role }}{{ end }}" + _lit(p["gen"]))


def _ministral3_tools_go(p: dict) -> str:
    """Ministral 3: the definitions as one JSON list in `[AVAILABLE_TOOLS]` after the system block;
    each call `[TOOL_CALLS]NAME[ARGS]{json}` after the content, then EOS; results `[TOOL_RESULTS]`."""
    (u_open, u_close), (a_open, a_close) = p["turns"]["user"], p["turns"]["assistant"]
    return (
        f"{{{{ if {_SYS0} }}}}" + _lit(p["sys_open"]) + "{{ (index .Messages 0).Content }}" + _lit(p["sys_close"])
        + "{{ else }}" + _lit(p["default"]) + "{{ end }}"
        "{{ if .Tools }}[AVAILABLE_TOOLS]{{ json .Tools }}[/AVAILABLE_TOOLS]{{ end }}"
        '{{ range $i, $m := .Messages }}{{ if eq $m.Role "user" }}' + _lit(u_open) + "{{ $m.Content }}" + _lit(u_close)
        + '{{ else if eq $m.Role "assistant" }}' + _lit(a_open) + "{{ $m.Content }}"
        "{{ range $m.ToolCalls }}[TOOL_CALLS]{{ .Function.Name }}[ARGS]{{ json .Function.Arguments }}{{ end }}" + _lit(a_close)
        + '{{ else if eq $m.Role "tool" }}[TOOL_RESULTS]{{ $m.Content }}[/TOOL_RESULTS]{{ end }}{{ end }}' + _lit(p["gen"]))


_L3_SYS = "<|start_header_id|>system<|end_header_id|>\n\n"
_L3_TOOL_INTRO = (
    "<|start_header_id|>user<|end_header_id|>\n\nGiven the following functions, please respond with a JSON for a "
    "function call with its proper arguments that best answers the given prompt.\n\nRespond in the format "
    '{"name": function name, "parameters": dictionary of argument name and its value}.Do not use variables.\n\n')


def _llama3_tools_go(p: dict) -> str:
    # $f: index of the first non-system message, which the template opens with the tool definitions.
    return (
        _L3_SYS + "{{ if .Tools }}Environment: ipython\n{{ end }}" + go_literal(p["system_header"])
        + f"{{{{ $f := 0 }}}}{{{{ if {_SYS0} }}}}{{{{ (index .Messages 0).Content }}}}{{{{ $f = 1 }}}}{{{{ end }}}}<|eot_id|>"
        "{{ if .Tools }}" + go_literal(_L3_TOOL_INTRO) + "{{ range .Tools }}{{ json . }}\n\n{{ end }}"
        "{{ (index .Messages $f).Content }}<|eot_id|>{{ end }}"
        "{{ range $i, $m := .Messages }}"
        '{{ if not (or (and (eq $i 0) (eq $m.Role "system")) (and $.Tools (eq $i $f))) }}'
        "{{ if $m.ToolCalls }}{{ with index $m.ToolCalls 0 }}<|start_header_id|>assistant<|end_header_id|>\n\n"
        '{"name": "{{ .Function.Name }}", "parameters": {{ json .Function.Arguments }}}<|eot_id|>{{ end }}'
        '{{ else if eq $m.Role "tool" }}<|start_header_id|>ipython<|end_header_id|>\n\n{{ json $m.Content }}<|eot_id|>'
        "{{ else }}<|start_header_id|>{{ $m.Role }}<|end_header_id|>\n\n{{ $m.Content }}<|eot_id|>{{ end }}"
        "{{ end }}{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n")


# family -> its tool variants, tried in order (the first that Go proves is used): (variant, Go template
# builder, probe names it supports). The think probes carry reasoning on the assistant turns of a tool
# loop: where the template keeps it (Qwen3 and Qwen3.5 after the last user message, gpt-oss's analysis
# of a call) and where it strips it (every earlier turn; Qwen2.5, Hermes and Llama 3 never write it).
_ALL = ("tools-offered", "call-and-result", "full-exchange", "content-and-call", "parallel-calls",
        "think-call-and-result", "think-full-exchange")
ToolVariant = tuple[str, Callable[[dict], str], tuple[str, ...]]
TOOL_FAMILIES: dict[str, list[ToolVariant]] = {
    "chatml": [("hermes", _chatml_tools_go, _ALL), ("qwen3", _qwen3_tools_go, _ALL)],
    # Llama 3.x templates refuse parallel calls and drop the text of a turn that calls a tool.
    "llama3-header": [("llama3", _llama3_tools_go, ("tools-offered", "call-and-result", "full-exchange",
                                                    "think-call-and-result", "think-full-exchange"))],
    # Qwen3.5 (SmolLM3, the other chatml-block model, has no tool format)
    "chatml-block": [("qwen3.5", _qwen35_tools_go, _ALL)],
    "granite": [("granite4", _granite_tools_go, _ALL)],
    "ministral3": [("ministral3", _ministral3_tools_go, _ALL)],
}

# Families with a tool format but no TEMPLATE for it, and why (docs/export_ollama_onnx.md).
TOOL_GAPS = {
    "harmony": ("gpt-oss writes the definitions as a TypeScript namespace built from each parameter's JSON schema "
                "(types, enums, nested objects, defaults) and keeps a call's analysis only until a later final "
                "answer; a TEMPLATE would have to walk Ollama's typed api.ToolFunctionParameters, whose Go shape "
                "differs between Ollama releases and is not what the Go check here emulates (Ollama serves gpt-oss "
                "with its built-in harmony renderer instead)"),
}

# ---------------------------------------------------------------- probes

PROBE_TOOLS = [
    {"type": "function", "function": {
        "name": "web_search", "description": 'Search the web; returns "title", url and snippet (naïve ✓).',
        "parameters": {"type": "object", "properties": {
            "query": {"type": "string", "description": "Search terms"},
            "max_results": {"type": "integer", "description": "How many results"}}, "required": ["query"]}}},
    {"type": "function", "function": {
        "name": "calculator", "description": "Evaluate an arithmetic expression.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}},
]


def _call(name: str, **args: Any) -> dict:
    return {"type": "function", "function": {"name": name, "arguments": args}}


_SYS = {"role": "system", "content": "You are a careful research agent."}
_U = {"role": "user", "content": 'Boiling point of water at 2,000 m, in "°C"?'}
# Arguments in key order: Ollama hands a template a call's arguments as a Go map, which `range` walks in
# key order (templates that write each argument, Qwen3.5's, follow it; JSON is compared as data).
_CALL = {"role": "assistant", "content": "", "tool_calls": [_call("web_search", max_results=3, query='boiling point "altitude" 2000 m')]}
# `<`, `>` and `&` are escaped by Go's encoding/json (\u003c ...) but not by Jinja's tojson.
_RESULT = {"role": "tool", "name": "web_search",
           "content": '[{"title": "Boiling point vs altitude", "snippet": "93.4 °C at 2,000 m <b>&</b>"}]'}
_ANSWER = {"role": "assistant", "content": "About 93 °C.\nAir pressure is lower there."}
# Reasoning as Ollama hands it back (`thinking`) and as Hugging Face clients pass it (`reasoning_content`:
# Qwen3, Qwen3.5; `thinking`: gpt-oss); each template reads the field it knows.
_R_CALL, _R_ANSWER = "The user wants a number; search first.", "The search says 93.4 °C; round it."
_THINK_CALL = {**_CALL, "thinking": _R_CALL, "reasoning_content": _R_CALL}
_THINK_ANSWER = {**_ANSWER, "thinking": _R_ANSWER, "reasoning_content": _R_ANSWER}
TOOL_PROBE_CHATS: dict[str, list[dict]] = {
    "tools-offered": [_U],
    "call-and-result": [_U, _CALL, _RESULT],
    "full-exchange": [_SYS, _U, _CALL, _RESULT, _ANSWER, {"role": "user", "content": "And at sea level? {{ .System }}"}],
    "content-and-call": [_SYS, _U, {**_CALL, "content": "Let me check."}, _RESULT],
    "parallel-calls": [_U, {"role": "assistant", "content": "", "tool_calls": [
        _call("calculator", expression="100 - 0.0033 * 2000"),
        # an object, a boolean and a null argument: Qwen3.5 writes them as tojson / True / None
        _call("web_search", filters={"lang": "en", "years": [2020, 2024]}, query="boiling point altitude", safe=True,
              site=None)]},
        {"role": "tool", "name": "calculator", "content": "93.4"}, {**_RESULT, "content": "no results"}],
    "think-call-and-result": [_U, _THINK_CALL, _RESULT],
    "think-full-exchange": [_SYS, _U, _THINK_CALL, _RESULT, _THINK_ANSWER, {"role": "user", "content": "And at sea level?"}],
}


def _go_message(m: dict) -> dict:
    """A message as Ollama's API carries it (`tool_name`, `tool_calls`)."""
    out = {"role": m["role"], "content": m["content"]}
    if m.get("thinking"):
        out["thinking"] = m["thinking"]
    if m.get("tool_calls"):
        out["tool_calls"] = [{"function": c["function"]} for c in m["tool_calls"]]
    if m["role"] == "tool" and m.get("name"):
        out["tool_name"] = m["name"]
    return out


# ---------------------------------------------------------------- comparison


def same_modulo_json(a: str, b: str) -> tuple[bool, int]:
    """Equal byte for byte outside JSON values, and JSON values equal as data. Returns (equal, the
    offset in `a` of the first difference or -1)."""
    dec = json.JSONDecoder()
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i] in "{[\"" and b[j] == a[i]:
            try:
                va, ei = dec.raw_decode(a, i)
                vb, ej = dec.raw_decode(b, j)
            except json.JSONDecodeError:
                va = vb = None
                ei = ej = -1
            if ei > 0 and ej > 0 and va == vb:
                i, j = ei, ej
                continue
        if a[i] != b[j]:
            return False, i
        i, j = i + 1, j + 1
    return (i == len(a) and j == len(b)), (-1 if i == len(a) and j == len(b) else i)


# ---------------------------------------------------------------- the export step


def tool_template(match: TemplateMatch, render: ToolRender, has_tool_format: bool, bos: str | None,
                  runtime_adds_bos: bool) -> dict:
    """The tool-capable TEMPLATE for `match`'s family, proven with Go, or why there is none.

    Returns {"supported", "status", and when supported "go_template", "probes"}; never raises for
    a missing tool format (a model without one is still exported, without tool support)."""
    if not has_tool_format:
        return {"supported": False, "status": "the model's chat template has no tool format (tool calls and "
                "results vanish from its rendering), so the Modelfile TEMPLATE has no .Tools support"}
    family = TOOL_FAMILIES.get(match.family)
    if family is None:
        why = TOOL_GAPS.get(match.family, "iceburg has no Ollama tool template for it")
        return {"supported": False, "status": f"family {match.family!r}: {why}, so the Modelfile TEMPLATE has no "
                ".Tools support (the GGUF's Jinja template still has it: llama-server --jinja)"}
    first: dict | None = None
    for variant in family:
        res = _prove_variant(match, render, variant, bos, runtime_adds_bos)
        if res["supported"] or res.get("unverified"):
            return res
        first = first or res
    assert first is not None
    logger.warning("ollama: tool template for %s failed on %d probes: %s", match.family, len(first["mismatches"]),
                   first["mismatches"][0])
    return first


def _prove_variant(match: TemplateMatch, render: ToolRender, variant: ToolVariant, bos: str | None,
                   runtime_adds_bos: bool) -> dict:
    """Render the variant's Go template on its tool probes and the family's plain probes; compare."""
    label, build, names = variant
    prefix = go_literal(bos) if match.bos_in_template and bos else ""
    go = prefix + build(match.params)
    cases, expected = [], []
    for name in names:
        chat = TOOL_PROBE_CHATS[name]
        text = render(chat, PROBE_TOOLS)
        if bos and runtime_adds_bos and text.startswith(bos):
            text = text[len(bos):]
        cases.append({"template": go, "system": "", "messages": [_go_message(m) for m in chat], "tools": PROBE_TOOLS})
        expected.append((name, text))
    for p in match.probes:  # the tool template must still render plain chats exactly
        cases.append({"template": go, "system": p.modelfile_system, "messages": p.messages, "tools": []})
        expected.append((f"plain:{p.name}", p.expected))
    results = go_render(cases)
    if results is None:
        return {"supported": False, "unverified": True, "status": "tool template not verified (go not found: "
                "apt-get install golang-go), so the Modelfile TEMPLATE has no .Tools support"}
    mismatches = []
    for (name, exp), r in zip(expected, results):
        ok, at = (False, 0) if r["error"] else (
            (r["output"] == exp, 0) if name.startswith("plain:") else same_modulo_json(exp, r["output"]))
        if not ok:
            mismatches.append({"probe": name, "error": r["error"], "at": at, "expected": exp[max(0, at - 40):at + 80],
                               "go": r["output"][max(0, at - 40):at + 80] if not r["error"] else ""})
    if mismatches:
        return {"supported": False, "status": f"tool template for {match.family!r} ({label}) FAILED on {len(mismatches)} "
                f"of {len(cases)} probe chats, so the Modelfile TEMPLATE has no .Tools support", "mismatches": mismatches}
    n_tools = len(names)
    return {"supported": True, "variant": label, "go_template": go, "probes": [n for n, _ in expected],
            "status": f"verified ({label}): Go text/template equals apply_chat_template(tools=...) on {n_tools} tool "
                      f"probe chats (JSON values compared as data) and byte for byte on {len(cases) - n_tools} plain ones"}


def model_tool_template(tok, match: TemplateMatch, runtime_adds_bos: bool, verify: bool = True,
                        template_vars: dict | None = None) -> dict:
    """`tool_template` for an exported model's tokenizer (BOS as llama.cpp will add it)."""
    if not verify:
        return {"supported": False, "status": "tool template not verified (verification turned off), so the "
                "Modelfile TEMPLATE has no .Tools support"}

    extra = template_vars or {}  # what training rendered with (ollama.template_vars)

    def render(messages: list[dict], tools: list[dict] | None) -> str:
        return tok.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True, **extra)

    return tool_template(match, render, renders_tools(tok), tok.bos_token, runtime_adds_bos)
