"""Per-prompt metrics with the real truth filter, agent rubric and MiniLM embedder."""

from __future__ import annotations

import json

import pytest

from iceburg.chat import Answer
from iceburg.data import sample_data_path
from iceburg.data.loader import read_records
from iceburg.emergence.embedding import SentenceEmbedder
from iceburg.evaluation.metrics import direction, score_answers, truth_values
from iceburg.evaluation.suites import build_suite
from iceburg.truth import TruthFilter


@pytest.fixture(scope="module")
def surveyor_suite():
    records = [r for r in read_records([sample_data_path("surveyor")]) if r.tools is None][:6]
    return build_suite(records, ["heldout"] * len(records), n_prompts=6, agent="surveyor")


def test_truth_verdict_of_generated_answers(surveyor_suite):
    tf = TruthFilter()
    p = surveyor_suite.answers[0]
    # the transcript's own answer passed the filter when the sample set was built: it passes here
    good = truth_values(tf, p, p.reference)
    assert good["truth_pass_rate"] == 1.0 and good["rubric_score"] > 0
    assert {"rubric_evidence", "rubric_citations", "rubric_calibration"} <= set(good)  # the surveyor's rubric
    loop = truth_values(tf, p, " ".join(["the evidence is the evidence"] * 40))
    assert loop["truth_pass_rate"] == 0.0 and loop["defect_repetition"] == 1.0
    refusal = truth_values(tf, p, "I'm sorry, but I can't help with that request.")
    assert refusal["defect_refusal"] == 1.0 and refusal["truth_pass_rate"] == 0.0
    cut = truth_values(tf, p, p.reference[: len(p.reference) // 2].rstrip(" .") + " and the")
    assert cut["defect_truncated"] == 1.0


def test_score_answers_similarity_stop_and_samples(surveyor_suite):
    prompts = surveyor_suite.prompts
    ref = [Answer(p.reference, True, 100) for p in prompts]
    off = [Answer("Bananas are yellow and grow in bunches.", False, 8) for _ in prompts]
    emb = SentenceEmbedder(use_cache=False)
    v = score_answers(TruthFilter(), emb, prompts, [ref])
    # an answer identical to the reference embeds to cosine 1 (float32 rounding: 1e-4)
    assert v["reference_similarity"].value() == pytest.approx(1.0, abs=1e-4)
    assert v["stop_rate"].value() == 1.0 and v["answer_tokens"].value() == 100
    w = score_answers(TruthFilter(), emb, prompts, [off])
    # an off-topic sentence is far from research answers (MiniLM cosine of unrelated text is ~0-0.2)
    assert w["reference_similarity"].value() < 0.3 and w["stop_rate"].value() == 0.0
    both = score_answers(TruthFilter(), emb, prompts, [ref, off])  # two samples: each prompt's mean
    assert both["stop_rate"].value() == 0.5
    assert both["reference_similarity"].n == len(prompts)


def test_directions():
    assert direction("tool_call_accuracy") == 1 and direction("forgetting_loss") == -1
    assert direction("defect_repetition") == -1 and direction("rubric_citations") == 1
    assert direction("sampled.truth_pass_rate") == 1 and direction("answer_tokens") == 0


def test_general_text_is_shipped_and_not_training_data():
    from iceburg.evaluation.forgetting import general_texts

    docs = general_texts()
    assert len(docs) == 40 and all(len(d["text"].split()) >= 80 for d in docs)
    samples = "".join(sample_data_path(t).read_text() for t in ("base", "surveyor", "dissident", "synthesist",
                                                                "oracle"))
    assert not any(d["text"][:200] in samples for d in docs)
    assert all(json.dumps(d) for d in docs)
