"""report.html's evaluation section on eval.json as `iceburg eval` writes it."""

from __future__ import annotations

import json

from iceburg.run_report import evaluation_section


def test_tool_turn_where_tuned_did_worse_shows_its_text_and_calls(tmp_path):
    """A tool turn holds the parsed calls in `tuned` (a list) and the answer in `tuned_text`; the section
    once passed the list to html.escape and crashed `iceburg eval` after eval.json was written (seen on a
    3-epoch SmolLM2 run whose tuned model wrote an unparsable call where the base wrote none)."""
    turn = {"id": "d.jsonl:64#4", "suite": "eval-data", "expected": [], "base": [],
            "tuned": [["<unparsed>", "<name>search_papers</name> & more"]], "base_text": "<tool_response> ok",
            "tuned_text": "<tool_call><name>search_papers</name> & more", "scores": {"tool_call_accuracy": [1.0, 0.0]}}
    ev = {"metrics": {"tool_call_accuracy": {"base": 0.46, "tuned": 0.38, "delta": -0.08, "ci95": [-0.23, 0.0], "n": 13}},
          "side_by_side": [], "tool_turns": [turn], "gates": []}
    (tmp_path / "eval.json").write_text(json.dumps(ev))
    html = evaluation_section(tmp_path)
    assert "tool_call_accuracy: 1 prompt(s) where tuned did worse" in html
    assert "calls: [[&quot;&lt;unparsed&gt;&quot;" in html  # the parsed call, escaped
    assert "&lt;tool_call&gt;&lt;name&gt;search_papers&lt;/name&gt; &amp; more" in html  # the answer text, escaped
