"""TruthFilter end to end on real records: scores explained, defects and duplicates rejected."""

from __future__ import annotations

import json
import random

import pytest

from iceburg.config import ModelType
from iceburg.data import sample_data_path
from iceburg.data.loader import read_records
from iceburg.records import Record, RejectWriter
from iceburg.truth import Category, DedupConfig, PatternTruthSystem, TruthFilter
from iceburg.truth.patterns import parse_pattern_line
from iceburg.errors import DataError

ANSWER = ("Randomised trials of time-restricted eating (Liu et al., 2022; n=139) found about 8 kg vs "
          "6.3 kg lost over 12 months, a difference that was not significant. The evidence therefore "
          "suggests that the benefit comes mainly from eating less, because calorie intake was matched. "
          "Observational data reported in 2024 is weaker: it relied on two dietary recalls and is likely "
          "confounded by illness and shift work.\n\n- Confidence: moderate.\n- Open question: adherence.")


def conv(answer: str, question: str = "Does intermittent fasting beat calorie restriction?", **kw) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}], **kw}


def test_dicts_and_records_scored_with_named_signals(tmp_path):
    recs = [conv(ANSWER, quality_score=0.9), Record(messages=conv(ANSWER + " Extra sentence here.")["messages"])]
    kept, stats = TruthFilter().filter(recs, agent_type="surveyor")
    assert stats.total_input == 2
    for r in kept:
        assert isinstance(r, Record)
        assert {"truth.quality", "truth.computed", "truth.repetition", "truth.refusal", "truth.rubric",
                "truth.rubric.citations"} <= set(r.signals)
        assert r.metadata["truth_category"] in ("VERIFIED", "HIGH_QUALITY", "STANDARD")
    # the two differ by a few words only: one near duplicate removed, the better one kept
    assert stats.final_output == 1 and stats.near_duplicates_removed == 1


def test_provided_score_is_combined_and_missing_score_uses_computed():
    tf = TruthFilter()
    r1 = Record(messages=conv(ANSWER)["messages"])
    a1 = tf.assess(r1, "surveyor")
    assert a1.quality == r1.signals["truth.computed"] >= 0.7
    r2 = Record(messages=conv(ANSWER)["messages"], quality_score=0.3)
    a2 = tf.assess(r2, "surveyor")
    assert a2.quality == pytest.approx(0.5 * 0.3 + 0.5 * r2.signals["truth.computed"], abs=1e-4)
    assert a2.reasons and a2.reasons[0].code == "low_quality" and a2.reasons[0].message.startswith("low_quality: score")
    assert a2.category is Category.LOW_QUALITY


def test_every_drop_goes_to_rejects_with_reasons_scores_and_duplicate_of(tmp_path):
    recs = [conv(ANSWER, quality_score=0.95), conv(ANSWER, quality_score=0.8),  # exact dup (lower score 2nd)
            conv("I'm sorry, but I can't help with that.", quality_score=0.9),
            conv("Loop. " + "The model repeats this sentence again and again. " * 25),
            conv("The answer depends on the measured effect and the"),
            "not a record"]
    with RejectWriter(tmp_path / "rejects.jsonl") as rw:
        kept, stats = TruthFilter().filter(recs, rejects=rw)
    rows = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert stats.final_output == 1 and kept[0].quality_score == 0.95
    assert len(rows) == 5 == stats.total_input - stats.final_output
    by_reason = {r["code"]: r for r in rows}
    assert set(by_reason) == {"exact_duplicate", "refusal", "repetition", "truncated", "invalid_record"}
    assert all(r["codes"][0] == r["code"] and len(r["codes"]) == len(r["reasons"]) for r in rows)
    dup = by_reason["exact_duplicate"]
    assert dup["stage"] == "dedup" and dup["details"]["duplicate_of"] == kept[0].id
    assert dup["record"]["quality_score"] == 0.8
    assert by_reason["refusal"]["stage"] == "truth"
    assert by_reason["refusal"]["details"]["computed"] <= 0.3
    assert "truth.refusal" in by_reason["refusal"]["record"]["signals"]
    assert stats.reasons == {"exact_duplicate": 1, "refusal": 1, "repetition": 1, "truncated": 1, "invalid_record": 1}
    assert rw.counts == {"dedup:exact_duplicate": 1, "truth:refusal": 1, "truth:repetition": 1,
                         "truth:truncated": 1, "truth:invalid_record": 1}
    assert stats.exact_duplicates_removed == 1 and stats.low_quality_removed == 3 and stats.invalid_removed == 1


