"""Ollama's `think: false` as the chat template's `enable_thinking=False` mode, proven with Go.

Several templates have a thinking switch: Qwen3 and Qwen3.5 close an empty think block in the
generation prompt, llama.cpp's R1-Distill-Qwen template closes the opened one, SmolLM3 switches its
whole system block to `Reasoning Mode: /no_think` and writes an empty think block into every
assistant turn. Ollama passes a template the request's `think` option as `.Think` and whether it was
given as `.IsThinkSet` (template/template.go Values). The exported TEMPLATE keeps the template's
default mode unless the request says `think: false`:

    {{ if and .IsThinkSet (not .Think) }}<off-mode TEMPLATE>{{ else }}<default TEMPLATE>{{ end }}

The off-mode TEMPLATE is found like the default one, by behaviour: the default TEMPLATE with the
text the off-mode generation prompt adds (Qwen3, Qwen3.5, R1), or, for a turn family, the family
relearned from the off-mode rendering with that text after every assistant header (SmolLM3). It is
used only when Go renders every probe (and every tool probe the default TEMPLATE handles) exactly
as `apply_chat_template(..., enable_thinking=False)` does, with `think: false`, while `think: true`
and no `think` still give the default rendering.
"""

from __future__ import annotations

import copy
from typing import Callable

from .chat_templates import FAMILIES, Probe, TemplateMatch, build_probes, go_literal, go_render
from .tool_templates import PROBE_TOOLS, TOOL_PROBE_CHATS, _go_message, same_modulo_json

Render = Callable[..., str]  # (messages, tools=None) -> text with the generation prompt
_MARK = "@@iceburg-think-probe@@"


def _strip_bos(text: str, bos: str | None, runtime_adds_bos: bool) -> str:
    return text[len(bos):] if bos and runtime_adds_bos and text.startswith(bos) else text


def _candidates(match: TemplateMatch, default: str, extra: str, render_off: Render, tokens: dict) -> list[tuple[str, str]]:
    """Off-mode TEMPLATEs to try: the default one with `extra` after its generation prompt, and for a
    turn family the family relearned from the off-mode rendering (its assistant header + `extra`)."""
    out = [("generation prompt", default + go_literal(extra))]
    family = next((f for f in FAMILIES if f.name == match.family), None)
    if family is not None and "turns" in match.params:
        params = copy.deepcopy(family.infer(render_off, tokens))
        if params.get("turns"):
            opener, closer = params["turns"]["assistant"]
            params["turns"]["assistant"] = (opener + extra, closer)
            prefix = go_literal(tokens["bos"]) if match.bos_in_template and tokens.get("bos") else ""
            out.append(("every assistant turn", prefix + family.go(params)))
    return out


def _cases(template: str, probes: list[Probe], tool_cases: list[tuple[str, list[dict], str]], think: bool | None) -> list[dict]:
    cases = [{"template": template, "system": p.modelfile_system, "messages": p.messages, "tools": [], "think": think}
             for p in probes]
    return cases + [{"template": template, "system": "", "messages": [_go_message(m) for m in chat],
                     "tools": PROBE_TOOLS, "think": think} for _, chat, _ in tool_cases]


def _tool_cases(render: Render, names: list[str], bos: str | None, adds_bos: bool) -> list[tuple[str, list[dict], str]]:
    return [(n, TOOL_PROBE_CHATS[n], _strip_bos(render(TOOL_PROBE_CHATS[n], PROBE_TOOLS), bos, adds_bos)) for n in names]


def _matches(results: list[dict], expected: list[str], n_plain: int) -> bool:
    return all(not r["error"] and (r["output"] == e if i < n_plain else same_modulo_json(e, r["output"])[0])
               for i, (r, e) in enumerate(zip(results, expected)))


def think_switch(match: TemplateMatch, default: str, render: Render, render_off: Render, tokens: dict, system: str,
                 runtime_adds_bos: bool, tool_probes: list[str]) -> dict:
    """{"supported", "status", and when supported "go_template"}: the default TEMPLATE (`default`, the
    plain or tool one, proven already) extended with the template's `enable_thinking=False` mode."""
    bos = tokens.get("bos")
    on, off = (r([{"role": "user", "content": _MARK}]) for r in (render, render_off))
    if on == off:
        return {"supported": False, "status": "no thinking switch (enable_thinking=False renders the same prompt)"}
    on_tail, off_tail = (t.rsplit(_MARK, 1)[-1] for t in (on, off))  # what follows the user text
    if not off_tail.startswith(on_tail):
        return {"supported": False, "status": "enable_thinking=False changes the end of the prompt in a way no "
                "off-mode TEMPLATE here writes, so Ollama's think: false is not translated"}
    extra = off_tail[len(on_tail):]
    probes_off, _, _ = build_probes(render_off, system, bos, runtime_adds_bos)
    tools_on, tools_off = (_tool_cases(r, tool_probes, bos, runtime_adds_bos) for r in (render, render_off))
    expected_on = [p.expected for p in match.probes] + [t for *_, t in tools_on]
    expected_off = [p.expected for p in probes_off] + [t for *_, t in tools_off]
    for label, off_template in _candidates(match, default, extra, render_off, tokens):
        switch = "{{ if and .IsThinkSet (not .Think) }}" + off_template + "{{ else }}" + default + "{{ end }}"
        cases = (_cases(switch, probes_off, tools_off, False) + _cases(switch, match.probes, tools_on, True)
                 + _cases(switch, match.probes, tools_on, None))
        results = go_render(cases)
        if results is None:
            return {"supported": False, "status": "think: false not verified (go not found), so it is not translated"}
        n_off = len(expected_off)
        if (_matches(results[:n_off], expected_off, len(probes_off))
                and _matches(results[n_off:n_off + len(expected_on)], expected_on, len(match.probes))
                and _matches(results[n_off + len(expected_on):], expected_on, len(match.probes))):
            return {"supported": True, "go_template": switch, "variant": label,
                    "status": f"verified: think: false renders as enable_thinking=False ({label}) on {n_off} probe "
                              f"chats, think: true and no think as the default on {2 * len(expected_on)}"}
    return {"supported": False, "status": "no off-mode TEMPLATE renders the enable_thinking=False probes, so "
            "Ollama's think: false is not translated (the default mode is used)"}

