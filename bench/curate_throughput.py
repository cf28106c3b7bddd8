"""Curation on datatrove: records/s with 1 and 2 local workers, peak memory per worker, and a
check at scale that the sharded result equals the one-process `--filter-only`.

    python bench/curate_throughput.py                        # 10k transcripts, truth + dedup
    python bench/curate_throughput.py --emergence-size 1000  # also emergence (embeds cold)

Corpus: bench/truth_throughput.py's synthetic transcripts (2-8 KB, 5% defects, 5% exact/near
copies), split round-robin into --files files (files are the shards). Every run is a fresh
subprocess of the real CLI (`iceburg-train --filter-only [--curate-tasks T --curate-workers W]`);
the one-process row is plain `--filter-only` (run_filter_only with 1 scoring worker).
Peak RSS per worker: the largest `peak_rss_mb` of the tasks (ru_maxrss of the process that ran
them: with 1 worker that is the main process, with 2 each pool process). Results:
bench/results/curate_throughput.md, with the load average before each run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]


def split(src: Path, files: int, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    handles = [open(out / f"part-{i:03d}.jsonl", "w", encoding="utf-8") for i in range(files)]
    with open(src, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            handles[i % files].write(line)
    for h in handles:
        h.close()
    return out


def run(data: Path, out: Path, tasks: int, workers: int, emergence: bool) -> dict:
    shutil.rmtree(out, ignore_errors=True)  # a fresh output and a cold embedding cache
    flags = ["--filter-only", "--data-path", str(data), "--output-dir", str(out), "--model-type", "surveyor"]
    if tasks:
        flags += ["--curate-tasks", str(tasks), "--curate-workers", str(workers)]
    if not emergence:
        flags += ["--no-emergence"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1",
               ICEBURG_EMBEDDING_CACHE=str(out / "embedding-cache"))  # cold: nothing cached
    load = os.getloadavg()[0]
    t = time.time()
    done = subprocess.run([sys.executable, "-m", "iceburg.cli", *flags], env=env, capture_output=True, text=True)
    wall = time.time() - t
    if done.returncode != 0:
        raise SystemExit(f"{flags} failed:\n{done.stderr[-3000:]}")
    rep = json.loads(done.stdout)
    row = {"engine": f"datatrove {tasks} tasks" if tasks else "--filter-only (one process + its auto scoring pool)",
           "workers": workers if tasks else 1, "emergence": emergence, "lines": rep["lines_read"],
           "kept": rep["stats"]["final_output"], "command_wall_s": round(wall, 1),
           "records_per_s": round(rep["lines_read"] / wall, 1), "load_avg_1m_before": round(load, 2)}
    for stage, v in rep.get("curation", {}).get("stages", {}).items():
        row[f"{stage}_s"] = v["seconds_max"]
        row["peak_rss_mb_per_worker"] = max(row.get("peak_rss_mb_per_worker", 0.0), v["peak_rss_mb_max"])
    return row


def same(a: Path, b: Path) -> bool:
    def rejects(p: Path) -> list[str]:
        return sorted(p.read_text(encoding="utf-8").splitlines())
    return ((a / "filtered.jsonl").read_bytes() == (b / "filtered.jsonl").read_bytes()
            and rejects(a / "rejects.jsonl") == rejects(b / "rejects.jsonl"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=10_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--emergence-size", type=int, default=0, help="also run emergence on this many (0: skip)")
    ap.add_argument("--emergence-only", action="store_true", help="only the emergence rows")
    ap.add_argument("--name", default="curate_throughput", help="result file name under bench/results")
    ap.add_argument("--work", default="/tmp/iceburg_curate_bench")
    args = ap.parse_args()
    from _common import machine_info, save
    from truth_throughput import build_corpus

    work = Path(args.work)
    rows = []
    data = split(build_corpus(args.size), args.files, work / f"data_{args.size}")
    one = work / "one"
    if not args.emergence_only:
        rows.append(run(data, one, 0, 1, False))
        for workers in (1, 2):
            out = work / f"w{workers}"
            rows.append(run(data, out, args.files, workers, False))
            rows[-1]["equals_one_process"] = same(out / "filtered", one / "filtered")
    if args.emergence_size:
        src = build_corpus(args.size)
        small = work / f"src_{args.emergence_size}.jsonl"
        with open(src, encoding="utf-8") as fh, open(small, "w", encoding="utf-8") as out_fh:
            for i, line in zip(range(args.emergence_size), fh):
                out_fh.write(line)
        sdata = split(small, args.files, work / f"data_{args.emergence_size}")
        for workers in (1, 2):
            rows.append(run(sdata, work / f"e{workers}", args.files, workers, True))
    meta = dict(machine_info(), corpus=f"{args.size} synthetic transcripts in {args.files} files",
                threads_per_worker=1)
    cols = ["engine", "workers", "emergence", "lines", "kept", "command_wall_s", "records_per_s",
            "truth_s", "dedup_s", "kept_s", "novelty_s", "emergence_s", "peak_rss_mb_per_worker",
            "equals_one_process", "load_avg_1m_before"]
    print(save(args.name, rows, meta, cols))


if __name__ == "__main__":
    main()
