"""Cold-embedding memory A/B (issue 13): the embedder in chunks (EMBED_CHUNK digests per model call
and cache shard) vs everything in one `encode` call (what it did before), same corpus, each in its
own process with an empty cache, both at once (1 thread each) so the machine's state is shared.

    python bench/emergence_chunk_ab.py --records 5000 --chunk 1000
    python bench/emergence_chunk_ab.py --variants chunked:2500:1000:0 chunked+malloc:5000:1000:1 --name ...

A variant is label:records:chunk:malloc (chunk 0 = one call; malloc 1 = glibc returns freed
memory to the OS, `iceburg.hardware.configure_cpu_allocator`).

Reports each stage's peak RSS (bench/emergence_throughput.py's worker); results:
bench/results/emergence_chunk_ab.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=5000)
    ap.add_argument("--chunk", type=int, default=1000, help="digests per model call in the chunked run")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--variants", nargs="+", help="label:records:chunk:malloc (default: chunked vs one call)")
    ap.add_argument("--name", default="emergence_chunk_ab")
    a = ap.parse_args()
    from _common import machine_info, save

    load = os.getloadavg()
    procs = {}
    with tempfile.TemporaryDirectory() as tmp:
        variants = [v.split(":") for v in a.variants] if a.variants else \
            [["chunked", a.records, a.chunk, 0], ["one call", a.records, 0, 0]]
        for label, records, chunk, malloc in variants:
            chunk = int(chunk)
            cache = Path(tmp) / label.replace(" ", "_").replace("+", "_")
            env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
                       ICEBURG_BENCH_EMBED_CHUNK=str(chunk), ICEBURG_BENCH_MALLOC=str(malloc))
            cmd = [sys.executable, str(HERE / "emergence_throughput.py"), "--worker", str(records), "--cache",
                   str(cache), "--threads", "1", "--max-tokens", str(a.max_tokens)]
            procs[label] = (chunk, subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        rows = []
        for label, (chunk, p) in procs.items():
            out, err = p.communicate()
            if p.returncode != 0:
                raise SystemExit(f"{label} failed:\n{err[-3000:]}")
            r = json.loads(out.strip().splitlines()[-1])
            r.update(embedder=label, chunk=chunk or "all")
            rows.append(r)
            print(json.dumps(r), flush=True)
    meta = machine_info()
    meta.update(load_average_start=load, load_average_end=os.getloadavg(), threads_per_run=1,
                note="both runs at once, 1 thread each, empty caches")
    print(save(a.name, rows, meta,
               ["embedder", "chunk", "records", "total_s", "embed_s", "text_mb", "rss_start_mb", "rss_after_data_mb",
                "peak_embed_mb", "peak_search_mb", "peak_score_mb", "peak_rss_mb"]))


if __name__ == "__main__":
    main()
