"""GRPO rewards on the bundled surveyor transcripts: each reward scores real answers the way
`iceburg eval` scores them, a failing reward stops the step naming the prompt, and the config
refuses what GRPO cannot do before any work."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from iceburg.config import TrainingConfig
from iceburg.data import SAMPLE_DIR
from iceburg.errors import IceburgError
from iceburg.evaluation.rewards import (RewardError, RewardSource, build_rewards, format_reward, parse_weights,
                                        tool_args_reward, tool_call_reward)
from iceburg.evaluation.suites import build_suite
from iceburg.training.grpo import Completion


@pytest.fixture(scope="module")
def sources():
    from iceburg.data.loader import read_records

    records = list(read_records([SAMPLE_DIR / "surveyor.jsonl"]))
    suite = build_suite(records, ["train"] * len(records), len(records), "surveyor", max_tool_prompts=10 ** 6)
    return [RewardSource(p, records[p.record]) for p in suite.prompts]


def _c(text: str, stopped: bool = True) -> Completion:
    return Completion(text, stopped, 10)


def test_tool_call_reward_compares_name_and_arguments_as_json(sources):
    s = next(s for s in sources if s.prompt.expected)
    (name, args), = s.prompt.expected
    right = f'<tool_call>\n{{"name": "{name}", "arguments": {args}}}\n</tool_call>'
    # the same arguments, keys reordered and spaced differently: equal as JSON
    reordered = json.dumps(dict(reversed(list(json.loads(args).items()))), indent=2)
    assert tool_call_reward(s, _c(f'<tool_call>{{"name": "{name}", "arguments": {reordered}}}</tool_call>')) == 1.0
    assert tool_call_reward(s, _c(right)) == 1.0
    assert tool_call_reward(s, _c(right.replace(name, name + "_x"))) == 0.0
    assert tool_call_reward(s, _c('<tool_call>{"name": "%s", "arguments": {}}</tool_call>' % name)) == 0.0
    assert tool_call_reward(s, _c("I would search the web.")) == 0.0
    answer_only = next(s for s in sources if s.prompt.expected is None)
    assert tool_call_reward(answer_only, _c(right)) is None  # does not apply: left out of the sum


def test_tool_args_shaping_gives_partial_credit_on_the_way_to_the_exact_call(sources):
    s = next(s for s in sources if s.prompt.expected and len(json.loads(s.prompt.expected[0][1])) >= 2)
    (name, args), = s.prompt.expected
    logged = json.loads(args)
    call = lambda n, a: f'<tool_call>\n{{"name": "{n}", "arguments": {json.dumps(a)}}}\n</tool_call>'  # noqa: E731
    assert tool_args_reward(s, _c(call(name, logged))) == 1.0 == tool_call_reward(s, _c(call(name, logged)))
    # one of k argument values wrong: the other k-1 of the k+1 distinct pairs (Jaccard), exact reward 0
    k = len(logged)
    wrong = {**logged, next(iter(logged)): "something else"}
    assert tool_args_reward(s, _c(call(name, wrong))) == pytest.approx((k - 1) / (k + 1))
    assert tool_call_reward(s, _c(call(name, wrong))) == 0.0
    assert tool_args_reward(s, _c(call(name, {}))) == 0.0  # the name alone earns nothing
    assert tool_args_reward(s, _c(call(name + "_x", logged))) == 0.0  # another tool: no credit
    # a second, unasked-for call halves the credit (divided by max(logged, made) calls)
    assert tool_args_reward(s, _c(call(name, logged) + call(name, wrong))) == pytest.approx(0.5)
    assert tool_args_reward(s, _c("I would search the web.")) == 0.0
    answer_only = next(s for s in sources if s.prompt.expected is None)
    assert tool_args_reward(answer_only, _c(call(name, logged))) is None
    assert build_rewards(TrainingConfig(objective="grpo")).names == ["truth", "tool_call", "format"]  # off by default


def test_format_reward_needs_end_of_turn_and_balanced_reasoning(sources):
    s = sources[0]
    assert format_reward(s, _c("An answer.")) == 1.0
    assert format_reward(s, _c("An answer that ran out of budget", stopped=False)) == 0.0
    assert format_reward(s, _c("<think>unfinished reasoning. An answer.")) == 0.0
    assert format_reward(s, _c("<think>checked</think> An answer.")) == 1.0


def test_truth_and_reference_rewards_rank_the_logged_answer_above_garbage(sources):
    cfg = TrainingConfig(objective="grpo", reward_weights=["reference=1"])
    rewards = build_rewards(cfg)
    assert rewards.names == ["truth", "tool_call", "format", "reference"]
    answers = [s for s in sources if s.prompt.answer][:4]
    good = [_c(s.prompt.reference) for s in answers]
    bad = [_c("sorry sorry sorry sorry sorry sorry sorry sorry sorry sorry sorry sorry") for _ in answers]
    g, b = rewards.score(answers, good), rewards.score(answers, bad)
    # the logged answers passed this filter when the data was curated: each scores its quality (> 0)
    assert all(v > 0.5 for v in g["truth"]) and all(v == 0.0 for v in b["truth"])
    # a text's cosine with itself is 1 (L2-normalised embeddings; 1e-5: float32 rounding)
    assert g["reference"] == pytest.approx([1.0] * len(answers), abs=1e-5)
    assert all(x < 0.5 for x in b["reference"])


def test_user_reward_and_its_failure_name_the_prompt(tmp_path, monkeypatch, sources):
    (tmp_path / "my_rewards.py").write_text(textwrap.dedent("""
        def brevity(prompt, completion, record):
            return 1.0 if len(completion) < 20 else 0.0

        def broken(prompt, completion, record):
            raise KeyError("score")

        def wrong_type(prompt, completion, record):
            return "high"
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_rewards", None)
    cfg = TrainingConfig(objective="grpo", reward=["my_rewards:brevity"], reward_weights=["truth=0", "brevity=2"])
    r = build_rewards(cfg)
    assert r.names == ["tool_call", "format", "brevity"] and r.weights == [1.0, 1.0, 2.0]
    assert r.score(sources[:2], [_c("short"), _c("x" * 40)])["brevity"] == [1.0, 0.0]
    for fn, match in (("broken", "KeyError"), ("wrong_type", "returned 'high'")):
        bad = build_rewards(TrainingConfig(objective="grpo", reward=[f"my_rewards:{fn}"]))
        with pytest.raises(RewardError, match=rf"reward '{fn}'.*prompt {sources[0].prompt.key}.*{match}"):
            bad.score(sources[:1], [_c("x")])
    with pytest.raises(IceburgError, match="cannot load"):
        build_rewards(TrainingConfig(objective="grpo", reward=["my_rewards:missing"]))


