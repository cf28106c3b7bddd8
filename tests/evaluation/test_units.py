"""The evaluation's parts on their own: paired bootstrap, tool-call parsing and scoring, gates, suites."""

from __future__ import annotations

import json

import numpy as np
import pytest

from iceburg.evaluation.bootstrap import ItemValues, paired_bootstrap
from iceburg.evaluation.gates import GateError, check_gates, failed, parse_gate
from iceburg.evaluation.suites import build_suite, read_eval_data
from iceburg.evaluation.toolcalls import UNPARSED, canonical, parse_calls, score_calls
from iceburg.errors import IceburgError
from iceburg.records import Record


def _values(xs) -> ItemValues:
    v = ItemValues()
    for x in xs:
        v.add(x)
    return v


# -- bootstrap -------------------------------------------------------------------------------------
def test_bootstrap_identical_sides_give_zero_interval():
    rng = np.random.default_rng(1)
    xs = rng.random(50).tolist()
    m = paired_bootstrap(_values(xs), _values(xs))
    assert m["delta"] == 0 and m["ci95"] == [0.0, 0.0] and m["n"] == 50


def test_bootstrap_is_paired_and_covers_a_known_shift():
    rng = np.random.default_rng(2)
    base = rng.normal(0, 1, 200)
    tuned = base + 0.5 + rng.normal(0, 0.1, 200)  # per-item shift 0.5, small paired noise
    m = paired_bootstrap(_values(base.tolist()), _values(tuned.tolist()))
    lo, hi = m["ci95"]
    assert lo < 0.5 < hi and lo > 0.4  # paired: the item spread (sd 1) cancels; sd of mean diff ~0.007
    # unpaired resampling would give an interval ~sqrt(2) / sqrt(200) * 1.96 * 2 ~ 0.55 wide; paired is << 0.1
    assert hi - lo < 0.1
    # seeded: the same items give the same interval
    assert paired_bootstrap(_values(base.tolist()), _values(tuned.tolist()))["ci95"] == m["ci95"]


def test_bootstrap_ratio_metric_and_items_without_the_metric():
    base, tuned = ItemValues(), ItemValues()
    for b, t, den in [(2.0, 1.0, 2), (9.0, 3.0, 3), (0, 0, 0), (4.0, 4.0, 1)]:
        base.num.append(b), base.den.append(den), tuned.num.append(t), tuned.den.append(den)
    m = paired_bootstrap(base, tuned)
    assert m["base"] == pytest.approx(15 / 6) and m["tuned"] == pytest.approx(8 / 6)
    assert m["n"] == 3  # the item with denominator 0 does not carry the metric
    one = paired_bootstrap(_values([1.0, None]), _values([0.0, None]))
    assert one["n"] == 1 and one["ci95"] is None  # no interval from one item


# -- tool calls ------------------------------------------------------------------------------------
def test_parse_calls_in_the_trained_formats():
    hermes = 'Let me look.\n<tool_call>\n{"name": "search", "arguments": {"q": "GGUF", "n": 3}}\n</tool_call>'
    assert parse_calls(hermes) == [("search", canonical({"n": 3, "q": "GGUF"}))]
    two = ('<tool_call>\n{"name": "a", "arguments": {}}\n</tool_call>\n'
           '<tool_call>\n{"name": "b", "arguments": "{\\"x\\": 1}"}\n</tool_call>')
    assert parse_calls(two) == [("a", "{}"), ("b", '{"x":1}')]
    assert parse_calls('[TOOL_CALLS] [{"name": "f", "arguments": {"y": [1, 2]}}]') == [("f", '{"y":[1,2]}')]
    assert parse_calls('<|python_tag|>{"name": "f", "parameters": {"y": 2}}') == [("f", '{"y":2}')]
    assert parse_calls("The answer is 42. {not json}") == []
    assert parse_calls('{"answer": 42}') == []  # a JSON answer that is not a call
    # a call block that does not parse is still a (wrong) call, never "no call"
    assert parse_calls("<tool_call>\n{broken\n</tool_call>")[0][0] == UNPARSED
    assert parse_calls('<tool_call>\n{"name": "s", "arguments": {"q": 1}}')  # unclosed at the budget


def test_score_calls_rules():
    exp = [("search", canonical({"q": "a", "k": 1})), ("fetch", canonical({"url": "u"}))]
    swapped = list(reversed(exp))  # parallel calls: order does not matter
    assert score_calls(exp, swapped)["exact"] == 1.0
    wrong_type = [("search", canonical({"q": "a", "k": "1"})), exp[1]]  # "1" is not 1 in JSON
    s = score_calls(exp, wrong_type)
    assert s["exact"] == 0.0 and s["names"] == 1.0 and s["false_call"] is None
    assert score_calls(exp, exp[:1])["exact"] == 0.0  # a missing parallel call
    assert score_calls([], [])["exact"] == 1.0 and score_calls([], [])["false_call"] == 0.0
    assert score_calls([], exp)["false_call"] == 1.0 and score_calls([], exp)["exact"] == 0.0


