"""Translate a model's Jinja chat template into an Ollama TEMPLATE, and prove the translation.

Arbitrary Jinja cannot be translated mechanically (STACK.md), so iceburg does what Ollama does
for imported GGUFs, but by behaviour instead of by string distance: it renders a set of probe
chats with the model's own template (transformers' renderer, the one training used), and picks
the known family whose Go template renders every probe identically. The proof then renders that
Go template with Go's `text/template` (the engine Ollama uses) on the same probes and compares
byte for byte. No family matching means an `ExportError`, never a probably-wrong template.

Each family below is a Go template written for Ollama's "messages" mode (`.System`, `.Messages`
with `.Role`/`.Content`; modelled on the templates in ollama/ollama `template/`) plus a Python
renderer of the same text, so a family can be identified without Go; Go re-checks it.

What Ollama hands a template (ollama/ollama server/routes.go, template/template.go): the
Modelfile SYSTEM is prepended as a system message unless the request starts with one;
consecutive same-role messages are merged with "\\n\\n"; `.System` joins all system messages;
`.Messages` keeps them. `ollama_view` below and the Go helper emulate exactly that.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import ExportError

logger = logging.getLogger(__name__)

Message = dict[str, str]
RenderFn = Callable[[list[Message]], str]  # Jinja side: messages -> text (add_generation_prompt)

NOT_VERIFIED_NO_GO = "not verified: go not found (apt-get install golang-go)"

# ---------------------------------------------------------------- what Ollama passes a template


def ollama_view(system: str, messages: list[Message]) -> tuple[str, list[Message]]:
    """(.System, .Messages) as Ollama builds them from a Modelfile SYSTEM and a chat request."""
    msgs = [dict(m) for m in messages]
    if system and (not msgs or msgs[0]["role"] != "system"):
        msgs.insert(0, {"role": "system", "content": system})
    collated: list[Message] = []
    for m in msgs:
        if collated and collated[-1]["role"] == m["role"] and m["role"] != "tool":
            collated[-1]["content"] += "\n\n" + m["content"]
        else:
            collated.append(m)
    sys_text = "\n\n".join(m["content"] for m in msgs if m["role"] == "system")
    return sys_text, collated


def sent_messages(system: str, messages: list[Message]) -> list[Message]:
    """The messages the model receives once Ollama has prepended the Modelfile SYSTEM."""
    if system and (not messages or messages[0]["role"] != "system"):
        return [{"role": "system", "content": system}, *messages]
    return list(messages)


# ---------------------------------------------------------------- the known families


def go_literal(text: str) -> str:
    """`text` as a Go template action printing it verbatim (a JSON string is a valid Go string)."""
    return "{{ " + json.dumps(text) + " }}"


@dataclass
class ChatFamily:
    name: str
    go: Callable[[dict], str]  # params -> Go template
    render: Callable[[dict, str, list[Message]], str]  # params, .System, .Messages -> text
    stops: list[str]  # turn markers the runtime must stop on (plus the tokenizer's EOS)
    infer: Callable[[RenderFn, dict], dict] = lambda render, tokens: {}  # family parameters


def _chatml_infer(render: RenderFn, tokens: dict) -> dict:
    # Qwen2.5 adds a default system turn when the chat has none; learn it from the template.
    out = render([{"role": "user", "content": "x"}])
    head, sep = "<|im_start|>system\n", "<|im_end|>\n<|im_start|>user\n"
    if out.startswith(head) and sep in out:
        return {"default_system": out[len(head):out.index(sep)]}
    return {}


def _chatml_go(p: dict) -> str:
    t = ""
    if p.get("default_system"):
        t += ('{{ if not (and .Messages (eq (index .Messages 0).Role "system")) }}<|im_start|>system\n'
              + go_literal(p["default_system"]) + "<|im_end|>\n{{ end }}")
    return t + "{{ range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"


def _chatml_render(p: dict, system: str, msgs: list[Message]) -> str:
    out = ""
    if p.get("default_system") and not (msgs and msgs[0]["role"] == "system"):
        out += f"<|im_start|>system\n{p['default_system']}<|im_end|>\n"
    out += "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in msgs)
    return out + "<|im_start|>assistant\n"


def _llama3_render(p: dict, system: str, msgs: list[Message]) -> str:
    return "".join(f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content']}<|eot_id|>" for m in msgs) \
        + "<|start_header_id|>assistant<|end_header_id|>\n\n"


def _first_user_index(msgs: list[Message]) -> int:
    return next((i for i, m in enumerate(msgs) if m["role"] == "user"), -1)


def _mistral_render(p: dict, system: str, msgs: list[Message]) -> str:
    # Mistral-7B-Instruct v0.1/v0.2 (updated): the system text opens the first user turn.
    out = ""
    for i, m in enumerate(msgs):
        if m["role"] == "user":
            prefix = f"{system}\n\n" if system and i == 1 else ""
            out += f" [INST] {prefix}{m['content']} [/INST]"
        elif m["role"] == "assistant":
            out += f" {m['content']}{p['eos']}"
    return out


def _mistral_go(p: dict) -> str:
    return ('{{ range $i, $_ := .Messages }}{{ if eq .Role "user" }} [INST] '
            '{{ if and $.System (eq $i 1) }}{{ $.System }}\n\n{{ end }}{{ .Content }} [/INST]'
            '{{ else if eq .Role "assistant" }} {{ .Content }}' + go_literal(p["eos"]) + "{{ end }}{{ end }}")


def _mistral_v01_render(p: dict, system: str, msgs: list[Message]) -> str:
    # The original Mistral-7B-Instruct-v0.1 template: no system role; the system text opens the
    # first user turn, as training folds it (training/encoding.py fold_system).
    out = ""
    for i, m in enumerate(msgs):
        if m["role"] == "user":
            prefix = f"{system}\n\n" if system and i == 1 else ""
            out += f"[INST] {prefix}{m['content']} [/INST]"
        elif m["role"] == "assistant":
            out += f"{m['content']}{p['eos']}"
    return out


def _mistral_v01_go(p: dict) -> str:
    return ('{{ range $i, $_ := .Messages }}{{ if eq .Role "user" }}[INST] '
            '{{ if and $.System (eq $i 1) }}{{ $.System }}\n\n{{ end }}{{ .Content }} [/INST]'
            '{{ else if eq .Role "assistant" }}{{ .Content }}' + go_literal(p["eos"]) + "{{ end }}{{ end }}")


def _gemma_render(p: dict, system: str, msgs: list[Message]) -> str:
    # Gemma 3: the system text opens the first user turn; Gemma 1/2 reject system messages, and
    # training folds the system text the same way (training/encoding.py fold_system).
    out = ""
    for i, m in enumerate(msgs):
        if m["role"] == "user":
            prefix = f"{system}\n\n" if system and i == 1 else ""
            out += f"<start_of_turn>user\n{prefix}{m['content']}<end_of_turn>\n"
        elif m["role"] == "assistant":
            out += f"<start_of_turn>model\n{m['content']}<end_of_turn>\n"
    return out + "<start_of_turn>model\n"


_GEMMA_GO = ('{{ range $i, $_ := .Messages }}{{ if eq .Role "user" }}<start_of_turn>user\n'
             '{{ if and $.System (eq $i 1) }}{{ $.System }}\n\n{{ end }}{{ .Content }}<end_of_turn>\n'
             '{{ else if eq .Role "assistant" }}<start_of_turn>model\n{{ .Content }}<end_of_turn>\n'
             "{{ end }}{{ end }}<start_of_turn>model\n")


_L3_SYS = "<|start_header_id|>system<|end_header_id|>\n\n"


def _llama3_header_infer(render: RenderFn, tokens: dict) -> dict:
    # Llama 3.1/3.2/3.3 always open with a system turn holding a knowledge-cutoff/date block
    # ("Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"), then the system text.
    # Llama 3.2 writes today's date (strftime_now): the Go template gets the export day's date.
    out = render([{"role": "user", "content": "x"}])
    bos = tokens.get("bos") or ""
    out = out[len(bos):] if bos and out.startswith(bos) else out
    if not out.startswith(_L3_SYS) or "<|eot_id|>" not in out:
        return {"system_header": None}
    header = out[len(_L3_SYS):out.index("<|eot_id|>")]
    return {"system_header": header or None}


def _llama3_header_render(p: dict, system: str, msgs: list[Message]) -> str:
    sys_text = msgs[0]["content"] if msgs and msgs[0]["role"] == "system" else ""
    body = msgs[1:] if msgs and msgs[0]["role"] == "system" else msgs
    return _L3_SYS + p["system_header"] + sys_text + "<|eot_id|>" + _llama3_render(p, system, body)


def _llama3_header_go(p: dict) -> str:
    return (_L3_SYS + go_literal(p["system_header"]) + '{{ if and .Messages (eq (index .Messages 0).Role "system") }}'
            "{{ (index .Messages 0).Content }}{{ end }}<|eot_id|>"
            '{{ range $i, $m := .Messages }}{{ if not (and (eq $i 0) (eq $m.Role "system")) }}'
            "<|start_header_id|>{{ $m.Role }}<|end_header_id|>\n\n{{ $m.Content }}<|eot_id|>{{ end }}{{ end }}"
            "<|start_header_id|>assistant<|end_header_id|>\n\n")


def _mistral_last_render(p: dict, system: str, msgs: list[Message]) -> str:
    # Mistral-7B-Instruct-v0.3 (sp=" ") and Mistral-Nemo-Instruct-2407 (sp=""): the system text
    # opens the LAST user turn (so it moves as the chat grows); assistant turns end with EOS.
    sp, out = p["sp"], ""
    sys_text = msgs[0]["content"] if msgs and msgs[0]["role"] == "system" else ""
    for i, m in enumerate(msgs):
        if m["role"] == "user":
            prefix = f"{sys_text}\n\n" if sys_text and i == len(msgs) - 1 else ""
            out += f"[INST]{sp}{prefix}{m['content']}[/INST]"
        elif m["role"] == "assistant":
            out += f"{sp}{m['content']}{p['eos']}"
    return out


def _mistral_last_go(p: dict) -> str:
    sp = p["sp"]
    return ('{{ range $i, $_ := .Messages }}{{ if eq .Role "user" }}[INST]' + sp
            + '{{ if and (eq (index $.Messages 0).Role "system") (eq (len (slice $.Messages $i)) 1) }}'
            "{{ (index $.Messages 0).Content }}\n\n{{ end }}{{ .Content }}[/INST]"
            '{{ else if eq .Role "assistant" }}' + sp + "{{ .Content }}" + go_literal(p["eos"]) + "{{ end }}{{ end }}")


def _phi3_render(p: dict, system: str, msgs: list[Message]) -> str:
    return "".join(f"<|{m['role']}|>\n{m['content']}<|end|>\n" for m in msgs) + "<|assistant|>\n"


# ---- turn families whose system block and generation prompt are learned from the template (issue 32)
# Fixed turn markers per family; what the template writes around the system text (SmolLM3's metadata
# block, gpt-oss's harmony header with today's date, a default system prompt when the chat has none)
# and after the last turn (Qwen3.5's opened think block) are read off two marker renderings, and the
# probes then prove every chat shape. A system message after the first has no branch here (the
# templates differ or refuse it): the Go template leaves it out, as the Python renderer does.
_SYS_MARK = "@@iceburg-system@@"


def _turns_infer(turns: dict[str, tuple[str, str]]) -> Callable[[RenderFn, dict], dict]:
    def infer(render: RenderFn, tokens: dict) -> dict:
        marks = {k: tuple(x.replace("{eos}", tokens.get("eos") or "") for x in v) for k, v in turns.items()}
        bos = tokens.get("bos") or ""
        with_sys, without = (render(m + [{"role": "user", "content": "x"}])
                             for m in ([{"role": "system", "content": _SYS_MARK}], []))
        with_sys, without = (t[len(bos):] if bos and t.startswith(bos) else t for t in (with_sys, without))
        user = marks["user"][0] + "x" + marks["user"][1]
        if _SYS_MARK not in with_sys or user not in without or user not in with_sys:
            return {"turns": None}
        sys_open, rest = with_sys.split(_SYS_MARK, 1)
        return {"turns": marks, "sys_open": sys_open, "sys_close": rest[:rest.index(user)],
                "default": without[:without.index(user)], "gen": without[without.index(user) + len(user):]}
    return infer


def _turns_render(p: dict, system: str, msgs: list[Message]) -> str:
    first_sys = bool(msgs) and msgs[0]["role"] == "system"
    out = p["sys_open"] + msgs[0]["content"] + p["sys_close"] if first_sys else p["default"]
    for m in msgs[1:] if first_sys else msgs:
        if m["role"] in p["turns"]:
            out += p["turns"][m["role"]][0] + m["content"] + p["turns"][m["role"]][1]
    return out + p["gen"]


def _lit(text: str) -> str:
    return go_literal(text) if text else ""


def _turns_go(p: dict) -> str:
    branches = " else ".join(f'if eq $m.Role "{role}" }}}}{_lit(o)}{{{{ $m.Content }}}}{_lit(c)}{{{{'
                             for role, (o, c) in p["turns"].items())
    return ('{{ if and .Messages (eq (index .Messages 0).Role "system") }}' + _lit(p["sys_open"])
            + "{{ (index .Messages 0).Content }}" + _lit(p["sys_close"]) + "{{ else }}" + _lit(p["default"])
            + '{{ end }}{{ range $i, $m := .Messages }}{{ if not (and (eq $i 0) (eq $m.Role "system")) }}{{ '
            + branches + " end }}{{ end }}{{ end }}" + _lit(p["gen"]))


def _turn_family(name: str, turns: dict[str, tuple[str, str]], stops: list[str]) -> ChatFamily:
    return ChatFamily(name, _turns_go, _turns_render, stops, _turns_infer(turns))


_CHATML_TURNS = {r: (f"<|im_start|>{r}\n", "<|im_end|>\n") for r in ("user", "assistant", "system")}
_GRANITE_TURNS = {r: (f"<|start_of_role|>{r}<|end_of_role|>", "<|end_of_text|>\n") for r in ("user", "assistant", "system")}
_HARMONY_TURNS = {"user": ("<|start|>user<|message|>", "<|end|>"),
                  "assistant": ("<|start|>assistant<|channel|>final<|message|>", "<|end|>")}
_MISTRAL3_TURNS = {"user": ("[INST]", "[/INST]"), "assistant": ("", "{eos}")}
# Gemma 4: `<|turn>user\n` / `<|turn>model\n` ... `<turn|>\n`, a `<|turn>system\n` block only when the
# chat has a system message; the generation prompt (thinking off, the template's default) holds the
# empty thought channel `<|channel>thought\n<channel|>`; an earlier answer is written without its
# reasoning (the template strips it from every turn but a kept tool-calling one).
_GEMMA4_TURNS = {"user": ("<|turn>user\n", "<turn|>\n"), "assistant": ("<|turn>model\n", "<turn|>\n")}
# DeepSeek-R1 distills (Qwen and Llama bases): BOS, the system text bare, `<｜User｜>` / `<｜Assistant｜>`
# turns; the generation prompt opens the think block (`<think>\n`); an earlier answer is written
# without its reasoning (the template cuts everything before `</think>`).
_R1_TURNS = {"user": ("<｜User｜>", ""), "assistant": ("<｜Assistant｜>", "<｜end▁of▁sentence｜>")}

FAMILIES: list[ChatFamily] = [
    ChatFamily("chatml", _chatml_go, _chatml_render, ["<|im_end|>", "<|im_start|>"], _chatml_infer),
    ChatFamily("llama3", lambda p: "{{ range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
               "{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n",
               _llama3_render, ["<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]),
    ChatFamily("llama3-header", _llama3_header_go, _llama3_header_render,
               ["<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"], _llama3_header_infer),
    ChatFamily("mistral-v0.3", _mistral_last_go, _mistral_last_render, ["[INST]", "[/INST]"],
               lambda render, tokens: {"eos": tokens["eos"], "sp": " "}),
    ChatFamily("mistral-nemo", _mistral_last_go, _mistral_last_render, ["[INST]", "[/INST]"],
               lambda render, tokens: {"eos": tokens["eos"], "sp": ""}),
    ChatFamily("mistral", _mistral_go, _mistral_render, ["[INST]", "[/INST]"],
               lambda render, tokens: {"eos": tokens["eos"]}),
    ChatFamily("mistral-v0.1", _mistral_v01_go, _mistral_v01_render, ["[INST]", "[/INST]"],
               lambda render, tokens: {"eos": tokens["eos"]}),
    ChatFamily("gemma", lambda p: _GEMMA_GO, _gemma_render, ["<end_of_turn>", "<start_of_turn>"]),
    ChatFamily("phi3", lambda p: "{{ range .Messages }}<|{{ .Role }}|>\n{{ .Content }}<|end|>\n{{ end }}<|assistant|>\n",
               _phi3_render, ["<|end|>", "<|user|>", "<|assistant|>"]),
    # After "chatml" (which keeps the plain ChatML models): SmolLM3 (metadata system block, default
    # instructions) and Qwen3.5 (generation prompt opens "<think>\n").
    _turn_family("chatml-block", _CHATML_TURNS, ["<|im_end|>", "<|im_start|>"]),
    _turn_family("granite", _GRANITE_TURNS, ["<|end_of_text|>", "<|start_of_role|>"]),
    # gpt-oss: the harmony header (with the export day's date) and the developer block; the model's
    # analysis channel stays in the text Ollama returns (no harmony parser in a TEMPLATE).
    _turn_family("harmony", _HARMONY_TURNS, ["<|return|>", "<|call|>"]),
    _turn_family("ministral3", _MISTRAL3_TURNS, ["[INST]", "[/INST]"]),
    _turn_family("gemma4", _GEMMA4_TURNS, ["<turn|>", "<|turn>"]),
    _turn_family("deepseek-r1", _R1_TURNS, ["<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>"]),
]

# ---------------------------------------------------------------- probes and matching

# Contents carry what could trip a translation: quotes (a `"""` too), Go template syntax that must
# stay data, non-ASCII text, an inner newline. No leading/trailing whitespace: Llama 3 and Gemma
# templates `trim` contents and a Go template cannot (documented limit).
PROBE_SYSTEM = 'You are a careful assistant. Quote sources as """source""".'
_U1 = 'What is the boiling point of water at 2,000 m? Answer in "°C".'
_A1 = "About 93 °C.\nAir pressure is lower there."
_U2 = "And at sea level? {{ .System }} {{ end }} naïve ✓"
# An earlier answer with its reasoning, as Ollama hands it back (`thinking`, api.Message.Thinking,
# once Ollama has split a reply) and as Hugging Face clients pass it (`reasoning_content`: Qwen3,
# Qwen3.5; `thinking`: gpt-oss): each template reads the field it knows. The templates of Qwen3,
# Qwen3.5, R1 distills and gpt-oss strip an earlier turn's reasoning; the TEMPLATE must too.
_R1 = "At 2,000 m air pressure is about 80 kPa; water boils where vapour pressure reaches it."
_A1_REASONED = {"role": "assistant", "content": _A1, "thinking": _R1, "reasoning_content": _R1}
PROBE_CHATS: dict[str, list[Message]] = {
    "single-turn": [{"role": "user", "content": _U1}],
    "single-turn+system": [{"role": "system", "content": PROBE_SYSTEM}, {"role": "user", "content": _U1}],
    "multi-turn": [{"role": "user", "content": _U1}, {"role": "assistant", "content": _A1},
                   {"role": "user", "content": _U2}],
    "multi-turn+system": [{"role": "system", "content": PROBE_SYSTEM}, {"role": "user", "content": _U1},
                          {"role": "assistant", "content": _A1}, {"role": "user", "content": _U2}],
    "reasoning-history": [{"role": "user", "content": _U1}, _A1_REASONED, {"role": "user", "content": _U2}],
    "reasoning-history+system": [{"role": "system", "content": PROBE_SYSTEM}, {"role": "user", "content": _U1},
                                 _A1_REASONED, {"role": "user", "content": _U2}],
}


@dataclass
class Probe:
    name: str
    modelfile_system: str
    messages: list[Message]  # the request, before Ollama prepends SYSTEM
    expected: str  # Jinja rendering of what the model receives (leading BOS left to the runtime)


@dataclass
class TemplateMatch:
    family: str
    params: dict
    go_template: str
    stops: list[str]
    system_supported: bool
    probes: list[Probe]
    bos_in_template: bool
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {"family": self.family, "params": self.params, "stops": self.stops,
                "system_supported": self.system_supported, "bos_in_template": self.bos_in_template,
                "probes": [f"{p.name} (SYSTEM {'set' if p.modelfile_system else 'empty'})" for p in self.probes],
                "notes": self.notes}


def _jinja_error() -> tuple[type[BaseException], ...]:
    import jinja2

    return (jinja2.exceptions.TemplateError,)


def build_probes(render: RenderFn, system: str, bos: str | None, runtime_adds_bos: bool) -> tuple[list[Probe], bool, list[str]]:
    """Render every probe chat with the model's template; returns (probes, system_supported, notes)."""
    notes: list[str] = []
    errors = _jinja_error()
    try:
        render(PROBE_CHATS["single-turn+system"])
        system_supported = True
    except errors as e:
        # Training folds the system text into the first user message for such templates
        # (training/encoding.py fold_system); the probes expect what training rendered.
        from ..records import fold_system_text

        original = render

        def render(messages: list[Message]) -> str:  # noqa: F811 - the folding view of the template
            return original(fold_system_text(messages))

        try:
            render(PROBE_CHATS["single-turn+system"])
            system_supported = True
            notes.append(f"the chat template rejects system messages ({e}); the system text opens the first user "
                         "message, as in training")
        except errors:
            system_supported = False
            notes.append(f"the chat template rejects system messages ({e}); SYSTEM is left out of the Modelfile")
    systems = [system, ""] if system_supported and system else [""]
    probes: list[Probe] = []
    stripped = False
    for sys_text in systems:
        for name, chat in PROBE_CHATS.items():
            if chat[0]["role"] == "system" and not system_supported:
                continue
            try:
                text = render(sent_messages(sys_text, chat))
            except errors as e:
                raise ExportError(f"ollama: the model's chat template fails on the {name!r} probe chat: {e}") from e
            if bos and runtime_adds_bos and text.startswith(bos):
                text, stripped = text[len(bos):], True
            probes.append(Probe(name, sys_text, chat, text))
    if stripped:
        notes.append(f"leading BOS {bos!r} is left to the runtime (the tokenizer adds it, as llama.cpp will)")
    return probes, system_supported, notes


def match_family(render: RenderFn, tokens: dict, system: str, runtime_adds_bos: bool) -> TemplateMatch:
    """Find the family whose Go template renders every probe like the model's Jinja template.

    `tokens`: {"bos": str|None, "eos": str|None}. Raises ExportError when no family matches.
    """
    probes, system_supported, notes = build_probes(render, system, tokens.get("bos"), runtime_adds_bos)
    bos_literal = tokens.get("bos") if tokens.get("bos") and not runtime_adds_bos else ""
    misses: list[str] = []
    for fam in FAMILIES:
        try:
            params = fam.infer(render, tokens)
        except (KeyError, TypeError, *_jinja_error()):
            continue
        if any(v is None for v in params.values()):
            continue
        # A BOS the runtime will not add is written into the template (llama.cpp parses it as special).
        # Without one first: a BOS that is also the turn marker (SmolLM2's bos is <|im_start|>)
        # starts every ChatML text without being a prefix of its own.
        prefixes = [""] + ([bos_literal] if bos_literal and probes and all(p.expected.startswith(bos_literal)
                                                                         for p in probes) else [])
        got = ""
        for prefix in prefixes:
            bad = next((p for p in probes if prefix + fam.render(params, *ollama_view(p.modelfile_system, p.messages))
                        != p.expected), None)
            if bad is None:
                go = (go_literal(prefix) if prefix else "") + fam.go(params)
                stops = list(dict.fromkeys([*fam.stops, *(t for t in [tokens.get("eos")] if t)]))
                return TemplateMatch(fam.name, params, go, stops, system_supported, probes, bool(prefix), notes)
            got = prefix + fam.render(params, *ollama_view(bad.modelfile_system, bad.messages))
        misses.append(f"{fam.name}: probe {bad.name!r} expected {bad.expected[:80]!r}, family gives {got[:80]!r}")
    raise ExportError(
        "ollama: the model's chat template matches none of the chat families iceburg can translate to an "
        f"Ollama TEMPLATE ({', '.join(f.name for f in FAMILIES)}), so no Modelfile was written rather than a "
        "probably-wrong one. The GGUF file still carries the Jinja template (llama.cpp: `llama-server --jinja`). "
        "Closest misses:\n  " + "\n  ".join(misses))


# ---------------------------------------------------------------- the Go proof

GO_RENDERER_PATH = Path(__file__).parent / "gotemplate" / "main.go"


def go_renderer_source() -> str:
    """Source of the Go helper, shipped as package data (iceburg/export/gotemplate/main.go)."""
    return GO_RENDERER_PATH.read_text(encoding="utf-8")


def _go_binary() -> Path | None:
    go = shutil.which("go")
    if go is None:
        return None
    src = go_renderer_source()
    digest = hashlib.sha256(src.encode()).hexdigest()[:16]
    cache = Path(os.environ.get("ICEBURG_CACHE", Path.home() / ".cache" / "iceburg")) / f"gotemplate-{digest}"
    exe = cache / "render"
    if exe.exists():
        return exe
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        (Path(tmp) / "main.go").write_text(src)
        env = {**os.environ, "GO111MODULE": "off"}  # one file, standard library only
        if "HOME" not in env:
            env.setdefault("GOCACHE", str(cache / "gocache"))
        proc = subprocess.run([go, "build", "-o", str(Path(tmp) / "render"), "main.go"], cwd=tmp,
                              capture_output=True, text=True, env=env, timeout=300)
        if proc.returncode != 0:
            raise ExportError(f"ollama: building the Go template renderer failed: {proc.stderr.strip()}")
        os.replace(Path(tmp) / "render", exe)
    return exe


def go_render(cases: list[dict]) -> list[dict] | None:
    """Render cases ({template, system, messages}) with Go's text/template; None when Go is absent."""
    exe = _go_binary()
    if exe is None:
        return None
    proc = subprocess.run([str(exe)], input=json.dumps({"cases": cases}), capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise ExportError(f"ollama: the Go template renderer failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout)["results"]


def verify_template(go_template: str, probes: list[Probe]) -> dict:
    """Render `go_template` with Go's text/template on every probe and compare byte for byte."""
    cases = [{"template": go_template, "system": p.modelfile_system, "messages": p.messages} for p in probes]
    results = go_render(cases)
    if results is None:
        return {"verified": False, "status": NOT_VERIFIED_NO_GO, "cases": len(probes)}
    mismatches = []
    for p, r in zip(probes, results):
        if r["error"] or r["output"] != p.expected:
            mismatches.append({"probe": p.name, "modelfile_system": bool(p.modelfile_system), "error": r["error"],
                               "expected": p.expected, "go": r["output"]})
    status = (f"verified: Go text/template output equals apply_chat_template byte for byte on {len(probes)} probe chats"
              if not mismatches else f"FAILED: {len(mismatches)} of {len(probes)} probe chats differ")
    return {"verified": not mismatches, "status": status, "cases": len(probes), "mismatches": mismatches}

