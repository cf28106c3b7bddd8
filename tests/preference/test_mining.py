"""Pair mining with the truth filter's verdicts: grouping, chosen/rejected choice, margin, reasons."""

from __future__ import annotations

from iceburg.config import ModelType
from iceburg.data import SAMPLE_DIR, sample_data_path
from iceburg.data.loader import read_records
from iceburg.preference.data import read_preferences
from iceburg.preference.mining import DEFAULT_MARGIN, mine_preferences, prompt_key
from iceburg.records import Record
from iceburg.truth.filter import TruthFilter

Q = "How strong is the evidence that regular exercise lowers the risk of depression?"
GOOD = ("Moderately strong. Prospective cohort studies following hundreds of thousands of adults find that "
        "people who are physically active have roughly 15-25% lower risk of later depression, and a 2018 "
        "meta-analysis (Schuch et al., American Journal of Psychiatry) estimated about 17% lower odds. "
        "Randomised trials in people already depressed show moderate symptom reductions, although many are "
        "small and unblinded. Confounding and reverse causation cannot be fully excluded, so the causal "
        "effect is probably real but smaller than the headline associations suggest.")
REFUSAL = "I'm sorry, but I can't help with that request."
LOOP = " ".join(["Exercise is good for depression and everyone should exercise every day."] * 12)


def _rec(user: str, answer: str, system: str = "You are a careful research assistant.", line: int = 0, **kw) -> Record:
    return Record(messages=[{"role": "system", "content": system}, {"role": "user", "content": user},
                            {"role": "assistant", "content": answer}], source="t.jsonl", line=line, **kw)


def test_prompt_key_ignores_case_whitespace_and_system():
    a = _rec(Q, GOOD).messages
    b = _rec("  " + Q.upper().replace(" ", "   ") + "\n", REFUSAL, system="Another agent.").messages
    assert prompt_key(a) == prompt_key(b)
    assert prompt_key(a) != prompt_key(_rec("Something else entirely?", GOOD).messages)


def test_best_kept_answer_is_chosen_and_every_rejected_answer_is_paired():
    recs = [_rec(Q, REFUSAL, line=1), _rec(Q.lower(), GOOD, line=2), _rec(Q, LOOP, line=3),
            _rec("A lonely question with one answer?", GOOD, line=4),
            _rec("Only bad answers here?", REFUSAL, line=5), _rec("only bad answers here?", LOOP, line=6)]
    pairs, stats = mine_preferences(recs, TruthFilter())
    assert (stats.records, stats.prompts, stats.single_answer_prompts, stats.no_good_answer_prompts) == (6, 3, 1, 1)
    assert stats.pairs_by_reason == {"refusal": 1, "repetition": 1} and stats.pairs == 2
    for p in pairs:
        assert p.chosen == [{"role": "assistant", "content": GOOD}]
        assert p.prompt[-1]["content"] == Q.lower() and p.metadata["chosen_from"] == "t.jsonl:2"
        assert p.chosen_score >= 0.7 and p.rejected_score <= 0.3  # defects are capped at 0.3
        assert p.reasons and p.reasons[0].split(":")[0] == p.metadata["reason_class"]
    assert {p.rejected[0]["content"] for p in pairs} == {REFUSAL, LOOP}


def test_margin_decides_between_two_kept_answers():
    # Same text, producer scores 1.0 vs 0.8: the blended quality differs by 0.5 x 0.2 = 0.1.
    hi, lo = _rec(Q, GOOD, quality_score=1.0), _rec(Q, GOOD + " More trials are under way.", quality_score=0.8)
    tf = TruthFilter()
    gap = tf.assess(hi).quality - tf.assess(lo).quality
    assert 0.05 < gap < 0.2 and not tf.assess(lo).reasons
    pairs, stats = mine_preferences([hi, lo], tf, margin=gap + 0.01)
    assert pairs == [] and stats.below_margin == 1
    pairs, stats = mine_preferences([hi, lo], tf, margin=gap - 0.01)
    assert stats.pairs_by_reason == {"lower_quality": 1}
    assert pairs[0].reasons[0].startswith("lower_quality: quality")
    assert pairs[0].chosen_score - pairs[0].rejected_score == round(gap, 4) or abs(
        pairs[0].chosen_score - pairs[0].rejected_score - gap) < 1e-6


def test_identical_answers_give_no_pair():
    pairs, stats = mine_preferences([_rec(Q, GOOD), _rec(Q, GOOD + "  ")], TruthFilter(), margin=0.0)
    assert pairs == [] and stats.identical_answers == 1


def test_bundled_transcripts_yield_pairs_for_each_failure_mode():
    """The bundled sample + its worse answers: the mined file shipped in the package is reproduced."""
    mt = ModelType.SURVEYOR
    src, answers = sample_data_path(mt), SAMPLE_DIR / "preference" / "surveyor_answers.jsonl"
    pairs, stats = mine_preferences(read_records([src, answers]), TruthFilter(), agent_type=mt.agent)
    assert stats.margin == DEFAULT_MARGIN
    assert set(stats.pairs_by_reason) >= {"refusal", "repetition", "truncated"}
    assert sum(stats.pairs_by_reason.values()) == stats.pairs == len(pairs) >= 10
    shipped = list(read_preferences([SAMPLE_DIR / "preference" / "surveyor_mined.jsonl"]))
    assert [(p.prompt, p.chosen, p.rejected) for p in shipped] == [(p.prompt, p.chosen, p.rejected) for p in pairs]