def test_weights_and_config_problems():
    assert parse_weights(["tool_call=2.5"], [])["tool_call"] == 2.5
    with pytest.raises(IceburgError, match="no reward named 'speed'"):
        parse_weights(["speed=1"], [])
    with pytest.raises(IceburgError, match="weighted 0"):
        build_rewards(TrainingConfig(objective="grpo", reward_weights=["truth=0", "tool_call=0", "format=0"]))
    probs = TrainingConfig(objective="grpo", nproc=2, backend="mlx", reward=["nocolon"],
                           reward_weights=["x"]).problems()
    text = "\n".join(probs)
    assert "--objective grpo trains in one process" in text
    assert "grpo runs on torch only" not in text  # GRPO trains on MLX too (tests/training/test_mlx_grpo.py)
    assert "'nocolon' is not module:function" in text and "'x' is not NAME=WEIGHT" in text
    assert TrainingConfig(reward=["a:b"]).problems() == ["--reward: only applies to --objective grpo"]
    assert any("--grpo-temperature" in x for x in TrainingConfig(objective="grpo", grpo_temperature=0).problems())
    # the opt-in bf16 sampler: torch's GRPO only, so mlx refuses it and auto stays on torch with it
    assert TrainingConfig(grpo_sample_dtype="bf16").problems() == ["--grpo-sample-dtype: only applies to --objective grpo"]
    assert any("--grpo-sample-dtype runs on torch only" in x
               for x in TrainingConfig(objective="grpo", grpo_sample_dtype="bf16", backend="mlx").problems())
    assert TrainingConfig(objective="grpo", grpo_sample_dtype="bf16").resolved_backend() == "torch"
    assert any("unknown 'fp8'" in x for x in TrainingConfig(objective="grpo", grpo_sample_dtype="fp8").problems())
