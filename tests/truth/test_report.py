"""run_filter_only: the --filter-only command writes filtered JSONL, rejects and a report."""

from __future__ import annotations

import json

from iceburg.config import TrainingConfig
from iceburg.data.loader import read_records
from iceburg.records import RejectWriter
from iceburg.truth import run_filter_only

GOOD = ("The 2022 trial (n=139) found 8 kg vs 6.3 kg lost, a difference that was not significant, "
        "so the evidence suggests timing matters less than total intake. Confidence: moderate.")


def line(answer: str, q: str = "Is fasting better?", **kw) -> str:
    return json.dumps({"messages": [{"role": "user", "content": q},
                                    {"role": "assistant", "content": answer}], **kw})


def test_filter_only_writes_outputs_and_loses_nothing(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join([
        line(GOOD, quality_score=0.9),
        line(GOOD, quality_score=0.8),                       # exact duplicate
        line("I'm sorry, but I can't help with that."),       # refusal
        "{not json",                                          # load reject
        line(GOOD.replace("moderate", "low"), q="What do the trials say about fasting?"),  # near dup
        line("Sleep loss impairs memory consolidation: in a 2019 study, participants deprived of sleep "
             "recalled 40% fewer word pairs, which suggests the effect is large. Confidence: high."),
    ]) + "\n")
    out = tmp_path / "out"
    report = run_filter_only([str(src)], out, TrainingConfig(model_type="surveyor"))
    assert sorted(p.name for p in out.iterdir()) == ["filtered.jsonl", "rejects.jsonl", "report.json", "report.md"]
    kept = list(read_records([out / "filtered.jsonl"], RejectWriter(None)))
    assert len(kept) == 2 and kept[0].quality_score == 0.9
    raw = [json.loads(x) for x in (out / "filtered.jsonl").read_text().splitlines()]
    assert all("truth.quality" in r["signals"] and "truth.repetition" in r["signals"] for r in raw)
    assert kept[0].metadata["truth_category"] in ("VERIFIED", "HIGH_QUALITY", "STANDARD")
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    stages = sorted(r["stage"] for r in rejects)
    assert stages == ["dedup", "dedup", "load", "truth"]
    assert all(r["details"]["duplicate_of"].endswith("in.jsonl:1") for r in rejects if r["stage"] == "dedup")
    s = report["stats"]
    assert report["lines_read"] == 6 and report["load_rejected"] == 1
    assert s["total_input"] == 5 and s["final_output"] == 2
    assert s["exact_duplicates_removed"] == 1 and s["near_duplicates_removed"] == 1
    assert sum(s["histogram"]) == 5 and sum(s["kept_histogram"]) == 2
    assert json.loads((out / "report.json").read_text())["stats"] == s
    md = (out / "report.md").read_text()
    assert "Quality score histogram" in md and "| refusal | 1 |" in md


def test_parallel_scoring_gives_identical_output(tmp_path):
    """workers=2 (spawned processes) writes exactly what the in-process run writes."""
    import random
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from truth_corpus import clean_record, near_copy, plant

    rng = random.Random(5)
    recs = [clean_record(rng, rng.choice(["surveyor", "oracle"]), 2000) for _ in range(150)]
    recs += [plant(r, "loop", rng) for r in recs[:10]] + [near_copy(r, 0.05, rng) for r in recs[10:20]]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in recs))
    outs = {}
    for w in (1, 2):
        rep = run_filter_only([str(src)], tmp_path / f"w{w}", TrainingConfig(), workers=w)
        assert rep["workers"] == w
        outs[w] = ((tmp_path / f"w{w}" / "filtered.jsonl").read_text(), rep["stats"])
    assert outs[1] == outs[2]
    assert outs[1][1]["near_duplicates_removed"] >= 9 and outs[1][1]["reasons"]["repetition"] >= 9


def test_filter_only_uses_a_pattern_file_when_configured(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(line(GOOD) + "\n" + line(GOOD.replace("2022", "2023") + " Fasting cures diabetes.") + "\n")
    pats = tmp_path / "patterns.txt"
    pats.write_text("contradicted 0.5 fasting cures diabetes\n")
    cfg = TrainingConfig()
    cfg.truth_patterns = str(pats)  # the optional config field the CLI can fill (--truth-patterns)
    rep = run_filter_only([str(src)], tmp_path / "out", cfg, workers=1)
    assert rep["stats"]["final_output"] == 1 and rep["stats"]["reasons"] == {"low_quality": 1}
    rej = json.loads((tmp_path / "out" / "rejects.jsonl").read_text())
    assert rej["details"]["contradicted_patterns"] == ["fasting cures diabetes"]
