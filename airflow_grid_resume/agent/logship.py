"""The command's output: a local spool file, and a thread that ships it to the ledger in chunks.

The spool decouples the command from S3: output is appended to a local file at disk speed and
shipped from there, so a slow or failing S3 never makes the command block on a full pipe.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time

from airflow_grid_resume.agent.ledger import MAX_LOG_CHUNK, RunLedger

log = logging.getLogger(__name__)


# Output is shipped every 3 s while it flows: each upload is one S3 PUT on the run's bill and one
# GET (about 1 ms of CPU) for the watching trigger, and a line still reaches the task log within
# about 3.5 s (docs/benchmarks.md: what a run costs, run watches).
DEFAULT_LOG_INTERVAL = 3.0


class LogSpool:
    """An append-only local file of the combined output (command and agent lines)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        self._lock = threading.Lock()
        self._size = 0
        self._last_byte = b"\n"

    @property
    def size(self) -> int:
        return self._size

    def append(self, data: bytes) -> None:
        if not data:
            return
        with self._lock:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            self._size += len(data)
            self._last_byte = data[-1:]

    def append_line(self, line: str) -> None:
        """An agent line, started on a fresh line even if the command left one unfinished."""
        with self._lock:
            prefix = b"" if self._last_byte == b"\n" else b"\n"
        self.append(prefix + line.rstrip("\n").encode() + b"\n")

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self._fd, length, offset)

    def tail_lines(self, n: int, max_bytes: int = 64 * 1024) -> list[str]:
        start = max(0, self._size - max_bytes)
        text = self.read(start, self._size - start).decode(errors="replace")
        lines = text.splitlines()
        if start > 0 and lines:
            lines = lines[1:]  # the first line is probably cut
        return lines[-n:]

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


class SpoolLogHandler(logging.Handler):
    """Puts the agent's own log lines into the spool, so the task log tells the whole story."""

    def __init__(self, spool: LogSpool) -> None:
        super().__init__(level=logging.INFO)
        self.spool = spool
        self.setFormatter(logging.Formatter("[grid-resume] %(asctime)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.spool.append_line(self.format(record))
        except Exception:
            self.handleError(record)


class LogShipper:
    """Uploads new spool bytes every ``interval`` seconds as ``logs/<offset>.log`` objects.

    Uploads start on a fixed grid of the monotonic clock (not ``interval`` after the last upload
    ended), so chunks land at a steady phase that the watching trigger learns and reads just after
    (triggers/cadence.py): one GET per chunk instead of a poll that mostly misses."""

    def __init__(self, ledger: RunLedger, session: int, spool: LogSpool, *, interval: float = 1.0) -> None:
        self.ledger = ledger
        self.session = session
        self.spool = spool
        self.interval = interval
        self.shipped = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="grid-logship", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def flush(self) -> None:
        """Ship everything spooled so far (bounded chunks). Output that arrives while a chunk uploads
        waits for the next tick: shipping it at once would put a second chunk off the grid."""
        with self._lock:
            end = self.spool.size
            while self.shipped < end:
                length = min(MAX_LOG_CHUNK, end - self.shipped)
                data = self.spool.read(self.shipped, length)
                if not data:
                    break
                self.ledger.append_log(self.session, self.shipped, data)
                self.shipped += len(data)

    def stop(self) -> None:
        """Stop the thread and ship what is left."""
        self._stop.set()
        self._thread.join(timeout=30)
        try:
            self.flush()
        except Exception as exc:
            log.error("could not ship the last output to the ledger: %s", exc)

    def _run(self) -> None:
        last_error = 0.0
        tick = time.monotonic()
        while True:
            tick = next_tick(tick, self.interval, time.monotonic())
            if self._stop.wait(max(0.0, tick - time.monotonic())):
                return
            try:
                self.flush()
            except Exception as exc:  # S3 trouble: keep spooling, retry next tick
                if time.monotonic() - last_error > 30:
                    last_error = time.monotonic()
                    log.warning("shipping output to the ledger failed, will retry: %s", exc)


def next_tick(previous: float, interval: float, now: float) -> float:
    """The next grid time after ``previous`` that is not in the past (ticks missed while an upload
    ran long are skipped, and the grid keeps its phase)."""
    tick = previous + interval
    if tick < now:
        tick += math.ceil((now - tick) / interval) * interval
    return tick