@pytest.mark.parametrize("workers", [1, 2])
def test_a_copy_is_named_even_when_both_members_fail_quality(tmp_path, workers):
    refusal = "I'm sorry, but I can't help with that."
    recs = [conv(refusal), conv("  I'M SORRY, but I can't   help with that. "), conv(refusal + " Really."),
            conv(ANSWER)]
    with RejectWriter(tmp_path / "rejects.jsonl") as rw:
        kept, stats = TruthFilter(workers=workers).filter(recs, rejects=rw)
    rows = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert len(kept) == 1 and len(rows) == 3
    first, copy, other = rows
    assert first["codes"] == ["refusal"]
    # the re-spaced, upper-cased copy: its own quality reason first, then the copy it is, then
    # (issue 31) that the whole group is lost: no copy of this text reaches the data
    assert copy["codes"] == ["refusal", "exact_duplicate", "duplicate_group_lost"]
    assert copy["record"]["metadata"]["truth_codes"] == ["refusal", "exact_duplicate", "duplicate_group_lost"]
    first_id = Record(messages=first["record"]["messages"]).id  # no source: the content hash
    assert copy["record"]["metadata"]["duplicate_of"] == first_id
    assert copy["reasons"][1] == f"exact_duplicate: same normalised text as {first_id} (rejected too)"
    assert copy["reasons"][2] == f"duplicate_group_lost: every copy of this text was rejected (first {first_id}: refusal)"
    assert other["codes"] == ["refusal"]  # different words: not a copy
    assert stats.reasons == {"refusal": 3, "exact_duplicate": 1, "duplicate_group_lost": 1}
    assert stats.low_quality_removed == 3 and stats.duplicate_groups_lost == 1
    _, off = TruthFilter(dedup=DedupConfig(exact=False, near=False)).filter(recs)
    assert off.reasons == {"refusal": 3}


def test_near_duplicates_keep_best_scored_member():
    rng = random.Random(0)
    base = ANSWER.split()
    variants = []
    for q in (0.75, 0.95, 0.85):
        words = list(base)
        for i in rng.sample(range(len(words)), 4):
            words[i] = rng.choice(["alpha", "beta", "gamma", "delta"])
        variants.append(conv(" ".join(words) + ".", quality_score=q))
    kept, stats = TruthFilter(dedup=DedupConfig(exact=True, near=True)).filter(variants)
    assert stats.near_duplicates_removed == 2 and kept[0].quality_score == 0.95
    kept2, stats2 = TruthFilter(dedup=DedupConfig(near=False)).filter(variants)
    assert stats2.final_output == 3


def test_agent_rubrics_rank_answers_that_do_their_job():
    tf = TruthFilter()
    dissent = ("This claim contradicts the trial data and rests on a hidden premise. However, the "
               "counter-argument is strong: an alternative hypothesis is reverse causation, and the "
               "competing explanation of confounding by illness has not been ruled out. But the bias "
               "in self-reported recall is the main flaw.")
    plain = ("Intermittent fasting means eating within a window. Many people try it for weight loss and "
             "some find it easier to follow than counting calories every day at every meal.")
    d = tf.assess(Record(messages=conv(dissent)["messages"]), "dissident")
    p = tf.assess(Record(messages=conv(plain)["messages"]), "dissident")
    assert d.quality > p.quality >= 0.7  # rubric ranks; it never rejects a well-formed answer
    assert d.details["rubric"] == "dissident"
    s = tf.assess(Record(messages=conv(ANSWER)["messages"]), "iceburg-surveyor")
    assert s.details["rubric"] == "surveyor" and s.quality >= 0.8


def test_pattern_truth_system_boosts_and_penalises(tmp_path):
    f = tmp_path / "patterns.txt"
    f.write_text("# known facts\nverified 0.10 not significant\n"
                 "contradicted 0.40 re:fasting\\s+cures\\s+diabetes\n")
    ts = PatternTruthSystem.from_file(f)
    tf_plain, tf_truth = TruthFilter(), TruthFilter(truth_system=ts)
    r = Record(messages=conv(ANSWER)["messages"])
    base = tf_plain.assess(Record(messages=conv(ANSWER)["messages"]), None).quality
    boosted = tf_truth.assess(r, None)
    assert boosted.quality == pytest.approx(min(base + 0.10, 1.0), abs=1e-3)
    assert boosted.details["verified_patterns"] == ["not significant"]
    bad = tf_truth.assess(Record(messages=conv(ANSWER + " Fasting cures diabetes.")["messages"]), None)
    assert bad.category is Category.LOW_QUALITY and bad.details["contradicted_patterns"]
    with pytest.raises(DataError, match="line 3"):
        parse_pattern_line("maybe 0.1 x", "p.txt", 3)


@pytest.mark.parametrize("mt", [m for m in ModelType if sample_data_path(m).exists()])
def test_bundled_sample_transcripts_mostly_pass(mt):
    """Realistic transcripts must survive at 0.7, with and without their quality_score."""
    for drop_score in (False, True):
        records = list(read_records([sample_data_path(mt)], RejectWriter(None)))
        clean = [r for r in records if (r.quality_score or 1.0) >= 0.7]
        if drop_score:
            for r in clean:
                r.quality_score = None
        kept, stats = TruthFilter(0.7).filter(clean, agent_type=mt.agent)
        # planted defects in the samples (refusals, loops, cut answers) are at most ~1 in 5
        assert stats.final_output >= 0.75 * len(clean), stats.reasons
