"""The parts of `iceburg generate` that need no teacher: the job log (torn lines, settings), the
prompt parser, seed ranking, and the leak check on real records with the real embedder."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from iceburg.errors import IceburgError
from iceburg.generation.ask import parse_prompt
from iceburg.generation.job import JobFolder
from iceburg.records import Record


def test_job_log_keeps_whole_lines_and_refuses_other_settings(tmp_path):
    job = JobFolder(tmp_path / "job")
    assert job.open({"model_type": "surveyor", "seed": 0}) is False
    job.append({"key": "ask:0", "response": {"text": "a"}})
    job.append({"key": "answer:0", "error": "timeout"})  # a failed call is logged, not finished
    with open(job.requests, "ab") as fh:  # what a kill inside the write leaves
        fh.write(b'{"key": "ask:1", "resp')
    (job.root / ".rejects.jsonl.tmp123").write_text("partial")  # a writer killed before its rename
    assert job.open({"model_type": "surveyor", "seed": 0}) is True
    assert list(job.finished()) == ["ask:0"]
    assert job.requests.read_bytes().endswith(b"}\n")
    assert not list(job.root.glob(".*.jsonl.*"))
    job.append({"key": "ask:1", "response": {"text": "b"}})
    assert list(job.finished()) == ["ask:0", "ask:1"]
    with pytest.raises(IceburgError, match=r"seed: 0 -> 1.*new --job folder"):
        job.open({"model_type": "surveyor", "seed": 1})


@pytest.mark.parametrize("reply, prompt", [
    ("New task: How do tides affect coastal erosion?", "How do tides affect coastal erosion?"),
    ('Sure, happy to help.\nAnd here is the new task:\n"What limits lithium supply?"\nThis is rarer.',
     "What limits lithium supply?"),
    ("<task>\nSummarise the evidence on microplastics in drinking water.\n</task>",
     "Summarise the evidence on microplastics in drinking water."),
])
def test_parse_prompt_takes_the_task_out_of_a_chatty_reply(reply, prompt):
    assert parse_prompt(reply) == prompt


def test_combined_rank_puts_the_seed_high_on_every_signal_first():
    from iceburg.generation.seeds import _combine

    recs = [Record(messages=[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}],
                   source="d", line=i) for i in range(3)]
    rows = [(recs[0], "curated", {"gap": 0.1, "ifd": 0.5}), (recs[1], "curated", {"gap": 0.9, "ifd": 1.2}),
            (recs[2], "curated", {"gap": 0.5, "ifd": 0.9})]
    seeds = _combine(rows)
    assert [s.source for s in seeds] == ["d:1", "d:2", "d:0"] and seeds[0].score == 1.0 and seeds[-1].score == 0.0
    assert json.loads(json.dumps(seeds[0].to_json()))["parts"] == {"gap": 0.9, "ifd": 1.2}


def test_curator_drops_a_reworded_copy_of_a_heldout_record():
    from iceburg.data import sample_data_path
    from iceburg.config import ModelType
    from iceburg.data.loader import read_records
    from iceburg.emergence import SentenceEmbedder
    from iceburg.generation.keep import Curator, NearIndex
    from iceburg.records import RejectWriter
    from iceburg.truth.filter import TruthFilter

    records = list(read_records([str(sample_data_path(ModelType.SURVEYOR))], RejectWriter(None)))[:6]
    emb = SentenceEmbedder()
    held, train = NearIndex(emb), NearIndex(emb)
    held.add(records[:3], "heldout")
    train.add(records[3:5], "training")
    cur = Curator(TruthFilter(), "surveyor", held, train, NearIndex(emb))
    copy = json.loads(json.dumps(records[1].messages))
    count = iter(range(10**6))  # every 20th word replaced (~5%), layout kept so the truth filter still passes it
    copy[-1]["content"] = re.sub(r"[A-Za-z]{4,}", lambda m: "indeed" if next(count) % 20 == 0 else m[0],
                                 copy[-1]["content"])
    reasons = cur.check(Record(messages=copy))
    assert [r.code for r in reasons] == ["heldout_duplicate"] and "heldout:" in reasons[0].message
    assert [r.code for r in cur.check(Record(messages=records[3].messages))] == ["exact_duplicate"]
    assert cur.check(records[5]) == [] and cur.kept == [records[5]]
    assert [r.code for r in cur.check(records[5])] == ["exact_duplicate"]  # now among the generated


def _surveyor_records():
    from iceburg.config import ModelType
    from iceburg.data import sample_data_path
    from iceburg.data.loader import read_records
    from iceburg.records import RejectWriter

    return list(read_records([str(sample_data_path(ModelType.SURVEYOR))], RejectWriter(None)))


def test_one_pass_ifd_gives_the_two_pass_losses(tiny_model_dir):
    """One right-padded batch of (prompt + answer, answer alone) per record scores the same tokens as
    two separate passes, with the same losses up to float summation order."""
    from iceburg.evaluation.models import HfModel
    from iceburg.generation.difficulty import ifd, record_pair

    records = _surveyor_records()
    records = records[:8] + [r for r in records if r.tools]  # plain and tool-calling transcripts
    hf = HfModel(tiny_model_dir, records, threads=1)
    # 2048: the two-tool transcripts run to 1090-1324 tokens, so 512 (the default) would leave no answer token
    cond = hf.record_losses(records, 2048)
    plain = hf.text_losses([r.assistant_text() for r in records], 2048)
    measured = 0
    for r, c, p in zip(records, cond, plain):
        pair = record_pair(hf, r, 2048)
        assert (pair is None) == (c is None)
        if pair is None:
            continue
        measured += 1
        assert pair[0][1] == c[1] and pair[1][1] == p[1]  # the same tokens are scored
        # fp32 sums of <= 512 per-token losses: a [2, L] batch and a [1, L] pass reduce in a different
        # order (and sdpa may take another kernel with a mask), so the sums differ by rounding only,
        # ~1e-7 relative per operation; 1e-5 relative leaves room for that and catches any wrong
        # token, position or mask (one wrong token moves a sum by >= 1e-3 relative)
        assert pair[0][0] == pytest.approx(c[0], rel=1e-5) and pair[1][0] == pytest.approx(p[0], rel=1e-5)
        assert ifd(*pair) == pytest.approx((c[0] / c[1]) / (p[0] / p[1]), rel=1e-5)
    assert measured == len(records)  # the tiny model's ChatML gets the Hermes tool format: all encode
    from iceburg.generation.difficulty import ifd_scores

    one, two = (ifd_scores(records, str(tiny_model_dir), 2048, 1, one_pass=flag) for flag in (True, False))
    np.testing.assert_allclose(one, two, rtol=1e-5)  # the same bound and reason as above


def _topic_records():
    """Two topics of real questions and answers (10 on tides, 6 on bread) and one record far from both."""
    def rec(q: str, a: str, i: int) -> Record:
        return Record(messages=[{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                      source="t", line=i)

    ports = ["Brest", "Saint-Malo", "Cherbourg", "Le Havre", "Dover", "Plymouth", "Calais", "Dieppe", "Granville",
             "Roscoff"]
    breads = ["rye", "spelt", "sourdough", "brioche", "baguette", "focaccia"]
    out = [rec(f"When is high tide at {p} tomorrow and how high will the water get?",
               f"High tide at {p} is at 06:12 with a range of about 6 metres; spring tides run higher.", i)
           for i, p in enumerate(ports)]
    out += [rec(f"How long should I proof {b} dough before baking it?",
                f"Proof {b} dough until it has roughly doubled, one to two hours at room temperature.", 20 + i)
            for i, b in enumerate(breads)]
    out.append(rec("Which Icelandic saga tells of Egill Skallagrimsson's poetry?",
                   "Egils saga, written in the 13th century, tells of the poet Egill.", 99))
    return out


def test_cluster_signal_ranks_noise_then_small_cluster_then_large_cluster():
    """HDBSCAN over real MiniLM embeddings: the lone record lies between the clusters (score 1), the
    small cluster's records rank above the large one's."""
    from iceburg.emergence import SentenceEmbedder
    from iceburg.generation.seeds import cluster_part

    records = _topic_records()
    score = cluster_part(SentenceEmbedder().embed_records(records))
    tides, bread, lone = score[:10], score[10:16], score[16]
    assert lone == 1.0 and tides.max() < 1.0 and bread.max() < 1.0  # both topics are clusters
    assert bread.min() > tides.max()  # 6 of the largest 10: at least 1 - 6/10 = 0.4 for each
    assert cluster_part(SentenceEmbedder().embed_records(records[:9])) is None  # < 2 x MIN_CLUSTER records


def test_rank_seeds_combines_the_cluster_signal_on_the_bundled_sample():
    from iceburg.emergence import SentenceEmbedder
    from iceburg.generation.seeds import WEIGHTS, rank_seeds

    records = _surveyor_records()
    seeds = rank_seeds(records, [], strategy="curiosity", embedder=SentenceEmbedder(), student=None, seed=0)
    assert len(seeds) == len(records) and all(set(s.parts) == {"gap", "novel", "cluster"} for s in seeds)
    assert sum(WEIGHTS.values()) == pytest.approx(1.0)
    between = {s.source for s in seeds if s.parts["cluster"] == 1.0}  # noise between the sample's clusters
    topic = {r.id: r.metadata.get("topic") for r in records}
    # the sample's one-off topics lie between its themes (seeds.MIN_SAMPLES: 22 of 69 measured)
    assert 10 < len(between) < 35 and {"data protection law", "software security"} <= {topic[x] for x in between}
    assert {s.source: s.tools for s in seeds if s.tools} == {r.id: r.tools for r in records if r.tools}


def _llama_cpp_call(arguments: str, name: str = "web_search") -> dict:
    """A non-streamed answer of llama-cpp-python 0.3.36's server to a named `tool_choice`, in the
    shape its `_convert_completion_to_chat_function` builds (content None, `function_call` and
    `tool_calls` both set, arguments as the JSON text the grammar produced)."""
    call = {"name": name, "arguments": arguments}
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1765000000, "model": "smollm2-135m",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": None,
                         "message": {"role": "assistant", "content": None, "function_call": call,
                                     "tool_calls": [{"id": f"call__0_{name}_cmpl-1", "type": "function",
                                                     "function": call}]}}],
            "usage": {"prompt_tokens": 210, "completion_tokens": 14, "total_tokens": 224}}


def _asked(seed: Record, n: int = 0) -> Record:
    from iceburg.config import SYSTEM_PROMPTS, ModelType

    return Record(messages=[{"role": "system", "content": SYSTEM_PROMPTS[ModelType.SURVEYOR]},
                            {"role": "user", "content": "What did the 2023 Cochrane review find on zinc for colds?"}],
                  source="generated", line=n, agent_type="surveyor", metadata={"source": "generated", "item": n})


def test_a_teacher_tool_call_is_kept_as_a_call_turn_the_trainer_reads_and_supervises(tmp_path, tiny_model_dir):
    from openai.types.chat import ChatCompletion

    from iceburg.config import ModelType, TrainingConfig
    from iceburg.emergence import SentenceEmbedder
    from iceburg.evaluation.models import HfModel
    from iceburg.generation.keep import Curator, NearIndex
    from iceburg.generation.run import answer_record
    from iceburg.generation.teacher import response_fields
    from iceburg.pipeline import read_step, run_steps, truth_step
    from iceburg.records import RejectWriter
    from iceburg.training.encoding import encode
    from iceburg.truth.filter import TruthFilter

    seed = next(r for r in _surveyor_records() if r.tools and len(r.tools) == 2)
    ans = response_fields(ChatCompletion.model_validate(_llama_cpp_call('{"query": "Cochrane zinc common cold 2023"}')))
    assert ans["finish_reason"] == "tool_calls" and ans["text"] == "" and len(ans["tool_calls"]) == 1
    record, reasons = answer_record(_asked(seed), ans, seed.tools, {"item": 0})
    assert reasons == [] and record.tools == seed.tools and record.metadata["answer"] == "tool_call"
    assert [m["role"] for m in record.messages] == ["system", "user", "assistant"]  # no invented tool result
    assert record.messages[-1]["tool_calls"] == [{"type": "function", "id": "call__0_web_search_cmpl-1", "function": {
        "name": "web_search", "arguments": {"query": "Cochrane zinc common cold 2023"}}}]
    emb = SentenceEmbedder()
    cur = Curator(TruthFilter(), "surveyor", NearIndex(emb), NearIndex(emb), NearIndex(emb))
    assert cur.check(record) == [] and record.quality_score == 1.0
    data = tmp_path / "generated.jsonl"
    data.write_text(json.dumps(record.to_json()) + "\n")
    cfg = TrainingConfig(model_type=ModelType.SURVEYOR, data_path=[str(data)])
    state = run_steps(cfg, RejectWriter(None), (read_step, truth_step))  # what iceburg-train reads first
    assert len(state.records) == 1 and state.records[0].messages[-1]["tool_calls"] == record.messages[-1]["tool_calls"]
    hf = HfModel(tiny_model_dir, state.records)  # installs the Hermes tool format, as training does
    ex = encode(hf.tokenizer, state.records[0], 1024, set(hf.eos))
    supervised = hf.tokenizer.decode([t for t, m in zip(ex.input_ids, ex.mask) if m])
    assert "<tool_call>" in supervised and "Cochrane zinc common cold 2023" in supervised


@pytest.mark.parametrize("arguments, name, code, words", [
    ('{"query": "zinc"}', "calculate", "invalid_tool_call", "unknown function"),  # not in the seed's tools
    ('{"query": "zinc", "max_res', "web_search", "invalid_tool_call", "not valid JSON"),  # cut by max_tokens
    ('{"max_results": 3}', "web_search", "invalid_tool_call", "'query' is missing"),
    ('{"query": "   "}', "web_search", "invalid_tool_call", "'query' is missing or blank"),
    ('{"query": "zinc", "max_results": "three"}', "web_search", "invalid_tool_call", "not of type integer"),
    ('{"query": "zinc", "lang": "en"}', "web_search", "invalid_tool_call", "'lang' is not in its schema"),
])
def test_a_tool_call_that_does_not_fit_its_tools_is_rejected_with_the_reason(arguments, name, code, words):
    from openai.types.chat import ChatCompletion

    from iceburg.emergence import SentenceEmbedder
    from iceburg.generation.keep import Curator, NearIndex
    from iceburg.generation.run import answer_record
    from iceburg.generation.teacher import response_fields
    from iceburg.truth.filter import TruthFilter

    seed = next(r for r in _surveyor_records() if r.tools and len(r.tools) == 2)
    record, reasons = answer_record(_asked(seed), response_fields(ChatCompletion.model_validate(
        _llama_cpp_call(arguments, name))), seed.tools, {})
    if not reasons:
        emb = SentenceEmbedder()
        reasons = Curator(TruthFilter(), "surveyor", NearIndex(emb), NearIndex(emb), NearIndex(emb)).check(record)
    assert [r.code for r in reasons] == [code] and words in reasons[0].message


def test_a_tool_call_without_tools_sent_is_rejected():
    from openai.types.chat import ChatCompletion

    from iceburg.generation.run import answer_record
    from iceburg.generation.teacher import response_fields

    seed = next(r for r in _surveyor_records() if r.tools)
    ans = response_fields(ChatCompletion.model_validate(_llama_cpp_call('{"query": "zinc"}')))
    record, reasons = answer_record(_asked(seed), ans, None, {})
    assert [r.code for r in reasons] == ["invalid_tool_call"] and record.metadata["answer"] == "tool_call"


def test_answer_request_sends_the_seeds_tools_and_the_named_choice():
    from iceburg.generation.ask import answer_request, ask_request
    from iceburg.generation.seeds import Seed

    tools = next(r for r in _surveyor_records() if r.tools).tools
    kw = dict(max_tokens=8, temperature=0.0, sampling_seed=1)
    assert "tools" not in answer_request("q?", "sys", **kw)
    assert answer_request("q?", "sys", tools=tools, **kw)["tools"] == tools
    assert "tool_choice" not in answer_request("q?", "sys", tools=tools, **kw)  # auto: the endpoint's default
    assert answer_request("q?", "sys", tools=tools, tool_choice="web_search", **kw)["tool_choice"] == {
        "type": "function", "function": {"name": "web_search"}}
    assert "tool_choice" not in answer_request("q?", "sys", tools=tools, tool_choice="no_such_tool", **kw)
    assert answer_request("q?", "sys", tools=tools, tool_choice="required", **kw)["tool_choice"] == "required"
    seed = Seed("s0", "d:1", "curated", [{"role": "user", "content": "Find the IPCC figure."}], None, tools=tools)
    assert "- web_search: " in ask_request(seed, "sys", **kw)["messages"][0]["content"]
