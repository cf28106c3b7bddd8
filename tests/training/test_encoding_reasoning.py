"""Reasoning traces and `--train-on` under REAL chat templates (llama.cpp's copies from the
llama-cpp-python sdist, on real vocabularies): Qwen3 writes `reasoning_content` into the turn,
DeepSeek-R1 distills force `<think>\\n` into the prompt and are trained on the turn as the model
produces it (today's refusal: "does not render conversations prefix-consistently"), Llama 3.2
cannot write reasoning and drops it with a count. The supervised tokens decode exactly to
reasoning + answer + end of turn as each family writes them."""

from __future__ import annotations

import json

import pytest

from iceburg.data.loader import read_records
from iceburg.records import Record, RejectWriter
from iceburg.testing.family_matrix import supervised_segments
from iceburg.training.encoding import encode_all, encode_record
from iceburg.training.reasoning import reasoning_format

CHAT = [{"role": "user", "content": "Is 91 prime?"},
        {"role": "assistant", "content": "No: 91 = 7 x 13.", "reasoning": "Try 7: 7 x 13 = 91."},
        {"role": "user", "content": "And 97?"},
        {"role": "assistant", "content": "Yes, 97 is prime.", "reasoning": "No divisor up to 9."}]


def supervised(tok, ex) -> list[str]:
    return [tok.decode(s) for s in supervised_segments(ex)]


@pytest.fixture(scope="module")
def qwen3(real_tokenizer):
    return real_tokenizer("qwen2", "Qwen-Qwen3-0.6B")


@pytest.fixture(scope="module", params=[("qwen2", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B"),
                                        ("llama-bpe", "deepseek-ai-DeepSeek-R1-Distill-Llama-8B")],
                ids=["r1-qwen", "r1-llama"])
def r1(request, real_tokenizer):
    """The R1 distill template on the vocabulary its base uses, with the markers the real R1
    tokenizers add as single tokens (llama.cpp's base vocabularies predate them)."""
    tok = real_tokenizer(*request.param)
    tok.add_special_tokens({"additional_special_tokens": ["<｜User｜>", "<｜Assistant｜>", "<think>", "</think>"],
                            "eos_token": "<｜end▁of▁sentence｜>"})
    return tok


@pytest.fixture(scope="module")
def llama(real_tokenizer):
    return real_tokenizer("llama-bpe", "meta-llama-Llama-3.2-3B-Instruct")


def test_qwen3_writes_the_reasoning_field_into_each_turn(qwen3):
    assert reasoning_format(qwen3).key == "reasoning_content"
    eos = {qwen3.convert_tokens_to_ids("<|im_end|>")}
    exs = encode_record(qwen3, Record(messages=CHAT, source="q.jsonl", line=3), 4096, eos)
    # Qwen3 writes reasoning only after the last user turn: one example per turn (history rewrite)
    assert [e.id for e in exs] == ["q.jsonl:3#turn1", "q.jsonl:3#turn2"]
    assert [supervised(qwen3, e) for e in exs] == [
        ["<think>\nTry 7: 7 x 13 = 91.\n</think>\n\nNo: 91 = 7 x 13.<|im_end|>"],
        ["<think>\nNo divisor up to 9.\n</think>\n\nYes, 97 is prime.<|im_end|>"]]
    dropped = encode_record(qwen3, Record(messages=CHAT, source="q.jsonl", line=3), 4096, eos, reasoning="drop")
    assert supervised(qwen3, dropped[-1]) == ["<think>\n\n</think>\n\nYes, 97 is prime.<|im_end|>"]


def test_r1_distill_trains_on_the_turn_as_the_model_produces_it(r1):
    fmt = reasoning_format(r1)
    assert fmt.kind == "forced" and fmt.template_vars == {"enable_thinking": True}
    eos = {r1.eos_token_id}
    exs = encode_record(r1, Record(messages=CHAT, source="r.jsonl", line=1), 4096, eos)
    assert [supervised(r1, e) for e in exs] == [
        ["Try 7: 7 x 13 = 91.\n</think>\n\nNo: 91 = 7 x 13.<｜end▁of▁sentence｜>"],
        ["No divisor up to 9.\n</think>\n\nYes, 97 is prime.<｜end▁of▁sentence｜>"]]
    # the unsupervised part is exactly the inference prompt: the template's own generation prompt
    for k, ex in enumerate(exs):
        prompt = r1.apply_chat_template(CHAT[:2 * k + 1], tokenize=False, add_generation_prompt=True,
                                        enable_thinking=True)
        first = ex.mask.index(True)
        assert r1.decode(ex.input_ids[:first]) == prompt and prompt.endswith("<｜Assistant｜><think>\n")
    # earlier turns are context as the template writes them: answer only, no reasoning
    assert "Try 7" not in r1.decode(exs[1].input_ids)
    dropped = encode_record(r1, Record(messages=CHAT), 4096, eos, reasoning="drop")
    assert supervised(r1, dropped[0]) == ["</think>\n\nNo: 91 = 7 x 13.<｜end▁of▁sentence｜>"]


def test_a_template_without_reasoning_drops_it_and_counts_it(llama):
    eos = {llama.convert_tokens_to_ids("<|eot_id|>")}
    plain = Record(messages=[{k: v for k, v in m.items() if k != "reasoning"} for m in CHAT])
    enc = encode_all(llama, [Record(messages=CHAT), plain], 4096, eos)
    assert enc.reasoning_dropped == 1 and enc.kept == [0, 1]
    assert enc.examples[0].input_ids == enc.examples[1].input_ids  # trained exactly as without it
    assert encode_all(llama, [Record(messages=CHAT)], 4096, eos, reasoning="drop").reasoning_dropped == 0


def test_an_anthropic_log_keeps_its_thinking_through_loading_and_encoding(qwen3, tmp_path):
    line = {"system": "You are a careful assistant.", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Is 91 prime?"}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "Try 7: 7 x 13 = 91.", "signature": "s"},
                                          {"type": "text", "text": "No: 91 = 7 x 13."}]}]}
    (tmp_path / "a.jsonl").write_text(json.dumps(line) + "\n")
    (rec,) = read_records([tmp_path / "a.jsonl"])
    eos = {qwen3.convert_tokens_to_ids("<|im_end|>")}
    (ex,) = encode_record(qwen3, rec, 4096, eos)
    assert supervised(qwen3, ex) == ["<think>\nTry 7: 7 x 13 = 91.\n</think>\n\nNo: 91 = 7 x 13.<|im_end|>"]


