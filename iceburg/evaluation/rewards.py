"""GRPO rewards (`--objective grpo`, docs/grpo.md): each a named function of a prompt and one sampled
answer, scored with the same parts `iceburg eval` scores with, so a reward and the held-out metric
of the same name agree:

- `truth`: the truth filter (built by `truth_filter_from`, the run's --min-quality-score and
  --truth-patterns) judges the answer in place of the logged turn, with the record's agent rubric:
  the quality score when it passes, 0 when it rejects it (`metrics.truth_values`). Answer prompts only.
- `tool_call`: 1 when the answer's tool calls equal the logged ones (name exact, arguments equal as
  JSON, parsed in the family's format: `toolcalls.parse_calls` / `score_calls`), else 0. Tool prompts only.
- `format`: 1 when the answer ended with the end-of-turn token within --max-completion-length and
  its reasoning markers (<think> ... </think>) are balanced, else 0. Every prompt.
- `tool_args` (shaping, off unless weighted): partial credit toward the exact call, for training
  only; the measured reward stays `tool_call`. On a call turn, each logged call is matched to a
  made call of the same name and scores the share of its argument (key, value) pairs the made call
  has right (Jaccard, so extra or missing keys cost), summed over the logged calls and divided by
  max(logged calls, made calls); a call of another name scores 0. On a final-answer turn: 1 for no
  call, else 0 (as `tool_call`). Tool prompts only.
- `reference`: cosine similarity of the answer to the logged answer (all-MiniLM-L6-v2, the embedder
  the emergence stage loads; `metrics.similarities`). Answer prompts only.
- user rewards, `--reward module:function`: `function(prompt=messages, completion=text, record=Record)`
  returning a number or None (does not apply), named by the function's name.

A reward that does not apply returns None (TRL's convention: left out of the weighted sum). A
reward that raises, or returns something that is not a number, stops the step with a `RewardError`
naming the reward and the prompt: never a silent 0.

Lives in `evaluation/` because it uses the truth filter, the tool-call scoring and the embedder;
`training/grpo.py` (a layer below) receives it as a `RewardSet`.
"""

from __future__ import annotations

import importlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import IceburgError
from ..records import Record
from .suites import Prompt
from .toolcalls import parse_calls, score_calls

REWARDS = ("truth", "tool_call", "format", "reference", "tool_args")
# reference is off unless weighted: it loads the embedder and embeds every answer (chosen, not measured);
# tool_args is a shaping reward, off unless asked for, so the default objective is the measured rewards
DEFAULT_WEIGHTS = {"truth": 1.0, "tool_call": 1.0, "format": 1.0, "reference": 0.0, "tool_args": 0.0}


class RewardError(IceburgError):
    """A reward function failed on an answer (the message names the reward and the prompt)."""


@dataclass
class RewardSource:
    """What the rewards see of a prompt: the evaluation `Prompt` (messages, tools, reference
    answer, expected calls, agent) and the record it was cut from."""

    prompt: Prompt
    record: Record


@dataclass
class RewardFunctions:
    """The run's weighted rewards (`training.grpo.RewardSet`). Each function takes the batch's
    sources and answers and returns one value (or None) per answer."""

    names: list[str]
    weights: list[float]
    fns: list[Callable] = field(default_factory=list)

    def score(self, sources: list[RewardSource], completions: list) -> dict[str, list[float | None]]:
        out = {}
        for name, fn in zip(self.names, self.fns):
            vals = fn(sources, completions)
            for s, v in zip(sources, vals):
                _check(name, s, v)
            out[name] = [None if v is None else float(v) for v in vals]
        return out


def _check(name: str, s: RewardSource, v: Any) -> None:
    ok = v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)) \
        or isinstance(v, bool)
    if not ok:
        raise RewardError(f"reward {name!r} failed on prompt {s.prompt.key} (record {s.record.id}): it "
                          f"returned {v!r}; a reward returns a finite number, or None where it does not apply")


def _per_answer(name: str, fn: Callable[[RewardSource, Any], float | None]) -> Callable:
    """A batch reward from a per-answer one; an exception names the reward and the prompt."""

    def batch(sources: list[RewardSource], completions: list) -> list[float | None]:
        out = []
        for s, c in zip(sources, completions):
            try:
                out.append(fn(s, c))
            except Exception as e:  # re-raised with the prompt named: never scored as 0
                raise RewardError(f"reward {name!r} failed on prompt {s.prompt.key} (record {s.record.id}): "
                                  f"{type(e).__name__}: {e}") from e
        return out

    return batch


