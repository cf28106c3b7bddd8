"""`iceburg inspect`: records as the model sees them, the supervised tokens exactly those training
masks in, and every reason a record would be dropped, with its code. On iceburg-tiny (ChatML, the
CLI end to end with --html) and on the real Llama 3.2 template (llama.cpp's copy on its real
tokenizer), where a record with parallel calls is refused by the template."""

from __future__ import annotations

import json

from iceburg.app import main
from iceburg.training.inspection import inspect_records
from iceburg.truth.filter import TruthFilter

ANSWER = ("Slow-wave sleep supports memory consolidation: a 2017 review by Walker summarises the evidence "
          "from sleep deprivation studies and targeted memory reactivation.")
GOOD = {"messages": [{"role": "user", "content": "What does sleep do for memory?"},
                     {"role": "assistant", "content": ANSWER}]}
REFUSAL = {"messages": [{"role": "user", "content": "Summarise the sleep literature."},
                        {"role": "assistant", "content": "I'm sorry, but I cannot help with that request."}]}
BAD_ROLE = {"messages": [{"role": "wizard", "content": "hi"}]}
TOOLS = [{"type": "function", "function": {"name": "web_search", "description": "Search the web.",
          "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]


def _call(q: str) -> dict:
    return {"type": "function", "function": {"name": "web_search", "arguments": {"query": q}}}


PARALLEL = {"tools": TOOLS, "messages": [
    {"role": "user", "content": "Find the evidence on sleep and memory."},
    {"role": "assistant", "content": "", "tool_calls": [_call("sleep memory"), _call("slow-wave sleep")]},
    {"role": "tool", "name": "web_search", "content": "Walker 2017"},
    {"role": "tool", "name": "web_search", "content": "Diekelmann 2010"},
    {"role": "assistant", "content": ANSWER}]}


def _write(tmp_path, rows) -> str:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _codes(item) -> list[str]:
    return [f"{d.stage}:{d.code}" for d in item.drops]


def test_tiny_supervised_runs_and_counts(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    [good, refusal] = inspect_records(tok, [_write(tmp_path, [GOOD, REFUSAL])], truth=TruthFilter())
    assert good.kept and [t for t, sup in good.examples[0] if sup] == [ANSWER + "<|im_end|>"]
    text = tok.apply_chat_template(GOOD["messages"], tokenize=False)
    assert good.tokens == len(tok(text, add_special_tokens=False)["input_ids"])
    assert good.supervised == len(tok(ANSWER + "<|im_end|>", add_special_tokens=False)["input_ids"])
    assert _codes(refusal) == ["truth:refusal"]  # dropped, still shown as the model would see it
    assert refusal.examples and refusal.supervised > 0


def test_llama32_template_refusal_is_a_reason_not_a_stop(real_tokenizer, tmp_path):
    tok = real_tokenizer("llama-bpe", "meta-llama-Llama-3.2-3B-Instruct")
    eot = {tok.convert_tokens_to_ids("<|eot_id|>")}  # Llama 3.2's generation_config EOS for a turn
    items = inspect_records(tok, [_write(tmp_path, [GOOD, PARALLEL])], truth=TruthFilter(min_quality_score=0.0),
                            eos=eot)
    good, parallel = items
    assert good.kept and [t for t, sup in good.examples[0] if sup] == [ANSWER + "<|eot_id|>"]
    assert _codes(parallel) == ["encode:template_refused"] and not parallel.examples
    assert "single tool-calls" in parallel.drops[0].message
    # --split-parallel-calls: the same record trains as two single calls, each call supervised
    [_, split] = inspect_records(tok, [_write(tmp_path, [GOOD, PARALLEL])], truth=TruthFilter(min_quality_score=0.0),
                                 eos=eot, split_parallel_calls=True)
    sup = "".join(t for ex in split.examples for t, s in ex if s)
    assert split.kept and "sleep memory" in sup and "slow-wave sleep" in sup


def test_train_on_last_is_applied(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    two = {"messages": [*GOOD["messages"], {"role": "user", "content": "And dreams?"},
                        {"role": "assistant", "content": "Dreams occur mostly in REM sleep."}]}
    [item] = inspect_records(tok, [_write(tmp_path, [two])], truth=TruthFilter(min_quality_score=0.0), train_on="last")
    assert [t for ex in item.examples for t, s in ex if s] == ["Dreams occur mostly in REM sleep.<|im_end|>"]


def test_tiny_cli_shows_supervised_tokens_drops_and_writes_html(tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # rich wraps at the terminal width (80 under pytest)
    data = _write(tmp_path, [GOOD, REFUSAL, BAD_ROLE])
    out = tmp_path / "inspect.html"
    assert main(["inspect", data, "--base-model", str(tiny_model_dir), "--html", str(out)]) == 0
    printed = capsys.readouterr().out
    assert ":1  1 example(s)" in printed and "[kept]" in printed
    assert ":2  " in printed and "truth:refusal" in printed
    assert ":3  " in printed and "load:" in printed
    page = out.read_text(encoding="utf-8")
    # the supervised run is the answer and ChatML's end of turn, nothing else
    assert f"<span class='s'>{ANSWER}&lt;|im_end|&gt;</span>" in page
    assert "<script" not in page and page.startswith("<!doctype html>")
