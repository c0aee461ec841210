"""The progress protocol: a script says how far it got by printing a line, the agent keeps the latest.

A line ``grid-resume: progress DONE/TOTAL`` or ``grid-resume: progress DONE`` on stdout or stderr (integers;
DONE = steps completed in the whole run, so after a resume it continues from the checkpoint's step). Text
before the marker is allowed (a logging prefix), nothing but whitespace after it. The agent reports the
latest (and the session's first) in every heartbeat and the first and last DONE of the session in its
outcome; the steps an interruption of session k lost are ``last(k) - (first(k+1) - 1)``. A session lost
without an outcome leaves only its last heartbeat: its ``done`` is a lower bound of ``last(k)`` (the
heartbeat is up to one heartbeat interval old), so the loss computed from it is "at least" that many.

A line ``grid-resume: checkpoint`` (same rules) says the workdir now holds a complete checkpoint: the tracker
calls its ``on_checkpoint`` at once (agent/markers.py captures the files).

Stdlib only: this module ships inside the agent's zipapp.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

MARKER = "grid-resume: progress"
_LINE = re.compile(r"(?:^|(?<=[^A-Za-z0-9_-]))grid-resume: progress ([0-9]{1,18})(?:/([0-9]{1,18}))?\s*$")
# "The files in the workdir are now a complete checkpoint" (see agent/markers.py): same rules as a progress line.
CHECKPOINT_MARKER = "grid-resume: checkpoint"
_CHECKPOINT_LINE = re.compile(r"(?:^|(?<=[^A-Za-z0-9_-]))grid-resume: checkpoint\s*$")
# A progress line is short; of a longer unfinished line only its end can still hold one.
MAX_PENDING = 4096


@dataclass(frozen=True)
class Progress:
    done: int
    total: int | None = None


def parse_progress(line: str) -> Progress | None:
    """The progress a line reports, or None (also for a total below 1, which cannot be a step count)."""
    if MARKER not in line:
        return None
    match = _LINE.search(line.rstrip("\r\n"))
    if match is None:
        return None
    total = int(match.group(2)) if match.group(2) is not None else None
    if total is not None and total < 1:
        return None
    return Progress(int(match.group(1)), total)


def is_checkpoint_line(line: str) -> bool:
    """Whether a line is the checkpoint marker (a prefix allowed, nothing but whitespace after it)."""
    return CHECKPOINT_MARKER in line and _CHECKPOINT_LINE.search(line.rstrip("\r\n")) is not None


def format_progress(done: int, total: int | None = None) -> str:
    """The line a script prints (for Python scripts that import the package; others print it themselves)."""
    return f"{MARKER} {done}" if total is None else f"{MARKER} {done}/{total}"


class ProgressTracker:
    """Fed with the command's raw output bytes, per stream; keeps the first and latest progress seen.

    Lines end at ``\\n`` or ``\\r`` (tqdm-style updates rewrite one terminal line with ``\\r``), and a line
    may arrive in pieces. Thread-safe: the output tail feeds it while the heartbeat reads it.

    A checkpoint marker line calls ``on_checkpoint(written_by_ns)`` at once, in the feeding thread and
    outside the lock: ``written_by_ns`` is a time the line had been written by (the output file's mtime
    read after the bytes were), or None when unknown.
    """

    def __init__(self, on_checkpoint: Callable[[int | None], None] | None = None) -> None:
        self.on_checkpoint = on_checkpoint
        self.markers = 0
        self._lock = threading.Lock()
        self._pending: dict[object, bytes] = {}
        self.first: Progress | None = None
        self.latest: Progress | None = None
        self.total: int | None = None
        self.first_at: float | None = None  # epoch seconds the first and the latest progress line were read
        self.latest_at: float | None = None

    def feed(self, data: bytes, stream: object = 0, written_by_ns: int | None = None) -> None:
        if not data:
            return
        with self._lock:
            buffer = self._pending.get(stream, b"") + data
            *lines, rest = re.split(rb"[\r\n]", buffer)
            marked = sum(self._see(raw) for raw in lines)
            self._pending[stream] = rest[-MAX_PENDING:]
        self._marked(marked, written_by_ns)

    def close(self) -> None:
        """The output ended: an unfinished last line counts too."""
        with self._lock:
            marked = sum(self._see(raw) for raw in self._pending.values())
            self._pending.clear()
        self._marked(marked, None)

    def _marked(self, count: int, written_by_ns: int | None) -> None:
        """Several markers in one read are one capture: the files are what they are now."""
        if count:
            self.markers += count
            if self.on_checkpoint is not None:
                self.on_checkpoint(written_by_ns)

    def _see(self, raw: bytes) -> bool:
        """Take a progress line; True when the line is a checkpoint marker."""
        if CHECKPOINT_MARKER.encode() in raw:
            return is_checkpoint_line(raw[-MAX_PENDING:].decode("utf-8", errors="replace"))
        if MARKER.encode() not in raw:
            return False
        found = parse_progress(raw[-MAX_PENDING:].decode("utf-8", errors="replace"))
        if found is None:
            return False
        now = time.time()
        if self.first is None:
            self.first, self.first_at = found, now
        self.latest, self.latest_at = found, now
        if found.total is not None:
            self.total = found.total
        return False

    def heartbeat(self) -> dict | None:
        """``{"done": N, "total": T, "first": N1, "first_at": E1, "done_at": E2}`` for heartbeat.json
        (``first``: the session's first DONE, so steps lost are known even when the next session is lost
        too; ``first_at``/``done_at``: when they were read, epoch seconds, for the pace of a deadline= run),
        or None before any."""
        with self._lock:
            if self.latest is None or self.first is None:
                return None
            return {
                "done": self.latest.done,
                "total": self.total,
                "first": self.first.done,
                "first_at": self.first_at,
                "done_at": self.latest_at,
            }

    def outcome(self) -> dict | None:
        """``{"first": N1, "last": N2, "total": T, "first_at": E1, "last_at": E2}`` for outcome.json, or None
        if none was seen."""
        with self._lock:
            if self.first is None or self.latest is None:
                return None
            return {
                "first": self.first.done,
                "last": self.latest.done,
                "total": self.total,
                "first_at": self.first_at,
                "last_at": self.latest_at,
            }


def steps_lost(last_before: int | None, first_after: int | None) -> int | None:
    """Steps an interruption lost: done at the end of one session minus what the next one resumed from.

    The next session's first line reports the step it completed first, so it resumed from ``first - 1``.
    None when either side reported no progress.
    """
    if last_before is None or first_after is None:
        return None
    return max(0, last_before - (first_after - 1))
