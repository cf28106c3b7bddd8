"""`run_filter_only`: the `--filter-only` command - JSONL in, filtered JSONL + rejects + report out.

Streams: records are read one at a time (`iceburg.data.loader.read_records`), scored, and the ones
that pass are spooled to a temporary JSONL beside the output while only their dedup signature and
score stay in memory. After duplicate resolution a second pass over the spool writes
`filtered.jsonl` (with each record's `truth.*` signals and category) and the duplicate rejects.
Memory therefore grows with the number of records x ~0.7 KB (signature + index), not with the text.

Outputs in `out_dir` (each written under a temporary name and renamed when complete):
`filtered.jsonl`, `rejects.jsonl` (load, truth and dedup rejects, each with reasons and scores),
`report.json` and `report.md` (counts per category and reason, score histograms, settings).
"""

from __future__ import annotations

import json
from array import array
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ..config import ModelType, TrainingConfig
from ..records import Record, RejectWriter
from .filter import HIST_BINS, Assessment, Category, TruthFilter, TruthFilterStats
from .from_config import truth_filter_from

logger = logging.getLogger(__name__)


def run_filter_only(paths: list[str], out_dir: Path, config: TrainingConfig,
                    truth_filter: TruthFilter | None = None, workers: int | None = None) -> dict[str, Any]:
    """Filter JSONL files into `out_dir`; returns the report (also saved as report.json/.md).

    `workers`: scoring processes (default: the CPU count, at most 8, or 1 for inputs under 4 MiB;
    1 = in this process).
    """
    from ..data.loader import read_records

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tf = truth_filter or truth_filter_from(config, workers=default_workers(paths) if workers is None else workers)
    agent = ModelType.parse(config.model_type).agent
    stats = TruthFilterStats()
    load_stats: dict[str, int] = {}
    t0 = time.perf_counter()
    with RejectWriter(out_dir / "rejects.jsonl") as rejects, \
            tempfile.TemporaryFile("w+", encoding="utf-8", errors="backslashreplace", dir=out_dir,
                                   prefix=".spool-") as spool:
        records = read_records(paths, rejects, strict=config.strict, stats=load_stats)
        store = tf.dedup.store()
        # per spooled record: source file number and line (ids are rebuilt only for duplicates)
        sources: dict[str, int] = {}
        src_of, line_of = array("i"), array("q")
        for record, a, sig in tf.score_stream(records, agent, rejects, stats):
            store.add(len(line_of), a.quality, sig)
            src_of.append(sources.setdefault(record.source, len(sources)))
            line_of.append(record.line)
            spool.write(json.dumps(_spool(record, a), ensure_ascii=False) + "\n")
        names = {v: k for k, v in sources.items()}
        t_score = time.perf_counter() - t0
        dropped = tf.dedup.resolve(store)
        quality = store.score[: store.n].copy()
        del store
        spool.seek(0)
        with _atomic_open(out_dir / "filtered.jsonl") as out:
            for i, line in enumerate(spool):
                record, a = _unspool(json.loads(line))
                if i in dropped:
                    kind, of, sim = dropped[i]
                    kept_id = f"{names[src_of[of]]}:{line_of[of]}"
                    tf.reject_duplicate(record, a, kind, kept_id, float(quality[of]), sim, rejects, stats)
                else:
                    tf.count_kept(record, a, stats)
                    out.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
        tf.finish(stats)
        load_rejects = rejects.counts.copy()
    elapsed = time.perf_counter() - t0
    report = _report(paths, out_dir, config, tf, stats, load_stats, load_rejects, elapsed, t_score)
    with _atomic_open(out_dir / "report.json") as fh:
        json.dump(report, fh, indent=2)
    with _atomic_open(out_dir / "report.md") as fh:
        fh.write(render_markdown(report))
    logger.info("filter-only: %d kept of %d lines -> %s", stats.final_output, report["lines_read"], out_dir)
    return report


def default_workers(paths: list[str]) -> int:
    """Scoring processes for `paths`: the CPU count (at most 8), or 1 for small inputs."""
    from ..data.loader import expand_paths

    # Starting spawned workers costs ~1 s; below ~4 MiB (~1,000 transcripts at ~1.3 ms of
    # CPU each, measured) one process finishes first.
    small = sum(p.stat().st_size for p in expand_paths(paths)) < 4 * 2**20
    return 1 if small else min(os.cpu_count() or 1, 8)


