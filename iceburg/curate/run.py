"""`curate(cfg)`: `--filter-only --curate-tasks N [--curate-workers W]` on datatrove's local executor,
and `curation_stages(spec, tasks)` for running the same steps under its Slurm or Ray executors.

The stages (iceburg.curate.steps) hand over files in `<out>/.curate/`; the merge at the end writes
the same files as `--filter-only` (`filtered.jsonl`, `rejects.jsonl`, `report.json`, `report.md`),
in the single-process order, with every count summed over the shards.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

from ..config import ModelType, TrainingConfig
from ..truth.filter import HIST_BINS
from .steps import (KEPT, REJECTS, CurateSpec, DedupApplyStep, DedupResolveStep, EmergenceApplyStep,
                    NoveltyStep, TruthScoreStep, read_spool, write_json)

logger = logging.getLogger(__name__)

WORK = ".curate"


def curation_stages(spec: CurateSpec, tasks: int) -> list[tuple[list[Any], int]]:
    """The pipeline as (steps, task count) stages, to hand to any datatrove executor in order
    (each stage `depends=` on the previous one). Sharded stages take `tasks` tasks; the global
    decisions (dedup clusters, novelty) take one."""
    stages: list[tuple[list[Any], int]] = [([TruthScoreStep(spec)], tasks), ([DedupResolveStep(spec)], 1),
                                           ([DedupApplyStep(spec)], tasks)]
    if spec.emergence:
        stages += [([NoveltyStep(spec)], 1), ([EmergenceApplyStep(spec)], tasks)]
    return stages


def local_executors(spec: CurateSpec, tasks: int, workers: int) -> list[Any]:
    from datatrove.executor import LocalPipelineExecutor

    execs: list[Any] = []
    for i, (steps, n) in enumerate(curation_stages(spec, tasks)):
        execs.append(LocalPipelineExecutor(
            pipeline=steps, tasks=n, workers=min(workers, n), depends=execs[-1] if execs else None,
            logging_dir=str(Path(spec.work) / "logs" / f"{i}-{steps[0].stage_name}"),
            # a fresh run each time: a stale completion marker would skip a task on new inputs
            skip_completed=False))
    return execs


def make_spec(cfg: TrainingConfig, out_dir: Path, workers: int) -> CurateSpec:
    from ..data.loader import expand_paths
    from ..pipeline import data_paths

    files = tuple(str(p) for p in expand_paths(data_paths(cfg)))
    return CurateSpec(files=files, work=str(out_dir / WORK), agent=ModelType.parse(cfg.model_type).agent,
                      min_quality_score=cfg.min_quality_score, truth_patterns=cfg.truth_patterns,
                      strict=cfg.strict, emergence=cfg.use_emergence_weighting,
                      semantic_dedup=cfg.semantic_dedup,
                      threads=max(1, (os.cpu_count() or 1) // max(1, workers)))


def curate(cfg: TrainingConfig, out_dir: Path | None = None) -> dict[str, Any]:
    """Run the curation stages locally over `cfg.curate_tasks` tasks with `cfg.curate_workers`
    processes; returns the report (also report.json / report.md in the output folder)."""
    out = Path(out_dir) if out_dir is not None else Path(cfg.output_dir) / (cfg.output_name or "filtered")
    out.mkdir(parents=True, exist_ok=True)
    spec = make_spec(cfg, out, cfg.curate_workers)
    shutil.rmtree(spec.work, ignore_errors=True)
    t0 = time.perf_counter()
    for ex in local_executors(spec, cfg.curate_tasks, cfg.curate_workers):
        ex.run()
    report = merge(spec, out, cfg.curate_tasks)
    report["seconds"] = round(time.perf_counter() - t0, 3)
    report["records_per_second"] = round(report["lines_read"] / report["seconds"], 1) if report["seconds"] else None
    report["curation"]["workers"] = cfg.curate_workers
    report["model_type"] = ModelType.parse(cfg.model_type).short
    write_report(out, report)
    for stage in ("truth", "dedup", "kept", "novelty", "emergence"):  # keep logs/ and the task figures
        shutil.rmtree(Path(spec.work) / stage, ignore_errors=True)
    return report


# -- merge ---------------------------------------------------------------------------------------
def _tasks(spec: CurateSpec, stage: str) -> list[dict[str, Any]]:
    d = Path(spec.work) / stage
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(d.glob("*.task.json"))]


def _merged_rejects(spec: CurateSpec, stage: str, tasks: int) -> Iterator[str]:
    """One stage's reject lines from every shard, in (file, line) order."""
    file_no = {p: i for i, p in enumerate(spec.files)}

    def lines(rank: int) -> Iterator[tuple[tuple[int, int], str]]:
        path = Path(spec.work) / stage / REJECTS.format(rank=rank)
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                obj = json.loads(line)
                yield (file_no.get(obj["source"], -1), obj["line"]), line

    for _, line in heapq.merge(*(lines(r) for r in range(tasks)), key=lambda kv: kv[0]):
        yield line