TOOL_CHAT = [
    {"role": "user", "content": "Find the sleep review."},
    {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "web_search", "arguments": {"query": "sleep memory"}}}]},
    {"role": "tool", "name": "web_search", "content": "Walker 2017 review"},
    {"role": "assistant", "content": "Walker (2017) reviews it."},
    {"role": "user", "content": "Thanks."},
    {"role": "assistant", "content": "You are welcome."}]
TOOLS = [{"type": "function", "function": {"name": "web_search", "description": "Search.",
                                           "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]


@pytest.mark.parametrize("train_on,expected", [
    ("all", ['{"name": "web_search", "parameters": {"query": "sleep memory"}}<|eot_id|>',
             "Walker (2017) reviews it.<|eot_id|>", "You are welcome.<|eot_id|>"]),
    ("last", ["You are welcome.<|eot_id|>"]),
    ("final", ["Walker (2017) reviews it.<|eot_id|>", "You are welcome.<|eot_id|>"]),
])
def test_train_on_picks_the_supervised_turns(llama, train_on, expected):
    eos = {llama.convert_tokens_to_ids("<|eot_id|>")}
    (ex,) = encode_record(llama, Record(messages=TOOL_CHAT, tools=TOOLS), 4096, eos, train_on=train_on)
    assert supervised(llama, ex) == expected
    assert "Walker 2017 review" in llama.decode(ex.input_ids)  # the context is all there


def test_train_on_final_rejects_a_record_with_only_tool_call_turns(llama, tmp_path):
    eos = {llama.convert_tokens_to_ids("<|eot_id|>")}
    calls_only = Record(messages=TOOL_CHAT[:3], tools=TOOLS, source="c.jsonl", line=5)
    with RejectWriter(tmp_path / "r.jsonl") as rejects:
        enc = encode_all(llama, [calls_only, Record(messages=TOOL_CHAT, tools=TOOLS)], 4096, eos, rejects,
                         train_on="final")
    (row,) = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert enc.kept == [1] and (row["code"], row["line"]) == ("no_target_turn", 5)


@pytest.mark.slow
def test_the_bundled_data_trains_on_an_r1_distill_base(tmp_path):
    """The issue's R1 run: every record used to be refused ("does not render conversations
    prefix-consistently"). Base: the qwen2.5 family fixture (real Qwen2 vocabulary, random weights)
    given the real R1-Distill-Qwen template and the tokens the real R1 tokenizer adds."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from iceburg.testing.families import family_model_dir
    from iceburg.testing.llama_cpp_assets import template_path
    from iceburg.training import ICEBURGFineTuner, ModelType, TrainingConfig

    torch.set_num_threads(1)
    base = tmp_path / "r1-base"
    shutil.copytree(family_model_dir("qwen2.5"), base)
    tok = AutoTokenizer.from_pretrained(base)
    tok.add_special_tokens({"additional_special_tokens": ["<｜User｜>", "<｜Assistant｜>", "<think>", "</think>"],
                            "eos_token": "<｜end▁of▁sentence｜>"})
    tok.chat_template = template_path("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B").read_text(encoding="utf-8")
    tok.save_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model.resize_token_embeddings(len(tok))
    model.generation_config.eos_token_id = [tok.eos_token_id]
    model.save_pretrained(base)
    cfg = TrainingConfig(base_model=str(base), model_type=ModelType.SURVEYOR, output_dir=str(tmp_path / "runs"),
                         output_name="r1", max_steps=2, num_threads=1, use_emergence_weighting=False,
                         max_seq_length=1024, export_formats=[])
    result = ICEBURGFineTuner(cfg).train()
    stats = json.loads((tmp_path / "runs" / "r1" / "data_stats.json").read_text())
    assert result.success and result.steps == 2 and stats["template_refused"] == 0
    # one example per assistant turn (the forced <think> prompt), so more examples than records
    assert stats["train_examples"] > result.records_read - result.records_rejected
    encode = {k: v for k, v in stats["rejected"].items() if k.startswith("encode:")}
    assert set(encode) <= {"encode:no_tool_format"}  # R1's template is not probed as writing tool calls


def test_qwen3_per_turn_examples_offer_the_tools(qwen3):
    """Qwen3 rewrites history, so each assistant turn is its own example; each example's prompt is
    the inference prompt, tool definitions included (they were left out before)."""
    eos = {qwen3.convert_tokens_to_ids("<|im_end|>")}
    exs = encode_record(qwen3, Record(messages=TOOL_CHAT, tools=TOOLS), 4096, eos)
    assert len(exs) == 3 and all("<tools>" in qwen3.decode(e.input_ids) for e in exs)
    assert supervised(qwen3, exs[0]) == [
        '<think>\n\n</think>\n\n<tool_call>\n{"name": "web_search", "arguments": {"query": "sleep memory"}}\n'
        '</tool_call><|im_end|>']