def _report(paths: list[str], out_dir: Path, config: TrainingConfig, tf: TruthFilter, stats: TruthFilterStats,
            load_stats: dict[str, int], load_rejects: dict[str, int], elapsed: float,
            t_score: float) -> dict[str, Any]:
    agent = ModelType.parse(config.model_type).agent
    return {
        "inputs": [str(p) for p in paths],
        "model_type": ModelType.parse(config.model_type).short,
        "rubric": agent or "general",
        "settings": {"min_quality_score": tf.min_quality_score,
                     "verified_threshold": tf.verified_threshold,
                     "high_quality_threshold": tf.high_quality_threshold,
                     "provided_weight": tf.provided_weight, "dedup": tf.dedup.config.__dict__,
                     "completeness": tf.completeness,  # which rules and which combination decided (issue 31)
                     "combine": "rules" if tf.combiner is None else f"learned:{tf.combiner.name}"},
        "lines_read": load_stats.get("lines", 0),
        "load_rejected": sum(v for k, v in load_rejects.items() if k.startswith("load:")),
        "stats": stats.to_dict(),
        "seconds": round(elapsed, 3),
        "scoring_seconds": round(t_score, 3),
        "workers": tf.workers,
        "records_per_second": round(stats.total_input / elapsed, 1) if elapsed > 0 else None,
        "files": {n: str(out_dir / n) for n in ("filtered.jsonl", "rejects.jsonl", "report.json", "report.md")},
    }


def render_markdown(report: dict[str, Any]) -> str:
    s = report["stats"]
    lines = [f"# Truth filter report ({report['model_type']}, rubric {report['rubric']})", "",
             f"Inputs: {', '.join(report['inputs'])}", "",
             "| count | value |", "|---|---:|"]
    for k in ("lines_read", "load_rejected"):
        lines.append(f"| {k} | {report[k]} |")
    for k in ("total_input", "invalid_removed", "low_quality_removed", "exact_duplicates_removed",
              "near_duplicates_removed", "duplicate_groups_lost", "final_output", "verified", "high_quality", "standard",
              "average_quality_score"):
        lines.append(f"| {k} | {s[k]} |")
    lines += ["", "## Reasons (records showing each, by reject code: docs/data.md)", "", "| code | records |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(s["reasons"].items(), key=lambda kv: -kv[1])]
    lines += ["", "## Quality score histogram", "", "| score | scored | kept |", "|---|---:|---:|"]
    for b in range(HIST_BINS):
        lo, hi = b / HIST_BINS, (b + 1) / HIST_BINS
        lines.append(f"| {lo:.1f}-{hi:.1f} | {s['histogram'][b]} | {s['kept_histogram'][b]} |")
    lines += ["", f"Settings: `{json.dumps(report['settings'])}`",
              f"Time: {report['seconds']} s ({report['records_per_second']} records/s)", ""]
    return "\n".join(lines)


def _spool(record: Record, a: Assessment) -> dict[str, Any]:
    return {"r": record.to_json(), "s": record.source, "l": record.line,
            "a": [a.quality, a.category.value, a.details]}


def _unspool(obj: dict[str, Any]) -> tuple[Record, Assessment]:
    r = obj["r"]
    record = Record(messages=r["messages"], source=obj["s"], line=obj["l"],
                    quality_score=r.get("quality_score"), emergence_score=r.get("emergence_score"),
                    agent_type=r.get("agent_type"), metadata=r.get("metadata", {}),
                    signals=r.get("signals", {}), weight=r.get("weight", 1.0), tools=r.get("tools"))
    q, cat, details = obj["a"]
    return record, Assessment(q, Category(cat), [], details)


class _atomic_open:
    """Open `final` for writing under a temporary sibling name; fsync and rename on success."""

    def __init__(self, final: Path):
        self.final = Path(final)

    def __enter__(self):
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.final.name}.", dir=self.final.parent)
        # backslashreplace: a lone surrogate is written as its JSON escape (see RejectWriter)
        self.fh = os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace")
        return self.fh

    def __exit__(self, exc_type, *exc: object) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        if exc_type is None:
            os.replace(self.tmp, self.final)
        else:
            os.unlink(self.tmp)
