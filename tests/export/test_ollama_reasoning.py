"""The Ollama TEMPLATE renders a conversation whose earlier assistant turns carry reasoning exactly as
training rendered it (issue 25), for the families whose templates strip or keep it by position: Qwen3,
Qwen3.5, DeepSeek-R1 distills and gpt-oss. Ollama hands a template a reply's reasoning as the message's
`.Thinking` (api.Message.Thinking); the Go helper does the same. The request (system, the first turn's
answer with its reasoning, the next user turn; or a tool loop) is rendered by Go's text/template and
must tokenize to exactly the tokens training put before the next supervised turn: reasoning stripped
where the family's template strips it (every turn before the last user message), kept where it keeps
it (Qwen3 and Qwen3.5, a tool-calling turn after the last user message). Real templates from the
llama-cpp-python sdist on the family fixtures' tokenizers (R1: the base's real vocabulary)."""

from __future__ import annotations

import shutil

import pytest

from iceburg.data.tool_calls import renders_tools
from iceburg.export import tool_templates
from iceburg.export.chat_templates import go_render, match_family, verify_template
from iceburg.export.ollama import _runtime_adds_bos, template_vars
from iceburg.records import Record
from iceburg.training.encoding import encode_record

pytestmark = pytest.mark.skipif(shutil.which("go") is None, reason="the Go proof needs go (apt-get install golang-go)")

SYSTEM = "You are ICEBURG Surveyor. Cite your sources."
R1, R2 = "Try 7: 7 x 13 = 91.", "No divisor up to 9."
CHAT = [{"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Is 91 prime?"},
        {"role": "assistant", "content": "No: 91 = 7 x 13.", "reasoning": R1},
        {"role": "user", "content": "And 97?"},
        {"role": "assistant", "content": "Yes, 97 is prime.", "reasoning": R2}]