# -- gates -----------------------------------------------------------------------------------------
METRICS = {"truth_pass_rate": {"base": 0.80, "tuned": 0.70, "delta": -0.10, "ci95": [-0.25, 0.05], "n": 20},
           "forgetting_loss": {"base": 3.00, "tuned": 3.04, "delta": 0.04, "ci95": [0.02, 0.06], "n": 40},
           "tool_call_accuracy": {"base": None, "tuned": None, "delta": None, "ci95": None, "n": 0}}


def test_gates_parse_and_check():
    g = parse_gate("truth_pass_rate >= base-0.02")
    assert (g.metric, g.op, g.relative, g.offset) == ("truth_pass_rate", ">=", True, -0.02)
    assert parse_gate("stop_rate>=0.5").relative is False
    res = check_gates(["forgetting_loss<=base+0.05", "truth_pass_rate>=base-0.02", "tool_call_accuracy>=base",
                       "helpfulness>=0.5"], METRICS)
    assert [r["passed"] for r in res] == [True, False, False, False]
    msg = res[1]["message"]
    for part in ("truth_pass_rate", "0.7000", "0.8000", "0.7800", "[-0.2500, +0.0500]", "n=20"):
        assert part in msg, (part, msg)
    assert "not measured (n=0)" in res[2]["message"]
    assert "not a metric" in res[3]["message"]
    unmeasured = check_gates(["tool_call_accuracy>=base"], {})[0]  # no tool turn was evaluated at all
    assert not unmeasured["passed"] and "not measured (n=0)" in unmeasured["message"]
    assert len(failed(res)) == 3


@pytest.mark.parametrize("bad", ["truth_pass_rate>base-", "pass rate>=base", "x=>base", "x>=median"])
def test_malformed_gate_is_a_user_error(bad):
    with pytest.raises(GateError, match="METRIC OP"):
        parse_gate(bad)


# -- suites ----------------------------------------------------------------------------------------
TOOL_RECORD = Record(messages=[
    {"role": "user", "content": "What is the weather in Oslo?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "weather", "arguments": {"city": "Oslo"}}}]},
    {"role": "tool", "content": "-3 C, snow", "name": "weather"},
    {"role": "assistant", "content": "It is -3 C and snowing in Oslo."}],
    tools=[{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
    source="t.jsonl", line=1)
PLAIN = Record(messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
               source="t.jsonl", line=2)


def test_suite_answer_after_tool_result_and_tool_turns():
    s = build_suite([TOOL_RECORD, PLAIN], ["heldout", "heldout"], n_prompts=8, agent="surveyor")
    answers = s.answers
    assert [p.key for p in answers] == ["t.jsonl:1#3", "t.jsonl:2#1"]
    assert answers[0].messages[-1]["role"] == "tool" and answers[0].reference.startswith("It is -3 C")
    tools = s.tool_prompts
    assert [(p.key, p.expected) for p in tools] == [("t.jsonl:1#1", [("weather", '{"city":"Oslo"}')]),
                                                    ("t.jsonl:1#3", [])]  # no call where none was made
    assert answers[0] is tools[1]  # the final answer is asked once, scored both ways
    assert len(build_suite([TOOL_RECORD, PLAIN], ["heldout"] * 2, n_prompts=1, agent=None).answers) == 1


def test_eval_data_any_shape_and_bad_lines(tmp_path):
    f = tmp_path / "eval.jsonl"
    f.write_text(json.dumps({"conversations": [{"from": "human", "value": "Is coffee healthy?"},
                                               {"from": "gpt", "value": "Moderate intake is linked to..."}]}) + "\n"
                 + json.dumps({"instruction": "Define entropy.", "output": "A measure of disorder."}) + "\n")
    records = read_eval_data([str(f)])
    assert [r.messages[0]["content"] for r in records] == ["Is coffee healthy?", "Define entropy."]
    f.write_text(f.read_text() + "{not json\n")
    with pytest.raises(IceburgError, match="1 line"):
        read_eval_data([str(f)])
    with pytest.raises(IceburgError, match="no such file"):
        read_eval_data([str(tmp_path / "missing.jsonl")])


def test_gates_from_yaml_and_repeated_flags(tmp_path):
    from iceburg.cli import build_parser, make_config
    from iceburg.config import TrainingConfig

    y = tmp_path / "c.yaml"
    y.write_text("run:\n  model_type: surveyor\n"
                 "eval:\n  gates: ['tool_call_accuracy>=base', 'forgetting_loss<=base+0.05']\n")
    assert TrainingConfig.from_yaml(str(y)).gates == ["tool_call_accuracy>=base", "forgetting_loss<=base+0.05"]
    args = build_parser().parse_args(["--model-type", "surveyor", "--gate", "a>=base", "--gate", "b<=base+0.05"])
    assert make_config(args).gates == ["a>=base", "b<=base+0.05"]


def test_train_refuses_a_malformed_gate_before_training(tmp_path, capsys):
    from iceburg.cli import main

    rc = main(["--model-type", "surveyor", "--output-dir", str(tmp_path), "--gate", "truth pass>=base"])
    assert rc == 2 and "--gate 'truth pass>=base'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing was trained or written
