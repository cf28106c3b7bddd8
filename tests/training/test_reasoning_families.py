"""Reasoning traces on the families whose templates put them somewhere other than a message field
or a forced prompt: SmolLM3 (`<think>` inline in thinking mode, `/no_think` in the system prompt),
Mistral's reasoning models (Ministral 3 Reasoning's `[THINK]...[/THINK]`), and gpt-oss's harmony
analysis channel (a message field, checked here on its own template with a tool call). Each on the
family fixture's tokenizer: the real template from the llama-cpp-python sdist on a real vocabulary.
The training text holds the trace where the model's own template puts it (compared with the
template's rendering of the same turn), and the supervised tokens are exactly reasoning + answer +
end of turn under `--reasoning keep` and the answer alone under `drop`."""

from __future__ import annotations

import pytest

from iceburg.records import Record
from iceburg.testing.family_matrix import supervised_segments
from iceburg.training.encoding import encode_all, encode_record
from iceburg.training.reasoning import reasoning_format

CHAT = [{"role": "user", "content": "Is 91 prime?"},
        {"role": "assistant", "content": "No: 91 = 7 x 13.", "reasoning": "Try 7: 7 x 13 = 91."},
        {"role": "user", "content": "And 97?"},
        {"role": "assistant", "content": "Yes, 97 is prime.", "reasoning": "No divisor up to 9."}]


def without_reasoning(chat: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "reasoning"} for m in chat]


def tokenizer(name: str):
    from transformers import AutoTokenizer

    from iceburg.testing.families import family_tokenizer_dir

    return AutoTokenizer.from_pretrained(family_tokenizer_dir(name))


def supervised(tok, ex) -> list[str]:
    return [tok.decode(s) for s in supervised_segments(ex)]


@pytest.fixture(scope="module")
def smollm3():
    return tokenizer("smollm3")


@pytest.fixture(scope="module")
def ministral3():
    return tokenizer("ministral3")


@pytest.fixture(scope="module")
def gpt_oss():
    return tokenizer("gpt-oss")


def test_smollm3_writes_the_trace_inside_the_turn_in_thinking_mode(smollm3):
    fmt = reasoning_format(smollm3)
    assert (fmt.kind, fmt.open, fmt.close, fmt.toggle) == ("inline", "<think>\n", "\n</think>\n", "enable_thinking")
    eos = {smollm3.convert_tokens_to_ids("<|im_end|>")}
    (ex,) = encode_record(smollm3, Record(messages=CHAT), 4096, eos)  # no history rewrite: one example
    assert supervised(smollm3, ex) == ["<think>\nTry 7: 7 x 13 = 91.\n</think>\nNo: 91 = 7 x 13.<|im_end|>",
                                       "<think>\nNo divisor up to 9.\n</think>\nYes, 97 is prime.<|im_end|>"]
    # the training text is the template's own rendering of the turns with the trace in them, in its
    # default (thinking, "/think") mode, the one llama.cpp and the exported template use
    inline = [dict(m, content=f"<think>\n{r['reasoning']}\n</think>\n{m['content']}") if "reasoning" in r else m
              for m, r in zip(without_reasoning(CHAT), CHAT)]
    text = smollm3.apply_chat_template(inline, tokenize=False)
    assert smollm3.decode(ex.input_ids) == text and "Reasoning Mode: /think" in text


def test_smollm3_drop_and_no_think(smollm3):
    eos = {smollm3.convert_tokens_to_ids("<|im_end|>")}
    (dropped,) = encode_record(smollm3, Record(messages=CHAT), 4096, eos, reasoning="drop")
    assert supervised(smollm3, dropped) == ["No: 91 = 7 x 13.<|im_end|>", "Yes, 97 is prime.<|im_end|>"]
    # a system prompt with /no_think: the template writes the empty block into the prompt itself
    # and cannot hold the trace, so the answer alone trains
    no_think = [{"role": "system", "content": "Be brief. /no_think"}, *CHAT]
    (ex,) = encode_record(smollm3, Record(messages=no_think), 4096, eos)
    assert supervised(smollm3, ex) == ["No: 91 = 7 x 13.<|im_end|>", "Yes, 97 is prime.<|im_end|>"]
    text = smollm3.decode(ex.input_ids)
    assert "Reasoning Mode: /no_think" in text and "<|im_start|>assistant\n<think>\n\n</think>\nNo: 91" in text
    assert "Try 7" not in text