def merge(spec: CurateSpec, out: Path, tasks: int) -> dict[str, Any]:
    """Write filtered.jsonl and rejects.jsonl in the single-process order and sum the counts."""
    from ..truth import TruthFilter

    truth = _tasks(spec, "truth")
    stats = _summed_stats([t["stats"] for t in truth + _tasks(spec, "kept")])
    load, counts = _summed(t["load"] for t in truth), _summed(t["reject_counts"] for t in truth)
    final = "emergence" if spec.emergence else "kept"
    features: dict[str, None] = {}
    quality_sum = emergence_sum = novelty_sum = 0.0
    n = 0
    streams = [read_spool(Path(spec.work) / final / KEPT.format(rank=r)) for r in range(tasks)]
    with _atomic(out / "filtered.jsonl") as fh:
        for f, record, _ in heapq.merge(*streams, key=lambda t: (t[0], t[1].line)):
            quality_sum += record.signals["truth.quality"]  # the single-process summation order
            if spec.emergence:
                emergence_sum += record.signals["emergence.score"]
                novelty_sum += record.signals["emergence.novelty"]
                features.update(dict.fromkeys(record.metadata.get("emergence.features", [])))
            n += 1
            fh.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
    stats.average_quality_score = quality_sum
    TruthFilter.finish(stats)
    with _atomic(out / "rejects.jsonl") as fh:
        for stage in ("truth", "kept") + (("emergence",) if spec.emergence else ()):
            fh.writelines(_merged_rejects(spec, stage, tasks))
    report = _report(spec, out, tasks, load, counts, stats)
    if spec.emergence:
        report["emergence"] = _emergence_report(spec, emergence_sum, novelty_sum, n, features)
    return report


def _summed(parts) -> dict[str, int]:
    """Key-wise sum of count dicts, keys in first-seen order."""
    total: dict[str, int] = {}
    for part in parts:
        for k, v in part.items():
            total[k] = total.get(k, 0) + v
    return total


def _summed_stats(parts: list[dict[str, Any]]):
    """The tasks' `TruthFilterStats` dicts summed field by field (the average is recomputed by
    `TruthFilter.finish` from the merged quality sum)."""
    from ..truth import TruthFilterStats

    stats = TruthFilterStats()
    for part in parts:
        for k, v in part.items():
            if k == "reasons":
                for r, n in v.items():
                    stats.reasons[r] = stats.reasons.get(r, 0) + n
            elif k in ("histogram", "kept_histogram"):
                setattr(stats, k, [a + b for a, b in zip(getattr(stats, k), v)])
            elif k != "average_quality_score":
                setattr(stats, k, getattr(stats, k) + v)
    return stats


def _report(spec: CurateSpec, out: Path, tasks: int, load: dict, counts: dict, stats) -> dict[str, Any]:
    return {
        "inputs": list(spec.files), "rubric": spec.agent or "general",
        "settings": {"min_quality_score": spec.min_quality_score, "truth_patterns": spec.truth_patterns,
                     "semantic_dedup": spec.semantic_dedup},
        "lines_read": load.get("lines", 0),
        "load_rejected": sum(v for k, v in counts.items() if k.startswith("load:")),
        "stats": stats.to_dict(),
        "curation": {"engine": "datatrove", "tasks": tasks,
                     "stages": {s: {"tasks": len(tt := _tasks(spec, s)),
                                    "seconds_max": max((t["seconds"] for t in tt), default=0.0),
                                    "peak_rss_mb_max": max((t["peak_rss_mb"] for t in tt), default=0.0)}
                                for s in ("truth", "dedup", "kept", "novelty", "emergence")
                                if (Path(spec.work) / s).is_dir()}},
        "files": {k: str(out / k) for k in ("filtered.jsonl", "rejects.jsonl", "report.json", "report.md")},
        "seconds": None, "records_per_second": None,  # set by the caller that timed the stages
    }


def _emergence_report(spec: CurateSpec, emergence_sum: float, novelty_sum: float, n: int,
                      features: dict[str, None]) -> dict[str, Any]:
    em = {"total_processed": 0, "novel_count": 0, "transitional_count": 0, "familiar_count": 0,
          "baseline_count": 0, "duplicates_rejected": 0, "unusable_rejected": 0}
    for t in _tasks(spec, "emergence"):
        for k in em:
            em[k] += t["stats"][k]
    em.update(average_emergence=emergence_sum / n if n else 0.0,
              average_novelty=novelty_sum / n if n else 0.0, novel_features_found=list(features))
    return em


def write_report(out: Path, report: dict[str, Any]) -> None:
    from ..truth.report import render_markdown

    report.setdefault("model_type", report["rubric"])  # curate() sets the model type's short name
    write_json(out / "report.json", report)
    md = render_markdown(report)
    stages = report["curation"]["stages"]
    md += "\n## Curation (datatrove)\n\n| stage | tasks | slowest task s | peak RSS per task MB |\n|---|---:|---:|---:|\n"
    md += "".join(f"| {s} | {v['tasks']} | {v['seconds_max']} | {v['peak_rss_mb_max']} |\n" for s, v in stages.items())
    (out / "report.md").write_text(md, encoding="utf-8")


class _atomic:
    """Write `final` under a temporary sibling name, renamed on success."""

    def __init__(self, final: Path):
        self.final, self.tmp = final, final.with_name(f".{final.name}.tmp")

    def __enter__(self):
        self.fh = open(self.tmp, "w", encoding="utf-8", errors="backslashreplace")
        return self.fh

    def __exit__(self, exc_type, *exc: object) -> None:
        self.fh.close()
        if exc_type is None:
            os.replace(self.tmp, self.final)
        else:
            os.unlink(self.tmp)
