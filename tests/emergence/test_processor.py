"""EmergenceProcessor on real records: components, categories, novelty that measures, dedup,
dict input, pluggable detectors, reference corpus, cache on re-run."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from iceburg.emergence import (
    DetectorOutput,
    EmbeddingNoveltyDetector,
    EmergenceDetector,
    EmergenceProcessor,
    create_curriculum,
)
from iceburg.emergence.signals import agent_score, keyword_score
from iceburg.records import RejectWriter

from emergence_helpers import conv

COMPONENTS = {"emergence.novelty", "emergence.novelty_corpus", "emergence.keywords",
              "emergence.complexity", "emergence.agent", "emergence.score",
              "emergence.category_weight"}


@pytest.fixture(scope="module")
def scored(_surveyor, embedder):
    proc = EmergenceProcessor(detector=EmbeddingNoveltyDetector(embedder=embedder))
    return proc.process(copy.deepcopy(_surveyor), agent_type="surveyor")


def test_every_component_and_the_category_are_stored(scored, surveyor_records):
    out, stats = scored
    assert len(out) == len(surveyor_records) == stats.total_processed
    weights = {"novel": 2.0, "transitional": 1.5, "familiar": 1.0, "baseline": 0.5}
    for r in out:
        assert COMPONENTS <= set(r.signals), set(r.signals)
        assert 0.0 <= r.signals["emergence.score"] <= 1.0
        assert r.weight == weights[r.metadata["emergence.category"]]
        assert r.emergence_score == pytest.approx(r.signals["emergence.score"], abs=1e-6)
    counts = [stats.novel_count, stats.transitional_count, stats.familiar_count, stats.baseline_count]
    assert sum(counts) == len(out)
    assert stats.average_emergence == pytest.approx(np.mean([r.signals["emergence.score"] for r in out]))
    assert stats.detector["search"] == "exact"
    json.dumps(stats.to_dict())  # goes into data_stats.json


def test_score_is_the_weighted_mean_of_present_components(scored):
    out, _ = scored
    proc = EmergenceProcessor(detector=EmbeddingNoveltyDetector())
    w = proc.component_weights
    for r in out[:5]:
        parts = {k: r.signals[f"emergence.{k}"] for k in w if f"emergence.{k}" in r.signals}
        want = sum(w[k] * min(1, max(0, v)) for k, v in parts.items()) / sum(w[k] for k in parts)
        assert r.signals["emergence.score"] == pytest.approx(want)


def test_novelty_is_highest_for_the_off_topic_record(embedder):
    sleep = [conv(f"Question {i} about sleep and memory?",
                  f"Sleep consolidates memory; study {i} found deep sleep replays the day's learning.")
             for i in range(8)]
    odd = conv("How do I fix a flat bicycle tyre?", "Remove the wheel, find the puncture, patch the tube.")
    out, _ = EmergenceProcessor(detector=EmbeddingNoveltyDetector(k=3, embedder=embedder)).process(sleep + [odd])
    nov = [r.signals["emergence.novelty"] for r in out]
    assert int(np.argmax(nov)) == 8
    assert nov[8] > max(nov[:8]) + 0.2


def test_semantic_dedup_rejects_near_copies_with_reasons(embedder, tmp_path):
    a = conv("What causes inflation?", "Inflation rises when demand outpaces supply or money grows fast.")
    a_copy = conv("What causes inflation?", "Inflation rises when demand outpaces supply or money grows fast.")
    a_near = conv("What causes inflation??", "Inflation rises when demand outpaces supply, or money grows fast.")
    b = conv("What is photosynthesis?", "Plants turn light, water and CO2 into sugar and oxygen.")
    for i, r in enumerate([a, a_copy, a_near, b]):
        r.source, r.line = "t.jsonl", i + 1
    path = tmp_path / "rejects.jsonl"
    with RejectWriter(path) as rw:
        det = EmbeddingNoveltyDetector(k=2, dedup_threshold=0.95, embedder=embedder)
        out, stats = EmergenceProcessor(detector=det, rejects=rw).process([a, a_copy, a_near, b])
    assert [r.line for r in out] == [1, 4] and stats.duplicates_rejected == 2
    rejects = [json.loads(x) for x in path.read_text().splitlines()]
    assert [(j["stage"], j["reasons"], j["line"]) for j in rejects] == [
        ("emergence", ["near_duplicate"], 2), ("emergence", ["near_duplicate"], 3)]
    assert all(j["details"]["duplicate_of"] == "t.jsonl:1" and j["details"]["similarity"] >= 0.95
               for j in rejects)
    assert rejects[0]["record"]["messages"] == a_copy.messages  # recoverable


def test_seed_format_dicts_and_unusable_entries(embedder):
    data = [{"messages": [{"role": "user", "content": "Is coffee healthy?"},
                          {"role": "assistant", "content": "Moderate intake is linked to lower mortality."}],
             "emergence_score": 0.9, "id": "x1"},
            {"conversation": [{"role": "user", "content": "Why is the sky blue?"},
                              {"role": "assistant", "content": "Rayleigh scattering favours short wavelengths."}]},
            {"input": "Name a prime.", "output": "Seven; however, two is the only even one."},
            {"text": "no messages here"}]
    rw = RejectWriter(None)
    out, stats = EmergenceProcessor(detector=EmbeddingNoveltyDetector(k=2, embedder=embedder),
                                    rejects=rw).process(data, agent_type="dissident")
    assert len(out) == 3 and stats.unusable_rejected == 1 and rw.counts == {"emergence:invalid_record": 1}
    assert out[0].metadata["id"] == "x1" and out[0].signals["emergence.provided"] == 0.9
    assert "contradictory:however" in out[2].metadata["emergence.features"]
    assert out[2].signals["emergence.agent"] == pytest.approx(0.5)  # dissident: "however" +0.2


def test_computed_score_is_written_back_and_the_provided_one_keeps_its_signal(embedder, tmp_path):
    """The original API: after process() `emergence_score` is the computed score, carried by
    to_json() and the written JSONL; a re-run (also after a write/read round trip) still sees the
    producer's 0.9 as `provided`, not last run's score."""
    from iceburg.data.loader import read_records

    data = [{"messages": [{"role": "user", "content": "Is coffee healthy?"},
                          {"role": "assistant", "content": "Moderate intake is linked to lower mortality."}],
             "emergence_score": 0.9},
            {"messages": [{"role": "user", "content": "Why is the sky blue?"},
                          {"role": "assistant", "content": "Rayleigh scattering favours short wavelengths."}]}]
    proc = EmergenceProcessor(detector=EmbeddingNoveltyDetector(k=1, embedder=embedder))
    out, _ = proc.process(data)
    first = [r.signals["emergence.score"] for r in out]
    assert [r.emergence_score for r in out] == pytest.approx(first, abs=1e-6)
    assert first[0] != pytest.approx(0.9) and out[0].signals["emergence.provided"] == 0.9
    assert "emergence.provided" not in out[1].signals
    path = tmp_path / "scored.jsonl"
    path.write_text("".join(json.dumps(r.to_json()) + "\n" for r in out))
    back = list(read_records([path]))
    assert [r.emergence_score for r in back] == pytest.approx(first, abs=1e-6)
    again, _ = proc.process(back)
    assert again[0].signals["emergence.provided"] == 0.9 and "emergence.provided" not in again[1].signals
    assert [r.emergence_score for r in again] == pytest.approx(first, abs=1e-6)


def test_keyword_and_agent_cues_match_whole_words():
    assert keyword_score("press the button firstly") == (0.0, [])
    score, feats = keyword_score("a novel discovery; however, it challenges the first result")
    assert feats == ["scientific:discovery", "scientific:novel", "scientific:first",
                     "contradictory:however", "contradictory:challenges"] and score == pytest.approx(0.5)
    assert agent_score("the button is red", "dissident") == pytest.approx(0.3)
    assert agent_score("but instead", "iceburg-dissident") == pytest.approx(0.8)
    assert agent_score("anything", None) is None and agent_score("anything", "unknown") is None


class LengthDetector:
    """A second, real detector: longer answers count as more novel (shows the protocol)."""

    def detect(self, records):
        n = np.array([len(r.assistant_text()) for r in records], dtype=np.float32)
        return DetectorOutput(novelty=n / n.max(), signals={"length": n})


def test_a_plugged_detector_and_configurable_categories():
    recs = [conv("q", "short"), conv("q", "a much longer answer " * 10)]
    assert isinstance(LengthDetector(), EmergenceDetector)
    proc = EmergenceProcessor(detector=LengthDetector(), thresholds=(0.6, 0.4, 0.1),
                              novel_weight=3.0, component_weights={"novelty": 1.0})
    out, stats = proc.process(recs)
    assert out[1].signals["emergence.score"] == pytest.approx(1.0)
    assert out[1].metadata["emergence.category"] == "novel" and out[1].weight == 3.0
    assert out[0].metadata["emergence.category"] == "baseline" and out[0].weight == 0.5
    assert out[1].signals["emergence.length"] == len(out[1].assistant_text())
    with pytest.raises(ValueError, match="descending"):
        EmergenceProcessor(detector=LengthDetector(), thresholds=(0.2, 0.5, 0.8))


def test_reference_corpus_distance(surveyor_records, embedder):
    seen, new = surveyor_records[:20], surveyor_records[20:30]
    det = EmbeddingNoveltyDetector(k=1, reference=seen, reference_weight=1.0, embedder=embedder)
    out, _ = EmergenceProcessor(detector=det).process(seen[:5] + new)
    ref = [r.signals["emergence.novelty_reference"] for r in out]
    assert max(ref[:5]) < 1e-4  # already in the reference: distance 0 to their own copy ...
    assert min(ref[5:]) > 0.1  # ... new records are far from it
    assert [r.signals["emergence.novelty"] for r in out] == pytest.approx(ref, abs=1e-6)


def test_rerun_uses_the_cache_and_gives_the_same_scores(scored, surveyor_records, embedder):
    first = {r.id: r.signals["emergence.score"] for r in scored[0]}
    proc = EmergenceProcessor(detector=EmbeddingNoveltyDetector(embedder=embedder))
    out, stats = proc.process(list(surveyor_records), agent_type="surveyor")
    assert stats.detector["embedded"] == 0 and stats.detector["cache_hits"] == len(out)
    assert {r.id: r.signals["emergence.score"] for r in out} == pytest.approx(first)
    c = create_curriculum(out, "novel_first")
    assert c.records[c.epoch_order(0, 0)[0]].signals["emergence.score"] == max(first.values())
