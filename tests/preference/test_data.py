"""Preference loader: every accepted shape, and per-line rejects with file, line and reason."""

from __future__ import annotations

import json

import pytest

from iceburg.errors import DataError
from iceburg.preference.data import KTOExample, PreferencePair, read_preferences, unpair, write_jsonl
from iceburg.records import RejectWriter

Q, GOOD, BAD = "What is the boiling point of water at sea level?", "100 degrees Celsius (212 F).", "I cannot help."

SHAPES = {
    "trl_standard": {"prompt": Q, "chosen": GOOD, "rejected": BAD},
    "trl_conversational": {"prompt": [{"role": "user", "content": Q}],
                           "chosen": [{"role": "assistant", "content": GOOD}],
                           "rejected": [{"role": "assistant", "content": BAD}]},
    "llamafactory_sharegpt": {"conversations": [{"from": "human", "value": Q}],
                              "chosen": {"from": "gpt", "value": GOOD}, "rejected": {"from": "gpt", "value": BAD}},
    "llamafactory_openai": {"messages": [{"role": "user", "content": Q}],
                            "chosen": {"role": "assistant", "content": GOOD},
                            "rejected": {"role": "assistant", "content": BAD}},
    "alpaca_ranking": {"instruction": Q, "input": "", "chosen": GOOD, "rejected": BAD},
}


def _write(tmp_path, rows):
    p = tmp_path / "prefs.jsonl"
    p.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return p


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_pair_shapes_normalise_to_the_same_pair(tmp_path, shape):
    [pair] = list(read_preferences([_write(tmp_path, [SHAPES[shape]])]))
    assert isinstance(pair, PreferencePair)
    assert pair.prompt == [{"role": "user", "content": Q}]
    assert pair.chosen == [{"role": "assistant", "content": GOOD}]
    assert pair.rejected == [{"role": "assistant", "content": BAD}]
    assert pair.line == 1 and pair.source.endswith("prefs.jsonl")


def test_system_scores_and_round_trip(tmp_path):
    row = {**SHAPES["trl_standard"], "system": "Be exact.", "score_chosen": 9, "score_rejected": 2,
           "reasons": ["refusal: declines"], "agent_type": "surveyor"}
    [pair] = list(read_preferences([_write(tmp_path, [row])]))
    assert pair.prompt[0] == {"role": "system", "content": "Be exact."}
    assert (pair.chosen_score, pair.rejected_score, pair.reasons) == (9.0, 2.0, ["refusal: declines"])
    out = tmp_path / "out" / "pairs.jsonl"
    assert write_jsonl(out, [pair]) == 1
    [back] = list(read_preferences([out]))
    assert (back.prompt, back.chosen, back.rejected, back.chosen_score, back.reasons, back.agent_type) == (
        pair.prompt, pair.chosen, pair.rejected, pair.chosen_score, pair.reasons, pair.agent_type)


def test_kto_shapes(tmp_path):
    rows = [{"prompt": Q, "completion": GOOD, "label": True},
            {"messages": [{"role": "user", "content": Q}, {"role": "assistant", "content": BAD}], "kto_tag": False}]
    a, b = read_preferences([_write(tmp_path, rows)])
    assert isinstance(a, KTOExample) and a.label is True and a.completion[0]["content"] == GOOD
    assert b.label is False and b.prompt == [{"role": "user", "content": Q}] and b.completion[0]["content"] == BAD
    kto = unpair([PreferencePair([{"role": "user", "content": Q}], [{"role": "assistant", "content": GOOD}],
                                 [{"role": "assistant", "content": BAD}])])
    assert [k.label for k in kto] == [True, False]


BAD_LINES = [
    ('{"prompt": "q", "chosen": "a"', "malformed JSON"),
    ({"prompt": Q, "chosen": GOOD}, "'rejected' is missing"),
    ({"prompt": Q, "chosen": GOOD, "rejected": GOOD}, "identical"),
    ({"prompt": Q, "chosen": "", "rejected": BAD}, "empty content"),
    ({"prompt": [{"role": "user", "content": Q}, {"role": "assistant", "content": GOOD}], "chosen": GOOD,
      "rejected": BAD}, "must end with a user turn"),
    ({"prompt": Q, "chosen": [{"role": "user", "content": GOOD}], "rejected": BAD}, "assistant turns only"),
    ({"prompt": Q, "chosen": GOOD, "rejected": 3}, "list of messages"),
    ({"prompt": Q, "completion": GOOD, "label": "yes"}, "true or false"),
    ({"prompt": Q, "chosen": GOOD, "rejected": BAD, "score_chosen": "high"}, "finite number"),
    ({"text": "hello"}, "no preference found"),
    ([1, 2], "expected a JSON object"),
]


def test_invalid_lines_are_rejected_with_file_line_and_reason(tmp_path):
    path = _write(tmp_path, [SHAPES["trl_standard"]] + [row for row, _ in BAD_LINES])
    stats: dict[str, int] = {}
    with RejectWriter(tmp_path / "rejects.jsonl") as rw:
        got = list(read_preferences([path], rw, stats=stats))
    assert len(got) == 1 and stats == {"lines": 1 + len(BAD_LINES), "pairs": 1, "rejected": len(BAD_LINES)}
    rejects = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejects] == list(range(2, 2 + len(BAD_LINES)))
    for r, (_, why) in zip(rejects, BAD_LINES):
        assert r["stage"] == "load" and r["source"] == str(path)
        assert why in r["reasons"][0], (why, r["reasons"])


def test_strict_names_file_and_line(tmp_path):
    path = _write(tmp_path, [SHAPES["trl_standard"], {"prompt": Q, "chosen": GOOD}])
    with pytest.raises(DataError, match=r"prefs\.jsonl:2: .*'rejected' is missing"):
        list(read_preferences([path], strict=True))