def truth_reward(tf) -> Callable:
    from .metrics import truth_values

    def fn(s: RewardSource, c) -> float | None:
        if not s.prompt.answer:
            return None
        v = truth_values(tf, s.prompt, c.text)
        return v["truth_quality"] if v["truth_pass_rate"] else 0.0

    return _per_answer("truth", fn)


def tool_call_reward(s: RewardSource, c) -> float | None:
    if s.prompt.expected is None:
        return None
    return score_calls(s.prompt.expected, parse_calls(c.text))["exact"]


def tool_args_reward(s: RewardSource, c) -> float | None:
    if s.prompt.expected is None:
        return None
    made = parse_calls(c.text)
    if not s.prompt.expected:
        return float(not made)
    free = list(made)
    total = 0.0
    for name, args in s.prompt.expected:
        scored = [(_arg_overlap(args, a), i) for i, (n, a) in enumerate(free) if n == name]
        if scored:
            best, i = max(scored)
            total += best
            free.pop(i)
    return total / max(len(s.prompt.expected), len(made))


def _arg_overlap(expected: str, made: str) -> float:
    """Jaccard overlap of two canonical argument objects' (key, value) pairs; 1 for two empty ones."""
    try:
        a, b = json.loads(expected), json.loads(made)
    except ValueError:
        return 0.0
    if not isinstance(a, dict) or not isinstance(b, dict):
        return float(a == b)
    pa = {(k, json.dumps(v, sort_keys=True)) for k, v in a.items()}
    pb = {(k, json.dumps(v, sort_keys=True)) for k, v in b.items()}
    return len(pa & pb) / len(pa | pb) if pa | pb else 1.0


def format_reward(s: RewardSource, c) -> float:
    balanced = c.text.count("<think>") == c.text.count("</think>")
    return float(c.stopped and balanced)


def reference_reward(embedder) -> Callable:
    def batch(sources: list[RewardSource], completions: list) -> list[float | None]:
        idx = [i for i, s in enumerate(sources) if s.prompt.answer and completions[i].text.strip()]
        out: list[float | None] = [0.0 if s.prompt.answer else None for s in sources]
        if idx:
            a = embedder.embed_texts([completions[i].text for i in idx])
            r = embedder.embed_texts([sources[i].prompt.reference for i in idx])
            for k, i in enumerate(idx):
                out[i] = float(a[k] @ r[k])
        return out

    return batch


def user_reward(spec: str) -> tuple[str, Callable]:
    """`module:function` -> (function name, batch reward)."""
    mod, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as e:
        raise IceburgError(f"--reward {spec}: cannot load it ({type(e).__name__}: {e}); put the module on "
                           "PYTHONPATH and name a function in it") from e
    return name, _per_answer(name, lambda s, c: fn(prompt=s.prompt.messages, completion=c.text, record=s.record))


def parse_weights(items: list[str], known: list[str]) -> dict[str, float]:
    """`NAME=WEIGHT` items over the defaults; a name that is no reward is an error listing them."""
    weights = {**DEFAULT_WEIGHTS, **{k: 1.0 for k in known if k not in DEFAULT_WEIGHTS}}
    for item in items:
        name, _, w = item.partition("=")
        if name not in weights:
            raise IceburgError(f"--reward-weights {item}: no reward named {name!r}; rewards: {', '.join(weights)}")
        weights[name] = float(w)
    return weights


def build_rewards(cfg: Any) -> RewardFunctions:
    """The rewards a config asks for (weight != 0), in a fixed order: built-ins, then --reward ones."""
    from ..truth.from_config import truth_filter_from

    users = [user_reward(spec) for spec in cfg.reward]
    weights = parse_weights(cfg.reward_weights, [n for n, _ in users])
    makers: dict[str, Callable[[], Callable]] = {
        "truth": lambda: truth_reward(truth_filter_from(cfg)),
        "tool_call": lambda: _per_answer("tool_call", tool_call_reward),
        "format": lambda: _per_answer("format", format_reward),
        "tool_args": lambda: _per_answer("tool_args", tool_args_reward),
        "reference": lambda: reference_reward(_embedder()),
        **{n: (lambda f=f: f) for n, f in users}}
    active = [n for n in makers if weights[n] != 0.0]
    if not active:
        raise IceburgError("--reward-weights: every reward is weighted 0; GRPO needs at least one reward")
    return RewardFunctions(active, [weights[n] for n in active], [makers[n]() for n in active])


def _embedder():
    from ..emergence.embedding import SentenceEmbedder

    return SentenceEmbedder(use_cache=False)
