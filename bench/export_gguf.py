"""GGUF export benchmark: wall time, peak memory and file size against the disk's write speed.

1. A random-weight model shaped like Qwen2.5-0.5B (iceburg.models.random.QWEN25_05B_SHAPE, bf16
   safetensors like the real checkpoint, 494M parameters) is exported to F16 and Q8_0, each in a
   fresh child process so its peak RSS (VmHWM) belongs to the export alone (page cache warm). The disk's sequential
   write speed (1 GiB, fsync'd) is measured in the same run: size / speed is the floor for the
   export's wall time. Issue 6 asks for a peak below 1.5x the model's F16 size.
2. The proof table: the embedded iceburg-tiny model exported to every GGUF type with
   verification on (llama.cpp vs transformers), as `export()` reports it.

Usage: python bench/export_gguf.py [--workdir DIR] [--skip-proof] [--verify-large]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine_info, save  # noqa: E402


def _status_kb(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child(model_dir: str, file_type: str, out: str) -> None:
    """Run one export in this (fresh) process and print its figures as JSON."""
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    from iceburg.export.gguf import write_gguf

    base = _status_kb("VmRSS")
    t0 = time.perf_counter()
    path = write_gguf(Path(model_dir), Path(out), file_type)
    wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    print(json.dumps({"wall_s": wall, "fsync_s": time.perf_counter() - t1, "bytes": path.stat().st_size,
                      "baseline_rss_mb": base / 1024, "peak_rss_mb": _status_kb("VmHWM") / 1024}))


def disk_write_mb_s(folder: Path, size: int = 1 << 30) -> float:
    """Sequential write of `size` bytes in 16 MiB blocks, fsync'd, like a GGUF file being written."""
    block = os.urandom(16 << 20)
    path = folder / ".disk-speed-probe"
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(size // len(block)):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    seconds = time.perf_counter() - t0
    path.unlink()
    return size / seconds / 1e6


def large_model_rows(work: Path, verify: bool) -> tuple[list[dict], dict]:
    from iceburg.models.random import QWEN25_05B_SHAPE, build_random_model
    from iceburg.models.tiny import ensure_tiny_model

    model_dir = work / "qwen25-05b-random"
    t0 = time.perf_counter()
    if not (model_dir / "config.json").exists():
        build_random_model("qwen2", model_dir, tokenizer_dir=ensure_tiny_model(), **QWEN25_05B_SHAPE)
    build_s = time.perf_counter() - t0
    n_params = json.loads((model_dir / "iceburg_random.json").read_text())["params"]
    f16_mb = n_params * 2 / 1e6
    disk = disk_write_mb_s(work)
    # Warm the page cache so both exports read the safetensors from memory: the figures then
    # compare conversion + write, not whichever run happened to read the disk first.
    for f in model_dir.glob("*.safetensors"):
        with open(f, "rb") as fh:
            while fh.read(64 << 20):
                pass
    rows = []
    for file_type in ("f16", "q8_0"):
        out = work / f"qwen25-05b-{file_type}.gguf"
        proc = subprocess.run([sys.executable, __file__, "--child", str(model_dir), file_type, str(out)],
                              capture_output=True, text=True, check=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        size_mb = r["bytes"] / 1e6
        row = {"model": "Qwen2.5-0.5B shape (random, bf16 in)", "type": file_type, "params_M": n_params / 1e6,
               "file_MB": size_mb, "export_s": r["wall_s"], "fsync_s": r["fsync_s"],
               "export_MB_per_s": size_mb / r["wall_s"], "disk_write_MB_per_s": disk,
               "disk_floor_s": size_mb / disk, "peak_rss_MB": r["peak_rss_mb"],
               "baseline_rss_MB": r["baseline_rss_mb"], "peak_over_f16_size": r["peak_rss_mb"] / f16_mb,
               "export_rss_over_f16_size": (r["peak_rss_mb"] - r["baseline_rss_mb"]) / f16_mb}
        if verify:
            from iceburg.export.gguf_verify import verify_gguf

            rep = verify_gguf(model_dir, out, file_type=file_type)
            row.update(max_abs_logit_diff=rep["max_abs_logit_diff"], argmax_agreement=rep["argmax_agreement"],
                       tokenization_match=rep["tokenization_match"], verify_s=rep["seconds"])
        rows.append(row)
        out.unlink()
    return rows, {"random_model_build_s": round(build_s, 1), "f16_size_MB": round(f16_mb, 1)}


def proof_rows(work: Path) -> list[dict]:
    from iceburg.export.base import ExportContext
    from iceburg.export.gguf import FILE_TYPES, export
    from iceburg.models.tiny import ensure_tiny_model

    tiny = ensure_tiny_model()
    ctx = ExportContext(name="iceburg-tiny", quantization=list(FILE_TYPES), verify=True)
    t0 = time.perf_counter()
    result = export(tiny, work / "proof", ctx)
    total = time.perf_counter() - t0
    rows = []
    for name, entry in result.report["files"].items():
        v = entry["verify"]
        rows.append({"model": "iceburg-tiny", "type": v["file_type"], "file_MB": entry["bytes"] / 1e6,
                     "max_abs_logit_diff": v["max_abs_logit_diff"], "argmax_agreement": v["argmax_agreement"],
                     "greedy_exact": f"{v['greedy_exact_prompts']}/{v['prompts']}",
                     "greedy_token_agreement": v["greedy_token_agreement"],
                     "tokenization_match": f"{v['tokenization_texts']}/{v['tokenization_texts']}" if v["tokenization_match"]
                     else f"MISMATCH ({len(v['tokenization_mismatches'])})",
                     "write_s": entry["write_s"], "verify_s": v["seconds"]})
    rows.append({"model": "iceburg-tiny", "type": "all 8 (total)", "write_s": total})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", nargs=3, metavar=("MODEL_DIR", "TYPE", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temp dir on /tmp)")
    ap.add_argument("--skip-proof", action="store_true", help="skip the iceburg-tiny proof table")
    ap.add_argument("--verify-large", action="store_true", help="also prove the 0.5B files in llama.cpp (slow)")
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="iceburg-bench-gguf-"))
    work.mkdir(parents=True, exist_ok=True)
    meta = machine_info()
    rows, extra = large_model_rows(work, args.verify_large)
    meta.update(extra)
    cols = ["model", "type", "params_M", "file_MB", "export_s", "fsync_s", "export_MB_per_s", "disk_write_MB_per_s",
            "disk_floor_s", "peak_rss_MB", "baseline_rss_MB", "peak_over_f16_size", "export_rss_over_f16_size"]
    if args.verify_large:
        cols += ["max_abs_logit_diff", "argmax_agreement", "tokenization_match", "verify_s"]
    print(save("export_gguf", rows, meta, cols))
    if not args.skip_proof:
        proof = proof_rows(work)
        print(save("export_gguf_proof", proof, machine_info(),
                   ["model", "type", "file_MB", "max_abs_logit_diff", "argmax_agreement", "greedy_exact",
                    "greedy_token_agreement", "tokenization_match", "write_s", "verify_s"], part="proof"))


if __name__ == "__main__":
    main()
