"""`iceburg collect` with a glibc heap-trim switch, for `bench/proxy_load.py --memory N --trim`: each
SIGUSR2 calls glibc's `malloc_trim(0)` (free memory at the top of every malloc arena and unused whole
pages inside them goes back to the kernel) and then writes `OUT/trim-K.done`, so the bench can read
the proxy's RSS before and after: what comes back was freed memory the allocator held, not a leak.

    python bench/_trim_proxy.py UPSTREAM LOG_DIR PORT OUT_DIR LOOP HTTP
"""

from __future__ import annotations

import ctypes
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from iceburg.serve.proxy import ProxyConfig, run_proxy

    upstream, log_dir, port, out = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    libc = ctypes.CDLL("libc.so.6")
    done = 0

    def trim(signum, frame) -> None:
        nonlocal done
        done += 1
        released = libc.malloc_trim(0)  # 1 when memory went back to the kernel
        (out / f"trim-{done}.done").write_text(str(released))

    signal.signal(signal.SIGUSR2, trim)
    run_proxy(ProxyConfig(upstream=upstream, log_dir=log_dir, port=port, loop=sys.argv[5], http=sys.argv[6]))


if __name__ == "__main__":
    main()
