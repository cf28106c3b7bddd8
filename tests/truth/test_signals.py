"""Text signals: each defect is found, and normal research answers (markdown, code, citations) pass."""

from __future__ import annotations

from iceburg.truth import signals

CLEAN = """Short answer: **the evidence favours a modest effect** (Smith et al., 2021) [1].

### What the trials show
| Trial | n | Result |
|---|---|---|
| A 2019 | 120 | -3.1 kg |
| B 2020 | 98 | -2.4 kg |

- Effects shrink after 12 months.
- Adherence, not timing, explains most of the difference.

```python
for i in range(3):
    print(i)
for i in range(3):
    print(i)
```

See https://doi.org/10.1000/xyz and [2]. **Confidence:** moderate."""


def test_clean_markdown_code_and_citations_have_no_defect():
    ts = signals.compute([CLEAN])
    assert ts.defects == {}
    assert ts.values["repetition"] < 1.0


def test_repetition_loop_trips_gopher_rules():
    loop = "The results are consistent with the hypothesis. " * 30
    ts = signals.compute(["Here is the answer. " + loop])
    assert "repetition" in ts.defects
    assert ts.values["dup_5gram_frac"] > signals.GOPHER_DUP_NGRAM[5]


def test_duplicate_lines_trip_line_rule():
    ts = signals.compute(["First point about data.\nSame line again here.\nSame line again here.\n"
                          "Same line again here."])
    assert ts.values["dup_line_frac"] > 0.3
    assert "repetition" in ts.defects


def test_refusal_only_when_it_opens_a_short_turn():
    assert "refusal" in signals.compute(["I'm sorry, but I can't help with that."]).defects
    assert "refusal" in signals.compute(["As an AI language model, I cannot provide that."]).defects
    long_ok = ("The study cannot tell us whether the effect is causal. " * 3
               + "I cannot verify the 2019 figure because the source is paywalled, but the two trials agree.")
    assert "refusal" not in signals.compute([long_ok]).defects


def test_truncation_and_unclosed_fence():
    assert signals.truncation("The effect was measured in 2019 and the") is not None
    assert signals.truncation("Use this:\n```python\nx = 1\n") == "unclosed code fence"
    assert signals.truncation("Findings are mixed.") is None
    assert signals.truncation("Key points:\n- first item\n- second item without a stop") is None
    assert signals.truncation("| a | b |\n|---|---|\n| 1 | 2 |") is None


def test_empty_short_and_garbage():
    assert "empty" in signals.compute(["OK"]).defects
    assert signals.compute(["Yes, that is right mostly."]).soft.get("short") == 0.25
    junk = " ".join(["\u00a7\u00b6 ### ~~ ..."] * 20) + " some words here"
    assert "garbage" in signals.compute([junk]).defects
    assert "garbage" in signals.compute(["Normal text \ufffd\ufffd\ufffd with \ufffd mojibake " * 3]).defects


def test_boilerplate_dominated_reply():
    ts = signals.compute(["Great question! I hope this helps. Let me know if you have any other questions."])
    assert "boilerplate" in ts.defects
    ok = signals.compute([CLEAN + "\n\nI hope this helps."])
    assert "boilerplate" not in ok.defects and ok.soft["boilerplate"] < 0.05


def test_role_structure():
    good = [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a"}]
    assert signals.role_structure(good)[0] == []
    bad = [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"},
           {"role": "user", "content": "q"}]
    problems, _ = signals.role_structure(bad)
    assert len(problems) == 3


def _reference_ngram(words, n):
    """Plain-Python Gopher n-gram fractions (the definition the numpy version implements)."""
    from collections import Counter

    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    total = sum(len(w) for w in words)
    counts = Counter(grams)
    c = max(counts.values())
    top_frac = c * max(sum(map(len, g)) for g, k in counts.items() if k == c) / total if c > 1 else 0.0
    seen, covered = set(), set()
    for i, g in enumerate(grams):
        if g in seen:
            covered.update(range(i, i + n))
        seen.add(g)
    return top_frac, sum(len(words[i]) for i in covered) / total


def test_numpy_ngram_fractions_match_plain_definition():
    import random

    rng = random.Random(3)
    vocab = [f"w{i}" for i in range(40)]
    for _ in range(20):
        words = [rng.choice(vocab) for _ in range(rng.randint(60, 300))]
        words += words[: rng.randint(0, 40)]  # plant some repeats
        got = signals.ngram_repetition(words)
        for n in (2, 3, 4):
            assert abs(got[f"top_{n}gram_frac"] - _reference_ngram(words, n)[0]) < 1e-9
        for n in range(5, 11):
            ref = _reference_ngram(words, n)[1]
            if f"dup_{n}gram_frac" in got:
                assert abs(got[f"dup_{n}gram_frac"] - ref) < 1e-9
            else:  # skipped because it cannot exceed the 5-gram value, which is under every limit
                assert ref <= got["dup_5gram_frac"] <= 0.10
