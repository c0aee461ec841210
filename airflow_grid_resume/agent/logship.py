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
from typing import Protocol

from airflow_grid_resume.ledger.store import MAX_LOG_CHUNK, RunLedger

log = logging.getLogger(__name__)


# Output is shipped every 3 s while it flows: each upload is one S3 PUT on the run's bill and one
# GET (about 1 ms of CPU) for the watching trigger, and a line still reaches the task log within
# about 3.5 s (docs/benchmarks.md: what a run costs, run watches).
DEFAULT_LOG_INTERVAL = 3.0
# With a live-output queue (ledger/live.py): a message every 4 s while output flows (the watch's long poll
# hands it to the task log at once, so a line still arrives within about 4 s), and an S3 chunk a minute,
# the durable record. Per run-hour that is 900 SQS messages and 60 PUTs instead of 1,200 PUTs
# (docs/benchmarks.md: what a run costs).
DEFAULT_LIVE_INTERVAL = 4.0
DEFAULT_DURABLE_INTERVAL = 60.0


class LiveChannel(Protocol):
    """What the shipper and the supervisor need of the live-output sender (``livesend.LiveSender``)."""

    sent_at: float  # monotonic time of the last message that SQS accepted

    def up(self) -> bool: ...

    def ship(self) -> bool: ...

    def beat(self, *, final: bool = False) -> bool: ...


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
        # backslashreplace: a file name's non-UTF-8 bytes (surrogate escapes) show as \udcXX, never drop the line
        self.append(prefix + line.rstrip("\n").encode("utf-8", "backslashreplace") + b"\n")

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
    (watch/cadence.py): one GET per chunk instead of a poll that mostly misses.

    With a ``live`` sender whose queue works, new output goes out as a message every
    ``live_interval`` and to S3 only every ``durable_interval``; while the queue is refused, S3
    gets it every ``interval`` as without one."""

    def __init__(
        self,
        ledger: RunLedger,
        session: int,
        spool: LogSpool,
        *,
        interval: float = 1.0,
        live: LiveChannel | None = None,
        live_interval: float = DEFAULT_LIVE_INTERVAL,
        durable_interval: float = DEFAULT_DURABLE_INTERVAL,
    ) -> None:
        self.ledger = ledger
        self.session = session
        self.spool = spool
        self.interval = interval
        self.live = live
        self.live_interval = live_interval
        self.durable_interval = max(durable_interval, interval)
        self.shipped = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="grid-logship", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def live_up(self) -> bool:
        return self.live is not None and self.live.up()

    @property
    def log_interval(self) -> float:
        """How often output lands in S3 now (the heartbeat tells the watch, which reads at that pace)."""
        return self.durable_interval if self.live_up() else self.interval

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

    def ended(self) -> None:
        """The outcome is written: tell the live watch at once (best effort; it also looks by itself)."""
        if self.live_up():
            assert self.live is not None
            self.live.beat(final=True)

    def _run(self) -> None:
        last_error = 0.0
        tick = durable_at = time.monotonic()
        while True:
            live = self.live_up()
            tick = next_tick(tick, self.live_interval if live else self.interval, time.monotonic())
            if self._stop.wait(max(0.0, tick - time.monotonic())):
                return
            try:
                if live and self.live is not None:
                    self.live.ship()
                if not live or tick - durable_at >= self.durable_interval - 1e-6:
                    durable_at = tick
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
