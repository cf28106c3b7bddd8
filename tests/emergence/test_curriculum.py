"""The Curriculum: weights (mean 1, clipped), and each strategy's order across epochs."""

from __future__ import annotations

import numpy as np
import pytest

from emergence_helpers import conv
from iceburg.emergence import EmergenceProcessor, create_curriculum, plain_curriculum
from iceburg.errors import IceburgError
from iceburg.emergence.curriculum import MAX_WEIGHT, MIN_WEIGHT, Curriculum, normalise_weights

SCORES = [0.9, 0.1, 0.55, 0.3, 0.85, 0.3, 0.6]


def scored_records():
    proc = EmergenceProcessor(detector=None)  # categorise() only; no detection here
    recs = []
    for i, s in enumerate(SCORES):
        r = conv(f"q{i}", f"a{i}", source="c.jsonl", line=i + 1)
        r.signals["emergence.score"] = s
        r.weight = proc.category_weights[proc.categorise(s)]
        recs.append(r)
    return recs


def test_normalised_weights_have_mean_one_and_respect_the_clip():
    w = normalise_weights([2.0, 1.5, 1.0, 0.5])
    assert np.mean(w) == pytest.approx(1.0)
    assert w == pytest.approx([2 / 1.25, 1.5 / 1.25, 1 / 1.25, 0.5 / 1.25])  # default: no clipping
    extreme = normalise_weights([100.0] + [1.0] * 9 + [0.001])
    assert np.mean(extreme) == pytest.approx(1.0)
    assert max(extreme) <= MAX_WEIGHT + 1e-9 and min(extreme) >= MIN_WEIGHT - 1e-9
    with pytest.raises(ValueError):
        normalise_weights([0.0, 0.0])


def test_plain_curriculum_is_a_fresh_seeded_shuffle_each_epoch():
    recs = scored_records()
    c = plain_curriculum(recs)
    assert c.strategy == "plain" and c.weights == [1.0] * len(recs)
    orders = [c.epoch_order(e, seed=7) for e in range(4)]
    assert all(sorted(o) == list(range(len(recs))) for o in orders)
    assert len({tuple(o) for o in orders}) > 1  # reshuffled between epochs
    assert c.epoch_order(2, seed=7) == orders[2]  # deterministic
    assert c.epoch_order(0, seed=8) != orders[0] or c.epoch_order(1, seed=8) != orders[1]


def test_weighted_uses_category_weights_as_mean_one_loss_weights():
    recs = scored_records()
    c = create_curriculum(recs, "weighted")
    raw = [r.weight for r in recs]  # 2.0 / 1.5 / 1.0 / 0.5 by category
    assert np.mean(c.weights) == pytest.approx(1.0)
    assert np.array(c.weights) == pytest.approx(np.array(raw) / np.mean(raw))
    assert [r.weight for r in c.records] == c.weights  # copies carry the training weight ...
    assert [r.weight for r in recs] == raw  # ... and the inputs are unchanged
    assert sorted(c.epoch_order(0, 1)) == list(range(len(recs)))
    assert c.epoch_order(0, 1) != c.epoch_order(1, 1)


def test_novel_first_is_descending_and_fixed_across_epochs():
    c = create_curriculum(scored_records(), "novel_first")
    order = c.epoch_order(0, 0)
    assert [SCORES[i] for i in order] == sorted(SCORES, reverse=True)
    assert order == [0, 4, 6, 2, 3, 5, 1]  # ties (0.3, 0.3) keep input order
    assert all(c.epoch_order(e, s) == order for e in range(3) for s in (0, 5))
    assert c.weights == [1.0] * len(SCORES)


def test_progressive_grows_the_pool_from_familiar_to_novel():
    c = create_curriculum(scored_records(), "progressive")
    orders = [c.epoch_order(e, 0) for e in range(5)]
    assert [len(o) for o in orders] == [3, 5, 7, 7, 7]  # ceil(n/3), ceil(2n/3), n, n, ...
    full = orders[2]
    assert [SCORES[i] for i in full] == sorted(SCORES)
    assert all(o == full[: len(o)] for o in orders)  # each epoch is a prefix: easy first
    assert c.weights == [1.0] * len(SCORES)


def test_errors_name_the_fix():
    recs = scored_records()
    with pytest.raises(IceburgError, match="--curriculum"):
        create_curriculum(recs, "random")
    bare = conv("q", "a")
    with pytest.raises(IceburgError, match="EmergenceProcessor"):
        create_curriculum([bare], "novel_first")
    with pytest.raises(IceburgError, match="unknown"):
        Curriculum(records=recs, weights=[1.0] * len(recs), strategy="nope")
    # a Curriculum built by hand for an ordered strategy ranks its records itself
    hand = Curriculum(records=recs, weights=[1.0] * len(recs), strategy="novel_first")
    assert hand.epoch_order(0, 0) == [0, 4, 6, 2, 3, 5, 1]
    assert create_curriculum([], "weighted").epoch_order(0, 0) == []
