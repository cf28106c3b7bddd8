"""`FineTuningLogger`: agents append conversations to a training dataset while they run.

    log = FineTuningLogger("logs/surveyor.jsonl", agent_type="surveyor")
    log.log([{"role": "user", "content": q}, {"role": "assistant", "content": a}], quality_score=0.9)

Safe with many threads and processes writing the same file:
- Each record is one JSON line written with a single `os.write()` on a descriptor opened with
  `O_APPEND`, so the kernel places every write at the current end of file; the write is done while
  holding an exclusive `fcntl.flock` on a sidecar lock file (`.<name>.lock`) plus a thread lock, so
  lines can neither interleave nor tear even when a write is split (large lines, NFS-like
  filesystems where O_APPEND is not atomic). There is no user-space buffer: a crash of the writing
  process loses nothing that `log()` returned from.
- Durability (`fsync=`): "always" fsyncs after every line (survives power loss; measured cost is
  the disk's sync latency per line), "interval" (default) fsyncs at most once per
  `fsync_interval` seconds and on `close()` (a power loss can lose at most that window),
  "never" leaves it to the OS (typically up to ~30 s of dirty pages on Linux).
- Rotation by size: before a write that would take the file past `max_bytes`, the file is renamed
  to `<stem>.<n>.jsonl` (next free n, under the lock) and a new file is started. Writers in other
  processes notice the rename (inode check under the lock) and reopen. Rotated files end in
  `.jsonl`, so pointing `--data-path` at the folder trains on all of them.
- Records are validated with the loader's own `normalise` before writing, so every line is in the
  format `iceburg.data.loader.read_records` reads; an invalid conversation raises `DataError`
  in the agent, instead of poisoning the dataset.
- Fork-safe: a logger used in a child process reopens its descriptors.

`AgentLogFolder` routes conversations of many agents into one folder, one file per agent and
UTC day (`DIR/<agent type>/YYYY-MM-DD.jsonl`), each written by a `FineTuningLogger`; the recording
proxy (`iceburg collect`, docs/loop.md) writes through it, so `--data-path DIR/surveyor` trains on
one agent's days.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import threading
import time
import weakref
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..records import Record
from .loader import InvalidLine, normalise

logger = logging.getLogger(__name__)

FSYNC_POLICIES = ("always", "interval", "never")
_LOGGERS: "weakref.WeakSet[FineTuningLogger]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A fork taken while another thread held a logger's thread lock would leave it locked forever
    # in the child; give every live logger a fresh lock (its descriptors reopen on first use).
    for lg in list(_LOGGERS):
        lg._tlock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


class FineTuningLogger:
    def __init__(self, path: str | os.PathLike, *, agent_type: str | None = None,
                 max_bytes: int = 256 * 2**20, fsync: str = "interval", fsync_interval: float = 1.0):
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, got {fsync!r}")
        if max_bytes < 1024:
            raise ValueError(f"max_bytes must be at least 1024, got {max_bytes}")
        self.path = Path(path)
        if self.path.suffix != ".jsonl":
            raise DataError(f"FineTuningLogger {self.path}: use a .jsonl file name (the loader reads *.jsonl)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock_path = self.path.with_name(f".{self.path.name}.lock")
        self.agent_type = agent_type
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.fsync_interval = fsync_interval
        self._tlock = threading.Lock()
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._pid = -1
        self._last_sync = time.monotonic()
        self.lines_written = 0
        self.rotations = 0
        _LOGGERS.add(self)

    # -- public API ------------------------------------------------------------------------------
    def log(self, messages: list[dict[str, Any]], *, quality_score: float | None = None,
            agent_type: str | None = None, metadata: dict[str, Any] | None = None,
            tools: list[dict[str, Any]] | None = None) -> None:
        """Append one conversation (validated) as one JSON line; `tools` are the request's function
        definitions (any shape the loader reads, e.g. OpenAI's `tools=`)."""
        obj: dict[str, Any] = {"messages": messages}
        if tools:
            obj["tools"] = tools
        if quality_score is not None:
            obj["quality_score"] = quality_score
        agent = agent_type or self.agent_type
        if agent is not None:
            obj["agent_type"] = agent
        if metadata:
            obj["metadata"] = metadata
        try:
            record = normalise(obj)
        except InvalidLine as e:
            raise DataError(f"FineTuningLogger {self.path}: not a valid conversation: {e}") from None
        self.log_record(record)

    def log_record(self, record: Record) -> None:
        # backslashreplace: a lone surrogate becomes the JSON escape \\udXXX (reads back identical)
        data = (json.dumps(record.to_json(), ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace")
        with self._tlock:
            self._ensure_open()
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)  # type: ignore[arg-type]
            try:
                self._reopen_if_rotated()
                size = os.fstat(self._fd).st_size  # type: ignore[arg-type]
                if size > 0 and size + len(data) > self.max_bytes:
                    self._rotate()
                self._write_all(data)
                self.lines_written += 1
                now = time.monotonic()
                if self.fsync == "always" or (self.fsync == "interval"
                                              and now - self._last_sync >= self.fsync_interval):
                    os.fsync(self._fd)  # type: ignore[arg-type]
                    self._last_sync = now
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)  # type: ignore[arg-type]

    def close(self) -> None:
        with self._tlock:
            if self._fd is not None and self._pid == os.getpid():
                if self.fsync != "never":
                    os.fsync(self._fd)
                os.close(self._fd)
                os.close(self._lock_fd)  # type: ignore[arg-type]
            self._fd = self._lock_fd = None

    def __enter__(self) -> "FineTuningLogger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals (called with the thread lock held) ---------------------------------------------
    def _ensure_open(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            return
        # New logger, or inherited across fork: never share descriptors/locks with the parent.
        self._lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._pid = os.getpid()

    def _reopen_if_rotated(self) -> None:
        try:
            same = os.stat(self.path).st_ino == os.fstat(self._fd).st_ino  # type: ignore[arg-type]
        except FileNotFoundError:
            same = False
        if not same:
            os.close(self._fd)  # type: ignore[arg-type]
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _rotate(self) -> None:
        n = 1
        while (target := self.path.with_name(f"{self.path.stem}.{n:05d}.jsonl")).exists():
            n += 1
        os.fsync(self._fd)  # type: ignore[arg-type]
        os.rename(self.path, target)
        os.close(self._fd)  # type: ignore[arg-type]
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.rotations += 1
        logger.info("rotated %s -> %s", self.path, target.name)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)  # type: ignore[arg-type]
            view = view[n:]


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def agent_folder_name(agent: str) -> str:
    """A folder name for an agent type or model name: `iceburg-surveyor:v2` -> `iceburg-surveyor_v2`;
    path separators and `..` cannot escape the log folder."""
    name = _UNSAFE.sub("_", agent.strip()).strip("._")[:100]
    return name or "unknown"


class AgentLogFolder:
    """`DIR/<agent>/YYYY-MM-DD.jsonl` (UTC day), one `FineTuningLogger` per file, opened on first use;
    a day's loggers are closed when the first record of a later day arrives."""

    def __init__(self, root: str | os.PathLike, **logger_options: Any):
        self.root = Path(root)
        self.options = logger_options
        self._loggers: dict[Path, FineTuningLogger] = {}
        self._lock = threading.Lock()
        self._day = ""

    def path_for(self, agent: str, when: datetime | None = None) -> Path:
        day = (when or datetime.now(timezone.utc)).strftime("%Y-%m-%d")
        return self.root / agent_folder_name(agent) / f"{day}.jsonl"

    def log(self, agent: str, messages: list[dict[str, Any]], **fields: Any) -> Path:
        """Validate and append one conversation (`FineTuningLogger.log` fields); returns its file.
        Raises `DataError` when the loader would not read it back as a training record."""
        path = self.path_for(agent)
        with self._lock:
            if path.stem != self._day:  # a new day: yesterday's files are complete
                for old in self._loggers.values():
                    old.close()
                self._loggers.clear()
                self._day = path.stem
            log = self._loggers.get(path)
            if log is None:
                log = self._loggers[path] = FineTuningLogger(path, agent_type=agent, **self.options)
            log.log(messages, **fields)  # under the lock: a day change cannot close it mid-write
        return path

    def close(self) -> None:
        with self._lock:
            for log in self._loggers.values():
                log.close()
            self._loggers.clear()
