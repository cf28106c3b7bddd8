"""Shared helpers for benchmarks: machine description, peak RSS, result tables."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def machine_info() -> dict:
    import torch

    info = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
        "load_avg_1m": os.getloadavg()[0],
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def peak_rss_mb() -> float:
    """Peak resident set size of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def own_peak_rss_mib() -> float:
    """This process's peak RSS since its exec (VmHWM). Not ru_maxrss: Linux carries that across
    fork + exec, so a child of a large parent would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def trl_subprocess(script: str, out: Path, spec: dict) -> dict:
    """Run `script --trl-child SPEC` (TRL in its own process, so its memory and threads are its own)
    and return the JSON of its last output line; {"skipped"} without trl, {"failed"} with its stderr."""
    try:
        import trl  # noqa: F401
    except ImportError as e:
        return {"skipped": f"trl not installed ({e})"}
    path = out / "trl_spec.json"
    path.write_text(json.dumps(spec))
    p = subprocess.run([sys.executable, script, "--trl-child", str(path)], capture_output=True, text=True)
    if p.returncode != 0:
        return {"failed": p.stderr[-2000:]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def result_stem(part: str | None = None) -> str:
    """The results file stem of the running bench: one current table per bench
    (`bench/results/<bench>.md` + `.json`, `<bench>_<part>` for a second table the same run writes);
    earlier runs live in git history, never beside it under another name."""
    import sys

    bench = Path(sys.argv[0]).stem if sys.argv and sys.argv[0].endswith(".py") else "bench"
    return bench + (f"_{part}" if part else "")


def save(name: str, rows: list[dict], meta: dict, columns: list[str], part: str | None = None) -> str:
    """Write the bench's current table. `name` is the run's title (its variant: model, length, tag),
    kept in the heading and in the JSON meta; the file is `result_stem(part)`."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"run": name, **meta}
    lines = [f"# {name}", "", "Machine: " + ", ".join(f"{k}={v}" for k, v in meta.items()), "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |")
    table = "\n".join(lines) + "\n"
    stem = result_stem(part)
    (RESULTS / f"{stem}.md").write_text(table)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str))
    return table


def _fmt(v) -> str:
    if isinstance(v, float):
        # 5 significant digits below 10, so losses that differ in the 4th decimal stay apart
        return f"{v:.5g}" if abs(v) < 10 else f"{v:.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    return "" if v is None else str(v)


def md_table(rows: list[dict]) -> list[str]:
    """A markdown table of `rows` (keys of the first row as columns; floats to 3 decimals)."""
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else ("" if v is None else str(v))
                                     for v in (r.get(c) for c in cols)) + " |")
    return out
