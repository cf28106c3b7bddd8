"""`--supervise-tool-calls all|name|none` under REAL chat templates (llama.cpp's copies from the
llama-cpp-python sdist on real vocabularies): the call text stays in the sequence as context and
only the mask changes; `iceburg inspect` shows the same mask; the flag and the YAML key come from
the config field."""

from __future__ import annotations

import json

import pytest

from iceburg.cli import build_parser, make_config
from iceburg.records import Record
from iceburg.testing.family_matrix import supervised_segments
from iceburg.training.encoding import encode_record
from iceburg.training.inspection import inspect_records
from iceburg.truth.filter import TruthFilter

TOOLS = [{"type": "function", "function": {"name": "web_search", "description": "Search.",
                                           "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]


def chat(text: str = "") -> list[dict]:
    return [{"role": "user", "content": "Find the sleep review."},
            {"role": "assistant", "content": text, "tool_calls": [
                {"type": "function", "function": {"name": "web_search", "arguments": {"query": "sleep memory"}}}]},
            {"role": "tool", "name": "web_search", "content": "Walker 2017 review"},
            {"role": "assistant", "content": "Walker (2017) reviews it."}]


def supervised(tok, ex) -> list[str]:
    return [tok.decode(s) for s in supervised_segments(ex)]


@pytest.fixture(scope="module")
def llama(real_tokenizer):
    return real_tokenizer("llama-bpe", "meta-llama-Llama-3.2-3B-Instruct")


@pytest.fixture(scope="module")
def qwen(real_tokenizer):
    return real_tokenizer("qwen2", "Qwen-Qwen2.5-7B-Instruct")


@pytest.mark.parametrize("mode,expected", [
    ("all", ['{"name": "web_search", "parameters": {"query": "sleep memory"}}<|eot_id|>',
             "Walker (2017) reviews it.<|eot_id|>"]),
    # the arguments are context, their braces too (the token ` {"` that opens them is theirs): the
    # model learns to call web_search and to end the turn after it
    ("name", ['{"name": "web_search", "parameters":', "<|eot_id|>", "Walker (2017) reviews it.<|eot_id|>"]),
    # the whole call is context: only the end of the call turn (given the call) and the answer train
    ("none", ["<|eot_id|>", "Walker (2017) reviews it.<|eot_id|>"]),
])
def test_llama32_masks_the_call_as_asked(llama, mode, expected):
    eos = {llama.convert_tokens_to_ids("<|eot_id|>")}
    rec = Record(messages=chat(), tools=TOOLS)
    (ex,) = encode_record(llama, rec, 4096, eos, supervise_tool_calls=mode)
    assert supervised(llama, ex) == expected
    (full,) = encode_record(llama, rec, 4096, eos)
    assert ex.input_ids == full.input_ids  # the same sequence: only what carries loss changed


def test_qwen25_keeps_the_text_beside_the_call(qwen):
    eos = {qwen.convert_tokens_to_ids("<|im_end|>")}
    rec = Record(messages=chat("Let me search."), tools=TOOLS)
    (ex,) = encode_record(qwen, rec, 4096, eos, supervise_tool_calls="none")
    assert supervised(qwen, ex) == ["Let me search.\n", "<|im_end|>", "Walker (2017) reviews it.<|im_end|>"]
    assert '<tool_call>\n{"name": "web_search", "arguments": {"query": "sleep memory"}}\n</tool_call>' in \
        qwen.decode(ex.input_ids)
    (named,) = encode_record(qwen, rec, 4096, eos, supervise_tool_calls="name")
    # the call's opening and name train, then its closing tag given the arguments; the arguments
    # (`{"query": "sleep memory"}`, both braces) are context
    assert supervised(qwen, named) == ['Let me search.\n<tool_call>\n{"name": "web_search", "arguments":',
                                       "</tool_call><|im_end|>", "Walker (2017) reviews it.<|im_end|>"]


def test_qwen25_none_leaves_no_piece_of_the_call(qwen):
    """A call turn without text: the call is written where `<|im_end|>` would follow, and both start
    with `<`; the unsupervised text is cut at token starts, so no lone `<` of `<tool_call>` trains."""
    eos = {qwen.convert_tokens_to_ids("<|im_end|>")}
    (ex,) = encode_record(qwen, Record(messages=chat(), tools=TOOLS), 4096, eos, supervise_tool_calls="none")
    assert supervised(qwen, ex) == ["<|im_end|>", "Walker (2017) reviews it.<|im_end|>"]


def test_parallel_calls_each_lose_their_arguments(qwen):
    """`name` masks each call's arguments separately: the second call's name still trains."""
    eos = {qwen.convert_tokens_to_ids("<|im_end|>")}
    two = chat()
    two[1]["tool_calls"] = two[1]["tool_calls"] + [
        {"type": "function", "function": {"name": "web_search", "arguments": {"query": "slow-wave sleep"}}}]
    two.insert(3, {"role": "tool", "name": "web_search", "content": "Diekelmann 2010"})
    (ex,) = encode_record(qwen, Record(messages=two, tools=TOOLS), 4096, eos, supervise_tool_calls="name")
    text = "".join(supervised(qwen, ex))
    assert text.count('{"name": "web_search", "arguments":') == 2
    assert "sleep memory" not in text and "slow-wave" not in text and "{" not in text.replace('{"name"', "")


@pytest.mark.parametrize("family, call, after", [
    # Qwen3.5 writes arguments as `<parameter=query>\nsleep memory\n</parameter>\n` blocks
    ("qwen3.5", "<tool_call>\n<function=web_search>\n", "</function>\n</tool_call><|im_end|>"),
    # gpt-oss: the call is a commentary message to the function; its JSON body is the arguments
    ("gpt-oss", " to=functions.web_search<|channel|>commentary json<|message|>", "<|call|>"),
])
def test_name_leaves_out_the_arguments_in_other_formats(family, call, after):
    """`name` on the family fixtures' real templates (llama.cpp's copies) of the other tool formats:
    the call's opening and name train, the arguments as written do not, the end of the call does."""
    from transformers import AutoTokenizer

    from iceburg.testing.families import family_tokenizer_dir, get_family

    tok = AutoTokenizer.from_pretrained(family_tokenizer_dir(family))
    eos = {tok.convert_tokens_to_ids(t) for t in get_family(family).eos}
    exs = encode_record(tok, Record(messages=chat(), tools=TOOLS), 4096, eos, supervise_tool_calls="name")
    segs = [s for ex in exs for s in supervised(tok, ex)]
    # segment 0 is the call turn up to the arguments (Qwen3.5's begins with its think block)
    assert segs[0].endswith(call) and segs[1] == after
    assert "sleep memory" in tok.decode(exs[0].input_ids)  # still in the sequence, as context
    assert not any("sleep memory" in s or "query" in s or "{" in s for s in segs)


def test_inspect_shows_the_mask_and_the_flag_is_a_config_field(llama, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"tools": TOOLS, "messages": chat()}) + "\n", encoding="utf-8")
    eot = {llama.convert_tokens_to_ids("<|eot_id|>")}
    [item] = inspect_records(llama, [data], truth=TruthFilter(min_quality_score=0.0), eos=eot,
                             supervise_tool_calls="none")
    runs = item.examples[0]
    assert [t for t, s in runs if s] == ["<|eot_id|>", "Walker (2017) reviews it.<|eot_id|>"]
    assert any("sleep memory" in t for t, s in runs if not s)  # shown, as context
    cfg = make_config(build_parser().parse_args(["--supervise-tool-calls", "name"]))
    assert cfg.supervise_tool_calls == "name"
    (tmp_path / "c.yaml").write_text("train:\n  supervise_tool_calls: none\n")
    assert make_config(build_parser().parse_args(["--config", str(tmp_path / "c.yaml")])).supervise_tool_calls == "none"
