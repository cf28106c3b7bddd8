"""Tool-calling conversations rendered by real chat templates (llama.cpp's copies of the Qwen2.5 and
Llama 3.2 Instruct templates on their real tokenizers, and the Hermes-style ChatML template on
iceburg-tiny): the supervised tokens decode to the assistant's text and calls plus the end of turn;
tool results and tool definitions are in the text but never supervised."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from iceburg.data.tool_calls import renders_tools
from iceburg.errors import IceburgError
from iceburg.records import Record
from iceburg.testing.family_matrix import supervised_segments
from iceburg.training.encoding import encode, eos_ids
from iceburg.training.tool_render import HERMES_CHATML_TEMPLATE, ensure_tool_template

TOOLS = [{"type": "function", "function": {
    "name": "web_search", "description": "Search the web; returns titles and snippets.",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}]
RESULT = '[{"title": "Sleep and memory consolidation", "snippet": "Walker 2017 review"}]'
ANSWER = "A 2017 review by Walker links slow-wave sleep to memory consolidation."
CONV = [
    {"role": "system", "content": "You are ICEBURG Surveyor."},
    {"role": "user", "content": "Find the evidence on sleep and memory."},
    {"role": "assistant", "content": "",
     "tool_calls": [{"type": "function", "function": {"name": "web_search", "arguments": {"query": "sleep memory"}}}]},
    {"role": "tool", "name": "web_search", "content": RESULT},
    {"role": "assistant", "content": ANSWER},
]


def supervised_text(tok, ex) -> list[str]:
    return [tok.decode(s) for s in supervised_segments(ex)]


def check_context_unsupervised(tok, ex):
    full = tok.decode(ex.input_ids)
    sup = "".join(supervised_text(tok, ex))
    assert "Walker 2017 review" in full and "Walker 2017 review" not in sup  # tool result
    assert "returns titles and snippets" in full and "returns titles and snippets" not in sup  # definition


@pytest.fixture(scope="module")
def qwen(real_tokenizer):
    return real_tokenizer("qwen2", "Qwen-Qwen2.5-7B-Instruct")


@pytest.fixture(scope="module")
def llama(real_tokenizer):
    return real_tokenizer("llama-bpe", "meta-llama-Llama-3.2-3B-Instruct")


def test_qwen25_native_tool_format(qwen):
    assert renders_tools(qwen) and ensure_tool_template(qwen, [Record(messages=CONV, tools=TOOLS)]) is None
    eos = {qwen.convert_tokens_to_ids("<|im_end|>")}
    ex = encode(qwen, Record(messages=CONV, tools=TOOLS), 4096, eos)
    assert supervised_text(qwen, ex) == [
        '<tool_call>\n{"name": "web_search", "arguments": {"query": "sleep memory"}}\n</tool_call><|im_end|>',
        ANSWER + "<|im_end|>"]
    check_context_unsupervised(qwen, ex)
    # the full sequence is the template's own rendering with tools=
    assert qwen.decode(ex.input_ids) == qwen.apply_chat_template(CONV, tools=TOOLS, tokenize=False)


def test_llama32_native_tool_format(llama):
    eos = {llama.convert_tokens_to_ids("<|eot_id|>")}
    ex = encode(llama, Record(messages=CONV, tools=TOOLS), 4096, eos)
    assert supervised_text(llama, ex) == [
        '{"name": "web_search", "parameters": {"query": "sleep memory"}}<|eot_id|>', ANSWER + "<|eot_id|>"]
    check_context_unsupervised(llama, ex)
    full = llama.decode(ex.input_ids)
    assert "<|start_header_id|>ipython<|end_header_id|>" in full  # results in Llama's ipython role


def test_chatml_base_gets_the_hermes_template(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    plain = [m for m in CONV if "tool_calls" not in m and m["role"] != "tool"]
    before = tok.apply_chat_template(plain, tokenize=False)
    assert not renders_tools(tok)
    # without the switch the ChatML template silently drops the call: refused, not trained on
    with pytest.raises(IceburgError, match="does not write tool call 'web_search'"):
        encode(tok, Record(messages=CONV, tools=TOOLS), 4096, eos_ids(tok))
    assert ensure_tool_template(tok, [Record(messages=plain)]) is None  # no tools in the data: untouched
    assert ensure_tool_template(tok, [Record(messages=CONV, tools=TOOLS)]) == "hermes"
    assert tok.chat_template == HERMES_CHATML_TEMPLATE and renders_tools(tok)
    assert tok.apply_chat_template(plain, tokenize=False) == before  # plain chats render as before
    ex = encode(tok, Record(messages=CONV, tools=TOOLS), 4096, eos_ids(tok))
    assert supervised_text(tok, ex) == [
        '<tool_call>\n{"name": "web_search", "arguments": {"query": "sleep memory"}}\n</tool_call><|im_end|>',
        ANSWER + "<|im_end|>"]
    check_context_unsupervised(tok, ex)


def test_hermes_template_matches_qwen25_with_a_system_prompt(qwen, tiny_model_dir):
    """With a system message, Qwen2.5's template and the Hermes ChatML one render the same text."""
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = HERMES_CHATML_TEMPLATE
    for tools in (TOOLS, None):
        assert tok.apply_chat_template(CONV, tools=tools, tokenize=False) == \
            qwen.apply_chat_template(CONV, tools=tools, tokenize=False)


def test_non_chatml_template_without_tools_is_refused(tiny_model_dir, llama_cpp_templates):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = (llama_cpp_templates / "microsoft-Phi-3.5-mini-instruct.jinja").read_text()
    with pytest.raises(IceburgError, match="does not render them"):
        ensure_tool_template(tok, [Record(messages=CONV, tools=TOOLS)])


def test_llama_refuses_parallel_calls_with_the_record_named(llama):
    conv = [dict(m) for m in CONV]
    conv[2] = {**conv[2], "tool_calls": conv[2]["tool_calls"] * 2}
    conv.insert(4, dict(conv[3]))
    with pytest.raises(IceburgError, match="x.jsonl:7: the chat template refuses .*single tool-calls"):
        encode(llama, Record(messages=conv, tools=TOOLS, source="x.jsonl", line=7), 4096, {0})


def test_a_base_without_tool_format_trains_on_the_rest_and_rejects_tool_records(tiny_model_dir,
                                                                               llama_cpp_templates, tmp_path):
    """SmolLM2's and Phi-3.5's templates cannot write calls: the run keeps going, and every
    tool-calling record is in rejects.jsonl with the reason (never silently dropped)."""
    import json

    from iceburg.records import RejectWriter
    from iceburg.training.encoding import encode_all, eos_ids
    from iceburg.training.tool_render import SKIP_REASON, tool_policy

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = (llama_cpp_templates / "microsoft-Phi-3.5-mini-instruct.jinja").read_text()
    plain = [m for m in CONV if m["role"] in ("system", "user")][:2] + [{"role": "assistant", "content": "Yes."}]
    records = [Record(messages=CONV, tools=TOOLS, source="f", line=1), Record(messages=plain, source="f", line=2)]
    kind, skip = tool_policy(tok, records)
    assert kind == "unsupported" and skip(records[0]) == SKIP_REASON and skip(records[1]) is None
    with RejectWriter(tmp_path / "r.jsonl") as rejects:
        enc = encode_all(tok, records, 1024, eos_ids(tok), rejects, skip=skip)
    assert enc.kept == [1]
    rows = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["line"], r["reasons"]) for r in rows] == [("encode", 1, [SKIP_REASON])]
