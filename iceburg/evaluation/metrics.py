"""Per-prompt metrics of one model's answers, as `ItemValues` ready for the paired bootstrap.

- Truth verdict: the generated answer, put in place of the transcript's turn, is scored by the
  same `TruthFilter` and agent rubric that chose the training data (the run's
  `--min-quality-score` and `--truth-patterns`): pass rate, the mean quality score, the rate of
  each defect the filter names (empty, repetition = loops, refusal, boilerplate, truncated,
  garbage) and of low quality, the rubric score and each criterion of the agent's rubric (the
  surveyor's evidence/citations/calibration, the dissident's counter-arguments, the oracle's
  conclusions and confidence, ...).
- Stop rate: the answer ended with the end-of-turn token within the budget; answer length in tokens.
- Reference similarity: cosine between the answer and the transcript's own answer, embedded by
  the sentence embedder the emergence stage loads (all-MiniLM-L6-v2, `emergence/embedding.py`).
- Tool calls (tool prompts): exact accuracy, name accuracy, and false calls where none was made
  (`toolcalls.py`).
"""

from __future__ import annotations

from ..chat import Answer
from ..truth.filter import TruthFilter
from .bootstrap import ItemValues
from .suites import Prompt
from .toolcalls import parse_calls, score_calls

DEFECTS = ("empty", "repetition", "refusal", "boilerplate", "truncated", "garbage", "low_quality")
# Metrics where a larger value is better (+1), worse (-1), or neither (0: answer length). Rubric
# criteria ("rubric_<criterion>") are all higher-is-better.
DIRECTION = {"truth_pass_rate": 1, "truth_quality": 1, "rubric_score": 1, "stop_rate": 1,
             "answer_tokens": 0, "reference_similarity": 1, "tool_call_accuracy": 1,
             "tool_name_accuracy": 1, "tool_false_call_rate": -1, "judge_win_rate": 1, "heldout_loss": -1,
             "forgetting_loss": -1,
             **{f"defect_{d}": -1 for d in DEFECTS}}


def direction(metric: str) -> int:
    name = metric.split(".", 1)[-1]
    return 1 if name.startswith("rubric_") else DIRECTION.get(name, 0)


def _code(reason) -> str:
    """A truth reason's stable code (`Reason.code`, a key of records.REJECT_CODES)."""
    return reason.code


def truth_values(tf: TruthFilter, p: Prompt, text: str) -> dict[str, float]:
    from ..records import Record

    record = Record(messages=[*p.messages, {"role": "assistant", "content": text}], tools=p.tools,
                    agent_type=p.agent)
    a = tf.assess(record, p.agent)
    codes = {_code(r) for r in a.reasons}
    out = {"truth_pass_rate": float(not a.reasons), "truth_quality": a.quality,
           "rubric_score": record.signals.get("truth.rubric", 0.0)}
    out.update({f"defect_{d}": float(d in codes) for d in DEFECTS})
    out.update({f"rubric_{k.removeprefix('truth.rubric.')}": v for k, v in record.signals.items()
                if k.startswith("truth.rubric.")})
    return out


def score_prompt(tf: TruthFilter, p: Prompt, ans: Answer, similarity: float | None) -> dict[str, float | None]:
    """Every metric of one answer to one prompt (None = does not apply to this prompt)."""
    out: dict[str, float | None] = {}
    if p.answer:
        out.update(truth_values(tf, p, ans.text))
        out.update(stop_rate=float(ans.stopped), answer_tokens=float(ans.new_tokens),
                   reference_similarity=similarity)
    if p.expected is not None:
        s = score_calls(p.expected, parse_calls(ans.text))
        out.update(tool_call_accuracy=s["exact"], tool_name_accuracy=s["names"], tool_false_call_rate=s["false_call"])
    return out


def similarities(embedder, prompts: list[Prompt], answers: list[Answer]) -> list[float | None]:
    """Cosine of each answer prompt's answer with its reference (0 for an empty answer)."""
    idx = [i for i, p in enumerate(prompts) if p.answer]
    out: list[float | None] = [None] * len(prompts)
    if not idx:
        return out
    a = embedder.embed_texts([answers[i].text or " " for i in idx])
    r = embedder.embed_texts([prompts[i].reference for i in idx])
    for k, i in enumerate(idx):
        out[i] = float(a[k] @ r[k]) if answers[i].text.strip() else 0.0
    return out


def score_answers(tf: TruthFilter, embedder, prompts: list[Prompt],
                  answer_sets: list[list[Answer]]) -> dict[str, ItemValues]:
    """Metrics over prompts; with several answer sets (samples), each prompt's value is the mean over
    its answers. One `ItemValues` entry per prompt, in prompt order, for every metric."""
    per_set = []
    for answers in answer_sets:
        sims = similarities(embedder, prompts, answers)
        per_set.append([score_prompt(tf, p, a, s) for p, a, s in zip(prompts, answers, sims)])
    names = sorted({k for rows in per_set for row in rows for k in row})
    values = {k: ItemValues() for k in names}
    for i in range(len(prompts)):
        for k in names:
            got = [rows[i].get(k) for rows in per_set]
            got = [g for g in got if g is not None]
            values[k].add(sum(got) / len(got) if got else None)
    return values


def loss_values(losses: list[tuple[float, int] | None]) -> ItemValues:
    """Loss per token as a ratio of sums: each item's summed cross-entropy over its token count."""
    v = ItemValues()
    for item in losses:
        v.num.append(item[0] if item else 0.0)
        v.den.append(float(item[1]) if item else 0.0)
    return v
