"""Ollama's `think: false` request option as the chat template's `enable_thinking=False` mode
(export/think_switch.py), proven by Go's text/template (`.Think`, `.IsThinkSet` as Ollama passes
them) against the real templates on the family fixtures' tokenizers: Qwen3 and Qwen3.5 (an empty
think block closes the generation prompt; with their tool templates), SmolLM3 (the `/no_think`
system block and an empty think block in every assistant turn) and the R1-Distill-Qwen sdist
template; gpt-oss has no switch."""

from __future__ import annotations

import shutil

import pytest

from iceburg.data.tool_calls import renders_tools
from iceburg.export import tool_templates
from iceburg.export.chat_templates import go_render, match_family
from iceburg.export.ollama import _runtime_adds_bos, template_vars
from iceburg.export.think_switch import think_switch

pytestmark = pytest.mark.skipif(shutil.which("go") is None, reason="needs go (apt-get install golang-go)")

SYSTEM = "You are ICEBURG Surveyor. Cite your sources."


def _tok(name: str, real_tokenizer):
    if name == "r1-qwen":
        tok = real_tokenizer("qwen2", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B")
        tok.add_special_tokens({"additional_special_tokens": ["<｜User｜>", "<｜Assistant｜>", "<think>", "</think>"],
                                "eos_token": "<｜end▁of▁sentence｜>"})
        return tok
    from transformers import AutoTokenizer

    from iceburg.testing.families import family_tokenizer_dir

    return AutoTokenizer.from_pretrained(family_tokenizer_dir(name))


def switch_for(tok):
    """The export's steps (ollama.export): family, tool template, then the think switch."""
    extra = template_vars(tok)

    def render(messages, tools=None):
        return tok.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True, **extra)

    def render_off(messages, tools=None):
        return tok.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True,
                                       **{**extra, "enable_thinking": False})

    adds_bos = _runtime_adds_bos(tok, None)
    tokens = {"bos": tok.bos_token, "eos": tok.eos_token}
    match = match_family(render, tokens, SYSTEM, adds_bos)
    tools = tool_templates.tool_template(match, render, renders_tools(tok), tok.bos_token, adds_bos)
    default = tools["go_template"] if tools["supported"] else match.go_template
    names = [n for n in tools.get("probes", []) if not n.startswith("plain:")] if tools["supported"] else []
    return match, default, think_switch(match, default, render, render_off, tokens, SYSTEM, adds_bos, names), names


@pytest.mark.parametrize("name,variant,n_tools", [("qwen3", "generation prompt", 7), ("qwen3.5", "generation prompt", 7),
                                                  ("smollm3", "every assistant turn", 0),
                                                  ("r1-qwen", "generation prompt", 0)])
def test_think_false_is_proven(name, variant, n_tools, real_tokenizer):
    match, default, res, names = switch_for(_tok(name, real_tokenizer))
    assert res["supported"] and res["variant"] == variant, res
    assert len(names) == n_tools  # tool probes are part of the proof where the TEMPLATE has tools
    n = len(match.probes) + n_tools
    assert f"on {n} probe chats" in res["status"] and f"default on {2 * n}" in res["status"]
    assert res["go_template"].startswith("{{ if and .IsThinkSet (not .Think) }}") and default in res["go_template"]


def test_smollm3_think_false_renders_a_no_think_record_as_trained(real_tokenizer):
    """A record whose system prompt says `/no_think` trains in SmolLM3's no-thinking mode; the same
    conversation sent to Ollama with `think: false` and the system text without the switch renders
    to exactly those tokens (the template removes the switch from the instructions)."""
    tok = _tok("smollm3", real_tokenizer)
    _, _, res, _ = switch_for(tok)
    chat = [{"role": "user", "content": "Is 91 prime?"}, {"role": "assistant", "content": "No: 91 = 7 x 13."},
            {"role": "user", "content": "And 97?"}]
    trained = tok.apply_chat_template([{"role": "system", "content": SYSTEM + " /no_think"}, *chat], tokenize=False,
                                      add_generation_prompt=True)
    assert "Reasoning Mode: /no_think" in trained and "<think>\n\n</think>\nNo: 91" in trained
    off, on, unset = go_render([{"template": res["go_template"], "system": SYSTEM, "messages": chat, "think": think}
                                for think in (False, True, None)])
    assert off["error"] == "" and off["output"] == trained
    assert on["output"] == unset["output"] == tok.apply_chat_template([{"role": "system", "content": SYSTEM}, *chat],
                                                                      tokenize=False, add_generation_prompt=True)


def test_a_wrong_off_mode_fails_and_a_template_without_switch_says_so(real_tokenizer, monkeypatch):
    from iceburg.export import think_switch as ts

    real = ts._candidates
    monkeypatch.setattr(ts, "_candidates", lambda *a: [(label, t.replace("<think>", "<thinking>"))
                                                       for label, t in real(*a)])
    *_, broken, _ = switch_for(_tok("qwen3", real_tokenizer))
    assert not broken["supported"] and "no off-mode TEMPLATE" in broken["status"]
    monkeypatch.undo()
    *_, none, _ = switch_for(_tok("gpt-oss", real_tokenizer))
    assert not none["supported"] and none["status"].startswith("no thinking switch")
