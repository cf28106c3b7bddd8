"""The resumable job folder of `iceburg generate`.

    <job>/job.json          the settings that decide what is asked (checked on every restart)
    <job>/seeds.jsonl       the ranked seed list (computed once; a restart reuses it)
    <job>/requests.jsonl    every teacher request and its response, one JSON line each, append-only
    <job>/generated.jsonl   the curated records (`--data-path` for iceburg-train), rewritten each run
    <job>/rejects.jsonl     every generated prompt or transcript that was not kept, with its codes
    <job>/summary.json      counts: items, requests, kept, rejects per code

A request line is written with one `write` on an O_APPEND descriptor and fsynced before the answer is
used, so after a crash (kill -9) every finished call is on disk; a torn last line (the process died
inside the write) is cut off when the job is reopened, and that call is made again. Nothing finished
is ever asked twice: each line carries the item's key (`ask:<n>` / `answer:<n>`).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from ..errors import IceburgError

logger = logging.getLogger(__name__)


def write_atomic(path: Path, text: str) -> None:
    """Temp file in the same folder + fsync + rename: readers see the old file or the new one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class JobFolder:
    """One generation job: its settings, seeds and the append-only request log."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.job = self.root / "job.json"
        self.seeds = self.root / "seeds.jsonl"
        self.requests = self.root / "requests.jsonl"
        self.generated = self.root / "generated.jsonl"
        self.rejects = self.root / "rejects.jsonl"
        self.summary = self.root / "summary.json"

    def open(self, settings: dict[str, Any]) -> bool:
        """Create the job, or reopen it with the same settings; True when it already existed."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.job.is_file():
            write_atomic(self.job, json.dumps(settings, indent=2, sort_keys=True))
            return False
        old = json.loads(self.job.read_text(encoding="utf-8"))
        changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if changed:
            diff = "; ".join(f"{k}: {old.get(k)!r} -> {settings.get(k)!r}" for k in changed)
            raise IceburgError(f"{self.job}: this job was started with other settings ({diff}); rerun with the "
                               "same settings to resume it, or pass a new --job folder")
        self._repair_log()
        for stale in self.root.glob(".*.jsonl.*"):  # temp files of a writer killed before its rename
            stale.unlink()
        return True

    def _repair_log(self) -> None:
        """Cut a torn last line (a crash inside the append) so the log holds only whole lines."""
        if not self.requests.is_file():
            return
        data = self.requests.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            logger.warning("%s: cutting a torn last line (%d bytes) left by an interrupted write",
                           self.requests, len(data) - end)
            with open(self.requests, "r+b") as fh:
                fh.truncate(end)
                os.fsync(fh.fileno())

    def finished(self) -> dict[str, dict[str, Any]]:
        """key -> the logged entry of every call that returned a response."""
        out: dict[str, dict[str, Any]] = {}
        if self.requests.is_file():
            for line in self.requests.read_text(encoding="utf-8").splitlines():
                entry = json.loads(line)
                if "response" in entry:
                    out[entry["key"]] = entry
        return out

    def append(self, entry: dict[str, Any]) -> None:
        """One whole line, one write, fsynced before returning."""
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        fd = os.open(self.requests, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def write_jsonl(self, path: Path, rows: Iterable[dict[str, Any]]) -> None:
        write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

    def read_jsonl(self, path: Path) -> list[dict[str, Any]]:
        return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x]
