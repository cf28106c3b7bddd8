"""Ollama tool TEMPLATEs for the issue-32 families, proven by Go's text/template against
apply_chat_template(tools=...) on the family fixtures' tokenizers (real templates from the
llama-cpp-python sdist): Qwen3.5 (XML calls, think blocks after the last user message), Granite 4 and
Ministral 3 get one; gpt-oss (harmony) is refused with its reason; SmolLM3 has no tool format."""

from __future__ import annotations

import shutil

import pytest

from iceburg.data.tool_calls import renders_tools
from iceburg.export import tool_templates
from iceburg.export.chat_templates import go_render, match_family
from iceburg.export.ollama import _runtime_adds_bos, template_vars

pytestmark = pytest.mark.skipif(shutil.which("go") is None, reason="needs go (apt-get install golang-go)")


def prove(name: str):
    from transformers import AutoTokenizer

    from iceburg.testing.families import family_tokenizer_dir

    tok = AutoTokenizer.from_pretrained(family_tokenizer_dir(name))
    extra = template_vars(tok)

    def render(messages, tools=None):
        return tok.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True, **extra)

    adds_bos = _runtime_adds_bos(tok, None)
    match = match_family(render, {"bos": tok.bos_token, "eos": tok.eos_token}, "You are ICEBURG.", adds_bos)
    return tok, render, match, tool_templates.tool_template(match, render, renders_tools(tok), tok.bos_token, adds_bos)


@pytest.mark.parametrize("name,family,variant", [("qwen3.5", "chatml-block", "qwen3.5"), ("granite4", "granite", "granite4"),
                                                 ("ministral3", "ministral3", "ministral3")])
def test_new_family_tool_template_is_proven(name, family, variant):
    _, _, match, res = prove(name)
    assert match.family == family and res["supported"], res
    assert res["variant"] == variant and "7 tool probe chats" in res["status"] and "12 plain ones" in res["status"]
    assert "{{ json . }}" in res["go_template"] or "{{ json .Tools }}" in res["go_template"]


def test_qwen35_writes_each_argument_as_its_template_does():
    """Qwen3.5's calls are XML, not JSON: every byte of a call is compared, a string, a number, an
    object (JSON), a boolean (True) and a null (None) argument among them."""
    _, render, match, res = prove("qwen3.5")
    chat = tool_templates.TOOL_PROBE_CHATS["parallel-calls"]
    expected = render(chat, tool_templates.PROBE_TOOLS)
    call = expected[expected.index("<function=web_search>"):]
    assert "<parameter=safe>\nTrue\n</parameter>" in call and "<parameter=site>\nNone\n</parameter>" in call
    [out] = go_render([{"template": res["go_template"], "system": "", "tools": tool_templates.PROBE_TOOLS,
                        "messages": [tool_templates._go_message(m) for m in chat]}])
    assert out["error"] == "" and tool_templates.same_modulo_json(expected, out["output"]) == (True, -1)
    assert out["output"][out["output"].index("</tools>"):] == expected[expected.index("</tools>"):].replace(
        '{"lang": "en", "years": [2020, 2024]}', '{"lang":"en","years":[2020,2024]}')


def test_a_wrong_argument_order_fails_the_qwen35_proof(monkeypatch):
    """The XML calls are compared byte for byte: a call whose arguments are not in key order (Ollama's
    Go map walks them in key order, Hugging Face in insertion order) fails, so the probes are sorted."""
    call = {"type": "function", "function": {"name": "web_search", "arguments": {"query": "q", "max_results": 3}}}
    chats = {**tool_templates.TOOL_PROBE_CHATS,
             "call-and-result": [tool_templates._U, {"role": "assistant", "content": "", "tool_calls": [call]},
                                 tool_templates._RESULT]}
    monkeypatch.setattr(tool_templates, "TOOL_PROBE_CHATS", chats)
    *_, res = prove("qwen3.5")
    assert not res["supported"] and {m["probe"] for m in res["mismatches"]} == {"call-and-result"}


def test_gpt_oss_and_smollm3_say_why_they_have_none():
    *_, gpt = prove("gpt-oss")
    assert not gpt["supported"] and "TypeScript namespace" in gpt["status"]
    *_, smol = prove("smollm3")
    assert not smol["supported"] and "no tool format" in smol["status"]
