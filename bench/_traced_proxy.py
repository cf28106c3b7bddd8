"""`iceburg collect` under tracemalloc, for `bench/proxy_load.py --memory N --tracemalloc`: each
SIGUSR1 writes a snapshot of the Python heap (`OUT/snap-K.pickle`, K = 1, 2, ...), so the bench can
compare the heap at chosen points of a long run.

    python bench/_traced_proxy.py UPSTREAM LOG_DIR PORT OUT_DIR
"""

from __future__ import annotations

import os
import signal
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
tracemalloc.start(8)  # 8 frames: deep enough to reach the proxy's own caller through starlette/httpx


def main() -> None:
    from iceburg.serve.proxy import ProxyConfig, run_proxy

    upstream, log_dir, port, out = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    taken = 0

    def dump(signum, frame) -> None:
        nonlocal taken
        taken += 1
        tmp = out / f"snap-{taken}.tmp"
        tracemalloc.take_snapshot().dump(str(tmp))
        os.replace(tmp, out / f"snap-{taken}.pickle")  # the bench waits for the whole file

    signal.signal(signal.SIGUSR1, dump)
    run_proxy(ProxyConfig(upstream=upstream, log_dir=log_dir, port=port))


if __name__ == "__main__":
    main()
