"""Curation on datatrove: sharded over tasks, the result equals the one-process run.

The corpus: bundled samples in separate files (files are the shards) plus a planted file holding
cross-shard duplicates of records in the other files (an exact copy rated higher than its
original, so the kept member lies in a later shard than the dropped one; a lightly edited near
copy) and malformed lines, so exact and MinHash dedup must be global and every line accounted for.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from iceburg.config import TrainingConfig
from iceburg.data import sample_data_path
from iceburg.records import RejectWriter

pytest.importorskip("datatrove")


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def _valid(path: Path) -> list[dict]:
    """The sample's well-formed conversations (the samples plant malformed lines too)."""
    out = []
    for x in path.read_text(encoding="utf-8").splitlines():
        try:
            obj = json.loads(x)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("messages"), list):
            out.append(obj)
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("corpus")
    for agent in ("surveyor", "synthesist", "oracle"):
        shutil.copy(sample_data_path(agent), d / f"{agent}.jsonl")
    surveyor = _valid(d / "surveyor.jsonl")
    synthesist = _valid(d / "synthesist.jsonl")
    exact = dict(surveyor[0], quality_score=1.0)  # rated higher: the planted copy is the kept one
    exact["messages"] = [dict(m, content=m["content"].upper()) if m["role"] == "user" else m
                         for m in exact["messages"]]  # same normalised words (lower-cased)
    near = json.loads(json.dumps(synthesist[3]))
    answer = next(m for m in near["messages"] if m["role"] == "assistant")
    words = answer["content"].split(" ")
    answer["content"] = " ".join(w if i % 25 else "indeed" for i, w in enumerate(words))  # ~4% edited
    planted = [json.dumps(exact), "{not json", json.dumps(near), "", json.dumps({"messages": "x"}),
               json.dumps(synthesist[5])]
    (d / "zz_planted.jsonl").write_text("\n".join(planted) + "\n", encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    """One sample file and a planted semantic duplicate in another shard: the first ~100 words
    of a surveyor answer (what the 128-token digest embeds) followed by three other answers, so
    word 2-gram MinHash (Jaccard ~0.25) keeps it and only embedding dedup finds it."""
    d = tmp_path_factory.mktemp("small")
    shutil.copy(sample_data_path("surveyor"), d / "surveyor.jsonl")
    recs = [r for r in _valid(d / "surveyor.jsonl") if not r.get("tools")]
    answers = [next(m["content"] for m in r["messages"] if m["role"] == "assistant") for r in recs[:4]]
    twin = json.loads(json.dumps(recs[0]))
    reply = next(m for m in twin["messages"] if m["role"] == "assistant")
    reply["content"] = " ".join(answers[0].split(" ")[:100]) + "\n\n" + "\n\n".join(answers[1:4])
    (d / "zz_twin.jsonl").write_text(json.dumps(twin) + "\n", encoding="utf-8")
    return d


def _cfg(corpus: Path, out: Path, **kw) -> TrainingConfig:
    return TrainingConfig(data_path=[str(corpus)], output_dir=str(out), **kw)


def _rejects(path: Path) -> list[tuple]:
    return sorted((r["source"], r["line"], r["stage"], tuple(r["reasons"]),
                   json.dumps(r.get("details", {}), sort_keys=True)) for r in _lines(path))


def test_sharded_truth_and_dedup_equal_one_process(corpus, tmp_path):
    from iceburg.curate import curate
    from iceburg.truth import run_filter_only

    cfg = _cfg(corpus, tmp_path, use_emergence_weighting=False, curate_tasks=3, curate_workers=2)
    one = run_filter_only(cfg.data_path, tmp_path / "one", cfg, workers=1)
    many = curate(cfg, tmp_path / "many")

    # kept: the same records, byte for byte, in the same order
    assert (tmp_path / "many/filtered.jsonl").read_bytes() == (tmp_path / "one/filtered.jsonl").read_bytes()
    # rejected: the same lines with the same stage, reasons and details
    rej = _rejects(tmp_path / "many/rejects.jsonl")
    assert rej == _rejects(tmp_path / "one/rejects.jsonl")
    assert many["stats"] == one["stats"]
    assert many["lines_read"] == one["lines_read"] and many["load_rejected"] == one["load_rejected"]

    # the planted duplicates were found across shards, and the better-rated copy was kept
    by_line = {(Path(s).name, ln): reasons for s, ln, _, reasons, _ in rej}
    exact_of = by_line[("surveyor.jsonl", 1)]
    assert exact_of[0].startswith("exact_duplicate") and "zz_planted.jsonl:1" in exact_of[0]
    near = by_line[("zz_planted.jsonl", 3)]
    assert near[0].startswith("near_duplicate") and "synthesist.jsonl:4" in near[0]
    assert by_line[("zz_planted.jsonl", 6)][0].startswith("exact_duplicate")
    assert by_line[("zz_planted.jsonl", 2)][0].startswith("malformed JSON")
    assert ("zz_planted.jsonl", 5) in by_line

    # every non-blank input line is either kept or rejected, exactly once
    lines = sum(1 for f in corpus.glob("*.jsonl") for x in f.read_text(encoding="utf-8").splitlines() if x.strip())
    kept = _lines(tmp_path / "many/filtered.jsonl")
    assert many["lines_read"] == lines == len(kept) + len(rej)
    assert len({(s, ln) for s, ln, *_ in rej}) == len(rej)
    assert many["curation"]["stages"]["truth"]["tasks"] == 3


def test_sharded_emergence_equals_one_process(small_corpus, tmp_path):
    """Novelty is relative to the whole corpus: the kNN runs once over every shard's embeddings,
    then each shard is scored with iceburg's EmergenceProcessor. semantic_dedup 0.9 makes
    the emergence stage drop records too (across shards)."""
    from iceburg.curate import curate
    from iceburg.pipeline import emergence_step, read_step, run_steps, truth_step

    cfg = _cfg(small_corpus, tmp_path, semantic_dedup=0.9, curate_tasks=2, curate_workers=1)
    with RejectWriter(tmp_path / "one_rejects.jsonl") as rw:
        one = run_steps(cfg, rw, (read_step, truth_step, emergence_step))
    many = curate(cfg, tmp_path / "many")

    kept = _lines(tmp_path / "many/filtered.jsonl")
    ref = one.curriculum.records
    assert [r.messages for r in ref] == [k["messages"] for k in kept]
    for r, k in zip(ref, kept):
        assert r.signals["emergence.category_weight"] == k.get("weight", 1.0)
        assert r.metadata["emergence.category"] == k["metadata"]["emergence.category"]
        assert r.signals.keys() == k["signals"].keys()
        for name, v in r.signals.items():
            assert k["signals"][name] == pytest.approx(v, abs=1e-6), name

    def semantic(path):
        return [x for x in _rejects(path) if x[2] == "emergence"]

    sem = semantic(tmp_path / "many/rejects.jsonl")
    assert sem == semantic(tmp_path / "one_rejects.jsonl")
    assert any(Path(x[0]).name == "zz_twin.jsonl" and "surveyor.jsonl:" in x[4] for x in sem), sem
    em = one.stats["emergence"]
    for k in ("novel_count", "transitional_count", "familiar_count", "baseline_count", "duplicates_rejected"):
        assert many["emergence"][k] == em[k], k
    assert many["emergence"]["average_emergence"] == pytest.approx(em["average_emergence"], abs=1e-9)
    assert many["emergence"]["novel_features_found"] == em["novel_features_found"]


def test_curate_flags_need_filter_only(capsys):
    from iceburg.cli import main

    assert main(["--model-type", "surveyor", "--curate-tasks", "2"]) == 2
    assert "add --filter-only" in capsys.readouterr().err
    assert main(["--filter-only", "--curate-workers", "2"]) == 2
    assert "only applies with --curate-tasks" in capsys.readouterr().err


def test_cli_more_tasks_than_files(small_corpus, tmp_path, capsys):
    """The CLI path; a task without a file finishes empty and the counts still add up."""
    from iceburg.cli import main

    rc = main(["--filter-only", "--data-path", str(small_corpus), "--output-dir", str(tmp_path),
               "--curate-tasks", "3", "--no-emergence", "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    kept = _lines(tmp_path / "filtered/filtered.jsonl")
    rejects = _lines(tmp_path / "filtered/rejects.jsonl")
    assert report["curation"]["stages"]["truth"]["tasks"] == 3
    assert report["lines_read"] == len(kept) + len(rejects) == report["stats"]["final_output"] + len(rejects)


def test_strict_error_in_a_worker_stops_the_run(corpus, tmp_path, capsys):
    """A user error raised inside a datatrove worker process reaches the CLI as one error line."""
    from iceburg.cli import main

    rc = main(["--filter-only", "--strict", "--data-path", str(corpus), "--output-dir", str(tmp_path),
               "--curate-tasks", "2", "--curate-workers", "2", "--no-emergence"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith("error: ") and "--strict is on" in err[-1] and ".jsonl:" in err[-1]
    assert not (tmp_path / "filtered" / "filtered.jsonl").exists()
