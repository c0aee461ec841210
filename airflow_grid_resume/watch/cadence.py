"""When a run watch reads the next chunk of output: once per chunk, just after it lands.

The agent ships output on a fixed grid of ``period`` seconds of its own monotonic clock (on the
ticks that have new output), so chunks land in S3 at a steady phase of the watcher's clock too.
Every read is a request: about 1 ms of triggerer CPU, and a GET on the S3 bill. A fixed poll pays
for the reads that miss and adds up to a poll of latency. This schedule learns the phase from its
own reads (a hit: the chunk had landed; a miss: not yet), halving the window in which chunks land
with each chunk, then reads once per chunk just after the window. A run that goes quiet is read
less and less often, back to every tick as soon as a chunk shows up.

Pure: times are the watcher's monotonic clock, passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_EPSILON = 1e-6  # of a period: reads land exactly on window edges by construction


@dataclass
class ChunkSchedule:
    """Read times for one watch. Call :meth:`hit` or :meth:`miss` after each read."""

    period: float  # the agent's upload interval
    poll: float  # reads while the phase is not known yet
    started: float  # when the watch started
    quiet_after: float = 60.0  # no chunk for this long: the run is quiet
    quiet_poll: float = 10.0  # reads while quiet
    settle: float = 0.3  # a landing window this narrow is read once, just after its end
    margin: float = 0.15  # read this long after the window ends
    retry: float = 0.6  # look once more this long after a miss at a window's end, while output flows
    # Chunks land in (lo + k * period, hi + k * period] for some integer k.
    lo: float | None = None
    hi: float | None = None
    last_read: float | None = None
    last_hit: float | None = None
    last_miss: float | None = None  # the latest read that found nothing, since the last hit
    retry_due: bool = False  # one more look after a miss at a window's end (a late chunk?)
    reprobe_every: int = 20  # hits; then the window is widened a little, in case chunks now land earlier
    hits: int = 0

    def set_period(self, period: float) -> None:
        """The agent said its upload interval (its heartbeat carries it): relearn the phase if it changed."""
        if period > 0 and not math.isclose(period, self.period):
            self.period, self.lo, self.hi = period, None, None

    # -- what the reads found -------------------------------------------------------------------
    def hit(self, now: float, started: float | None = None) -> None:
        """A read that started at ``started`` (default: now) found a new chunk: it landed after the last
        miss and by ``now``, when the answer came.

        Only a hit moves the window: a miss may be a tick without output, which says nothing about
        when the ticks with output land. Now and then the window is widened towards earlier times:
        a late chunk can leave it later than the ticks really land."""
        aimed = self._aimed_window(now if started is None else started)
        lo = self.last_miss
        if lo is None and aimed is not None:
            lo = aimed[0]
        elif lo is None:
            lo = self.last_read if self.last_read is not None else now - self.period
        hi = now
        if aimed is not None and max(lo, aimed[0]) < min(hi, aimed[1]):
            lo, hi = max(lo, aimed[0]), min(hi, aimed[1])
        self.hits += 1
        if self.hits % self.reprobe_every == 0:
            lo = min(lo, hi - 2 * self.settle)
        # Narrower than a period by the margin and the retry, so that reads after a window are about it.
        widest = max(self.period - self.margin - self.retry, self.period / 2)
        self.lo, self.hi = min(max(lo, hi - widest), hi), hi
        self.last_read = self.last_hit = now
        self.last_miss = None
        self.retry_due = False

    def miss(self, now: float) -> None:
        """A read found nothing new."""
        aimed = self._aimed_window(now)
        if self.retry_due:
            self.retry_due = False  # that was the one more look
        elif aimed is not None and now >= aimed[1]:
            self.retry_due = self._flowing(now)  # a late chunk, or a tick without output
        self.last_read = self.last_miss = now

    # -- when to read next ----------------------------------------------------------------------
    def next_read(self) -> float:
        """The watcher's monotonic time of the next read."""
        if self.last_read is None:
            return self.started
        last = self.last_read
        quiet = last - (self.started if self.last_hit is None else self.last_hit) >= self.quiet_after
        if self.lo is None or self.hi is None:
            return last + (self.quiet_poll if quiet else self.poll)
        if self.retry_due:
            return last + self.retry
        current = self._aimed_window(last)
        assert current is not None
        if self.last_miss == last and current[0] < last < current[1]:
            return current[1] + self.margin  # missed inside this window: look again at its end
        if self.last_hit == last:  # the window after the one just read
            k = math.ceil((last - self.lo) / self.period - _EPSILON)
        else:  # the next window to end after the miss
            k = math.floor((last - self.hi - self.margin) / self.period + _EPSILON) + 1
        lo, hi = self.lo + k * self.period, self.hi + k * self.period
        if quiet:
            # Still on the grid (chunks land just before hi + k * period), but only every few ticks.
            return hi + self.margin + (max(1, round(self.quiet_poll / self.period)) - 1) * self.period
        if hi - lo > self.settle:
            return (lo + hi) / 2
        return hi + self.margin

    # -- helpers --------------------------------------------------------------------------------
    def _flowing(self, now: float) -> bool:
        return self.last_hit is not None and now - self.last_hit <= 1.5 * self.period  # the tick before had a chunk

    def _aimed_window(self, now: float) -> tuple[float, float] | None:
        """The landing window a read at ``now`` looked into: the last one that started by then (a read
        after a window's end, however late the event loop woke it, is about that window's chunk)."""
        if self.lo is None or self.hi is None:
            return None
        k = math.floor((now - self.lo) / self.period + _EPSILON)
        return self.lo + k * self.period, self.hi + k * self.period