def test_ministral3_writes_think_blocks_as_its_content_blocks_render(ministral3):
    fmt = reasoning_format(ministral3)
    assert (fmt.kind, fmt.open, fmt.close) == ("inline", "[THINK]", "[/THINK]")
    eos = {ministral3.eos_token_id}
    (ex,) = encode_record(ministral3, Record(messages=CHAT), 4096, eos)
    # the model's own format: the template's rendering of `thinking` content blocks, token for token
    blocks = [dict(m, content=[{"type": "thinking", "thinking": r["reasoning"]}, {"type": "text", "text": m["content"]}])
              if "reasoning" in r else m for m, r in zip(without_reasoning(CHAT), CHAT)]
    text = ministral3.apply_chat_template(blocks, tokenize=False)
    assert ex.input_ids == ministral3(text, add_special_tokens=False)["input_ids"]
    end = ministral3.eos_token  # what the template writes as `eos_token`
    assert ["".join(s.split()) for s in supervised(ministral3, ex)] == [  # SPM decodes with spaces
        f"[THINK]Try7:7x13=91.[/THINK]No:91=7x13.{end}", f"[THINK]Nodivisorupto9.[/THINK]Yes,97isprime.{end}"]
    (dropped,) = encode_record(ministral3, Record(messages=CHAT), 4096, eos, reasoning="drop")
    assert dropped.input_ids == encode_record(ministral3, Record(messages=without_reasoning(CHAT)), 4096, eos)[0].input_ids
    enc = encode_all(ministral3, [Record(messages=CHAT)], 4096, eos)
    assert enc.reasoning_dropped == 0  # written, not dropped


TOOLS = [{"type": "function", "function": {"name": "web_search", "description": "Search.",
                                           "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]
TOOL_CHAT = [
    {"role": "user", "content": "Find the sleep review."},
    {"role": "assistant", "content": "", "reasoning": "Search first.", "tool_calls": [
        {"type": "function", "function": {"name": "web_search", "arguments": {"query": "sleep memory"}}}]},
    {"role": "tool", "name": "web_search", "content": "Walker 2017 review"},
    {"role": "assistant", "content": "Walker (2017) reviews it.", "reasoning": "The result names it."}]


def test_gpt_oss_trains_the_analysis_channel(gpt_oss):
    eos = {gpt_oss.convert_tokens_to_ids(t) for t in ("<|return|>", "<|call|>", "<|end|>")}
    assert reasoning_format(gpt_oss).kind == "field"
    exs = encode_record(gpt_oss, Record(messages=CHAT), 4096, eos)  # CoT only in the last turn: per turn
    assert [supervised(gpt_oss, e) for e in exs] == [
        ["<|channel|>analysis<|message|>Try 7: 7 x 13 = 91.<|end|><|start|>assistant<|channel|>final<|message|>"
         "No: 91 = 7 x 13.<|return|>"],
        ["<|channel|>analysis<|message|>No divisor up to 9.<|end|><|start|>assistant<|channel|>final<|message|>"
         "Yes, 97 is prime.<|return|>"]]
    assert "Try 7" not in gpt_oss.decode(exs[1].input_ids)  # earlier CoT dropped, as at inference
    dropped = encode_record(gpt_oss, Record(messages=CHAT), 4096, eos, reasoning="drop")
    assert supervised(gpt_oss, dropped[0]) == ["<|channel|>final<|message|>No: 91 = 7 x 13.<|return|>"]


def test_gpt_oss_analysis_before_a_tool_call(gpt_oss):
    eos = {gpt_oss.convert_tokens_to_ids(t) for t in ("<|return|>", "<|call|>", "<|end|>")}
    exs = encode_record(gpt_oss, Record(messages=TOOL_CHAT, tools=TOOLS), 4096, eos)
    first = "".join(supervised(gpt_oss, exs[0]))
    assert first.startswith("<|channel|>analysis<|message|>Search first.<|end|>") and first.endswith("<|call|>")
    assert '"sleep memory"' in first
    # the arguments as context; the call's end (<|call|>) still trains
    (named, _) = encode_record(gpt_oss, Record(messages=TOOL_CHAT, tools=TOOLS), 4096, eos, supervise_tool_calls="name")
    text = "".join(supervised(gpt_oss, named))
    assert "sleep memory" not in text and text.startswith("<|channel|>analysis<|message|>Search first.")
    assert text.endswith("<|call|>")
