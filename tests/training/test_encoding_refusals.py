"""A record the chat template refuses is a reject, never a stop (issue 25): the REAL Llama 3.2
Instruct template (llama.cpp's copy, on the real Llama 3 vocabulary) on the BUNDLED surveyor data,
whose agent transcripts include parallel tool calls that template raises on."""

from __future__ import annotations

import json

import pytest

from iceburg.data import sample_data_path
from iceburg.data.loader import read_records
from iceburg.errors import IceburgError
from iceburg.records import Record, RejectWriter
from iceburg.training.encoding import encode_all
from iceburg.testing.family_matrix import supervised_segments
from iceburg.training.tool_render import tool_policy


@pytest.fixture(scope="module")
def llama(real_tokenizer):
    return real_tokenizer("llama-bpe", "meta-llama-Llama-3.2-3B-Instruct")


@pytest.fixture(scope="module")
def surveyor():
    with RejectWriter(None) as load:
        records = list(read_records([sample_data_path("surveyor")], load))
    # the sample's deliberate bad lines (README): one each of these, rejected at load
    assert load.counts == {"load:invalid_json": 1, "load:invalid_record": 2, "load:invalid_tool_call": 1}
    return records


def parallel_lines(records: list[Record]) -> list[int]:
    return [r.line for r in records if any(len(m.get("tool_calls", ())) > 1 for m in r.messages)]


def test_llama32_rejects_the_records_it_refuses_and_trains_on_the_rest(llama, surveyor, tmp_path):
    eos = {llama.convert_tokens_to_ids("<|eot_id|>")}
    kind, skip = tool_policy(llama, surveyor)
    assert kind is None  # Llama 3.2 writes tool calls natively
    with RejectWriter(tmp_path / "rejects.jsonl") as rejects:
        enc = encode_all(llama, surveyor, 8192, eos, rejects, skip=skip)
    rows = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    parallel = parallel_lines(surveyor)
    assert 68 in parallel  # the line the issue saw stop the whole run
    assert [(r["stage"], r["code"], r["line"]) for r in rows] == [("encode", "template_refused", n) for n in parallel]
    assert all("only supports single tool-calls at once" in r["reasons"][0] for r in rows)
    assert all(r["record"]["messages"] for r in rows)  # the record is kept whole, recoverable
    assert enc.refused == len(parallel) and rejects.counts == {"encode:template_refused": len(parallel)}
    kept = {surveyor[i].line for i in enc.kept}
    assert kept == {r.line for r in surveyor} - set(parallel)
    single_call = [r.line for r in surveyor if any(m.get("tool_calls") for m in r.messages)
                   and r.line not in parallel]
    assert single_call and set(single_call) <= kept  # the other tool-calling transcripts still train


def test_strict_keeps_the_stop_and_names_the_record(llama, surveyor):
    eos = {llama.convert_tokens_to_ids("<|eot_id|>")}
    first = next(r for r in surveyor if r.line in parallel_lines(surveyor))
    with pytest.raises(IceburgError, match=rf"surveyor.jsonl:{first.line}: the chat template refuses .*single "
                                           r"tool-calls.*--strict is on"):
        encode_all(llama, [first], 8192, eos, RejectWriter(None), strict=True)