TOOLS = [{"type": "function", "function": {"name": "web_search", "description": "Search the web.",
                                           "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                                                          "required": ["query"]}}}]
CALL = {"type": "function", "function": {"name": "web_search", "arguments": {"query": "sleep memory review"}}}
TOOL_CHAT = [{"role": "system", "content": SYSTEM},
             {"role": "user", "content": "Find the sleep review."},
             {"role": "assistant", "content": "", "reasoning": "Search before answering.", "tool_calls": [CALL]},
             {"role": "tool", "name": "web_search", "content": "Walker 2017 review"},
             {"role": "assistant", "content": "Walker (2017) reviews it.", "reasoning": "The result names it."}]


def _family(name: str):
    from transformers import AutoTokenizer

    from iceburg.testing.families import family_tokenizer_dir

    return AutoTokenizer.from_pretrained(family_tokenizer_dir(name))


def _r1(real_tokenizer, vocab: str, template: str):
    tok = real_tokenizer(vocab, template)  # with the markers the real R1 tokenizers add as single tokens
    tok.add_special_tokens({"additional_special_tokens": ["<｜User｜>", "<｜Assistant｜>", "<think>", "</think>"],
                            "eos_token": "<｜end▁of▁sentence｜>"})
    return tok


@pytest.fixture(scope="module", params=["qwen3", "qwen3.5", "gpt-oss", "r1-qwen", "r1-llama"])
def base(request, real_tokenizer):
    if request.param == "r1-qwen":
        return request.param, _r1(real_tokenizer, "qwen2", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B")
    if request.param == "r1-llama":
        return request.param, _r1(real_tokenizer, "llama-bpe", "deepseek-ai-DeepSeek-R1-Distill-Llama-8B")
    return request.param, _family(request.param)


def exported_template(tok) -> tuple[str, bool, dict]:
    """The TEMPLATE the Ollama export writes for `tok` (tool template where proven), found and proven
    the way `ollama.export` does, and whether the runtime adds BOS."""
    extra = template_vars(tok)

    def render(messages, tools=None):
        return tok.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True, **extra)

    adds_bos = _runtime_adds_bos(tok, None)
    match = match_family(render, {"bos": tok.bos_token, "eos": tok.eos_token}, SYSTEM, adds_bos)
    assert verify_template(match.go_template, match.probes)["verified"]
    tools = tool_templates.tool_template(match, render, renders_tools(tok), tok.bos_token, adds_bos)
    return (tools["go_template"] if tools["supported"] else match.go_template), adds_bos, tools


def context_before_last_turn(tok, record: Record) -> list[int]:
    """The tokens training put before the last supervised turn (a per-turn example when the template
    rewrites history, else the one example up to its last supervised run)."""
    ex = encode_record(tok, record, 4096, {tok.eos_token_id})[-1]
    start = max(t for t in range(len(ex.mask)) if ex.mask[t] and (t == 0 or not ex.mask[t - 1]))
    return ex.input_ids[:start]


def go_ids(tok, template: str, adds_bos: bool, messages: list[dict], tools=None) -> tuple[str, list[int]]:
    [r] = go_render([{"template": template, "system": SYSTEM, "messages": messages, "tools": tools or []}])
    assert r["error"] == "", r["error"]
    bos = [tok.bos_token_id] if adds_bos else []  # llama.cpp adds BOS in front of the rendered text
    return r["output"], bos + tok(r["output"], add_special_tokens=False)["input_ids"]


def test_earlier_reasoning_is_stripped_as_in_training(base):
    name, tok = base
    template, adds_bos, _ = exported_template(tok)
    request = [{"role": "user", "content": CHAT[1]["content"]},
               {"role": "assistant", "content": CHAT[2]["content"], "thinking": R1},  # as Ollama hands it back
               {"role": "user", "content": CHAT[3]["content"]}]
    text, ids = go_ids(tok, template, adds_bos, request)
    assert R1 not in text and "No: 91 = 7 x 13." in text
    assert ids == context_before_last_turn(tok, Record(messages=CHAT)), name


@pytest.mark.parametrize("name", ["qwen3", "qwen3.5"])
def test_tool_loop_reasoning_is_kept_as_in_training(name):
    """After the last user message Qwen3 and Qwen3.5 keep a tool-calling turn's reasoning: the TEMPLATE
    writes `.Thinking` there in a think block, as training's context for the answer has it."""
    tok = _family(name)
    template, adds_bos, tools = exported_template(tok)
    assert tools["supported"] and tools["variant"] == {"qwen3": "qwen3", "qwen3.5": "qwen3.5"}[name], tools
    assert "<think>\n{{ $m.Thinking }}\n</think>" in template  # where Ollama reads its thinking tags from
    call = {"role": "assistant", "content": "", "thinking": "Search before answering.",
            "tool_calls": [{"function": CALL["function"]}]}
    request = [TOOL_CHAT[1], call, {"role": "tool", "tool_name": "web_search", "content": "Walker 2017 review"}]
    text, _ = go_ids(tok, template, adds_bos, request, TOOLS)
    assert "<think>\nSearch before answering.\n</think>" in text
    # JSON values compare as data (Ollama writes them with Go's encoding/json: compact, keys sorted;
    # tool_templates.py), every other byte as it is
    context = tok.decode(context_before_last_turn(tok, Record(messages=TOOL_CHAT, tools=TOOLS)))
    assert "<think>\nSearch before answering.\n</think>" in context
    assert tool_templates.same_modulo_json(context, text) == (True, -1)


def test_a_template_that_keeps_earlier_reasoning_fails_the_proof(real_tokenizer):
    """The reasoning probes are not vacuous: Qwen3's TEMPLATE writing `.Thinking` into every assistant
    turn differs from the real template on exactly the probes whose history carries reasoning."""
    tok = real_tokenizer("qwen2", "Qwen-Qwen3-0.6B")

    def render(messages, tools=None):
        return tok.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)

    match = match_family(render, {"bos": None, "eos": tok.eos_token}, SYSTEM, False)
    wrong = match.go_template.replace("{{ .Content }}", "{{ if .Thinking }}<think>\n{{ .Thinking }}\n</think>\n\n"
                                                        "{{ end }}{{ .Content }}")
    assert wrong != match.go_template
    check = verify_template(wrong, match.probes)
    assert {m["probe"] for m in check["mismatches"]} == {"reasoning-history", "reasoning-history+system"}
    # and the Qwen3 tool variant (keeps reasoning after the last user message) fails on Qwen2.5
    qwen25 = real_tokenizer("qwen2", "Qwen-Qwen2.5-7B-Instruct")

    def render25(messages, tools=None):
        return qwen25.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)

    m25 = match_family(render25, {"bos": None, "eos": qwen25.eos_token}, SYSTEM, False)
    variant = next(v for v in tool_templates.TOOL_FAMILIES["chatml"] if v[0] == "qwen3")
    res = tool_templates._prove_variant(m25, render25, variant, None, False)
    assert {m["probe"] for m in res["mismatches"]} == {"think-call-and-result"}
    assert tool_templates.tool_template(m25, render25, True, None, False)["variant"] == "hermes"
