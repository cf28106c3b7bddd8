"""Start `iceburg serve` / `iceburg collect` as child processes on loopback ports and wait until they
answer (used by tests/serve, bench/proxy_load.py and scripts that drive the loop)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import IceburgError


# Loopback probes never go through an HTTP(S)_PROXY from the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    proc: subprocess.Popen
    url: str  # http://127.0.0.1:PORT
    log_path: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send `sig` (SIGKILL for a crash) and wait; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def start_service(args: list[str], probe_path: str, log_path: Path, *, port: int, timeout: float = 120.0,
                  env: dict[str, str] | None = None) -> Service:
    """Run `python -m iceburg.app ARGS` and poll `GET probe_path` until it answers (any status)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "iceburg.app", *args], stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})
    return wait_until_answering(Service(proc, f"http://127.0.0.1:{port}", log_path), probe_path, timeout,
                                f"`iceburg {' '.join(args)}`")


def wait_until_answering(service: Service, probe_path: str, timeout: float, what: str) -> Service:
    """Poll `GET probe_path` until the service answers (any status); a process that exits or stays
    silent past `timeout` is an error quoting the end of its log (the silent one is killed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.proc.poll() is not None:
            raise IceburgError(f"{what} exited with {service.proc.returncode}:\n{service.log_text()[-3000:]}")
        try:
            _DIRECT.open(service.url + probe_path, timeout=2).close()
            return service
        except urllib.error.HTTPError:
            return service  # it answered
        except OSError:
            time.sleep(0.2)
    service.stop(signal.SIGKILL)
    raise IceburgError(f"{what} did not answer on {service.url} within {timeout:.0f} s:\n{service.log_text()[-3000:]}")


def start_serve(target: str | Path, log_path: Path, *, port: int | None = None, threads: int = 1,
                extra: list[str] | None = None) -> Service:
    port = port or free_port()
    return start_service(["serve", str(target), "--port", str(port), "--threads", str(threads), *(extra or [])],
                         "/v1/models", log_path, port=port)


def start_collect(upstream: str, log_dir: Path, log_path: Path, *, port: int | None = None,
                  extra: list[str] | None = None) -> Service:
    port = port or free_port()
    return start_service(["collect", "--upstream", upstream, "--log", str(log_dir), "--port", str(port),
                          *(extra or [])], "/_iceburg/stats", log_path, port=port)