def test_a_template_that_raises_on_a_plain_record_is_a_reject(tiny_model_dir, tmp_path):
    """A template's own raise_exception on a record without tools (here: a template that accepts
    only alternating user/assistant turns) is a reject with the template's message."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = ("{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
                         "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant') }}"
                         "{% endif %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    good = Record(messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                  source="d.jsonl", line=1)
    bad = Record(messages=[{"role": "user", "content": "q"}, {"role": "user", "content": "q2"},
                           {"role": "assistant", "content": "a"}], source="d.jsonl", line=2)
    with RejectWriter(tmp_path / "r.jsonl") as rejects:
        enc = encode_all(tok, [good, bad], 256, {tok.eos_token_id}, rejects)
    (row,) = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert enc.kept == [0] and (row["code"], row["line"]) == ("template_refused", 2)
    assert row["reasons"] == ["d.jsonl:2: the chat template refuses this record: Conversation roles must "
                              "alternate user/assistant/user/assistant"]


CALLS = [{"type": "function", "id": f"call_{k}", "function": {"name": n, "arguments": {"query": q}}}
         for k, (n, q) in enumerate([("web_search", "sleep memory"), ("fetch_url", "https://doi.org/10.1/x")])]
PARALLEL = [{"role": "user", "content": "Find and read the sleep review."},
            {"role": "assistant", "content": "", "tool_calls": CALLS},
            {"role": "tool", "tool_call_id": "call_1", "name": "fetch_url", "content": "Full text of the review"},
            {"role": "tool", "tool_call_id": "call_0", "name": "web_search", "content": "Walker 2017 review"},
            {"role": "assistant", "content": "Walker (2017) reviews it."}]
TOOLS = [{"type": "function", "function": {"name": n, "description": "d", "parameters": {
    "type": "object", "properties": {"query": {"type": "string"}}}}} for n in ("web_search", "fetch_url")]


def test_split_parallel_calls_trains_them_as_consecutive_single_calls(llama, tmp_path):
    """`--split-parallel-calls`: each parallel call becomes its own assistant turn followed by the
    result answering it (matched by id), which the Llama 3.2 template writes."""
    from iceburg.data.tool_calls import split_parallel_calls

    split = split_parallel_calls(PARALLEL)
    assert [(m["role"], m.get("tool_calls", [{}])[0].get("id"), m.get("tool_call_id")) for m in split] == [
        ("user", None, None), ("assistant", "call_0", None), ("tool", None, "call_0"),
        ("assistant", "call_1", None), ("tool", None, "call_1"), ("assistant", None, None)]
    eos = {llama.convert_tokens_to_ids("<|eot_id|>")}
    rec = Record(messages=PARALLEL, tools=TOOLS, source="p.jsonl", line=4)
    assert encode_all(llama, [rec], 4096, eos).refused == 1  # without the flag: refused
    with RejectWriter(tmp_path / "r.jsonl") as rejects:
        enc = encode_all(llama, [rec], 4096, eos, rejects, split_parallel_calls=True)
    assert rejects.total == 0 and enc.split_calls == 1 and enc.examples[0].id.startswith("p.jsonl:4")
    sup = [llama.decode(s) for s in supervised_segments(enc.examples[0])]
    assert sup == ['{"name": "web_search", "parameters": {"query": "sleep memory"}}<|eot_id|>',
                   '{"name": "fetch_url", "parameters": {"query": "https://doi.org/10.1/x"}}<|eot_id|>',
                   "Walker (2017) reviews it.<|eot_id|>"]


def test_split_does_not_rescue_text_the_template_drops(llama, surveyor, tmp_path):
    """The bundled parallel-call turns also say something beside their calls ("I'll compute
    both..."); Llama 3.x writes a call turn as the call alone, so even split they stay rejected,
    now with that reason (the text would silently vanish otherwise)."""
    eos = {llama.convert_tokens_to_ids("<|eot_id|>")}
    rec = next(r for r in surveyor if r.line == 68)
    with RejectWriter(tmp_path / "r.jsonl") as rejects:
        enc = encode_all(llama, [rec], 8192, eos, rejects, split_parallel_calls=True)
    (row,) = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert enc.split_calls == 0 and row["code"] == "template_refused"
    assert "leaves out assistant content" in row["reasons"][0]


@pytest.mark.slow
def test_the_bundled_data_trains_on_a_llama32_base_without_a_stop(tmp_path):
    """The issue's run: a Llama 3.2 base (the family fixture: real vocabulary and template, random
    weights) on the bundled surveyor data stopped with "surveyor.jsonl:68: the chat template
    refuses ...". Now it trains, and line 68 is in rejects.jsonl with the template's message."""
    import torch

    from iceburg.testing.families import family_model_dir
    from iceburg.training import ICEBURGFineTuner, ModelType, TrainingConfig

    torch.set_num_threads(1)
    cfg = TrainingConfig(base_model=str(family_model_dir("llama3.2")), model_type=ModelType.SURVEYOR,
                         output_dir=str(tmp_path), output_name="llama", max_steps=2, num_threads=1,
                         use_emergence_weighting=False, max_seq_length=1024, export_formats=[])
    result = ICEBURGFineTuner(cfg).train()
    assert result.success and result.steps == 2
    stats = json.loads((tmp_path / "llama" / "data_stats.json").read_text())
    assert stats["template_refused"] == 1 and stats["rejected"]["encode:template_refused"] == 1
    rows = [json.loads(x) for x in (tmp_path / "llama" / "rejects.jsonl").read_text().splitlines()]
    (refused,) = [r for r in rows if r["code"] == "template_refused"]
    assert refused["line"] == 68 and "only supports single tool-calls at once" in refused["reasons"][0]
