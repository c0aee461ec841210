"""One RunInstances budget per process: triggers in one triggerer share EC2's token bucket.

EC2 limits RunInstances per account and region (burst 5, refill 2 per second). A capacity drought
puts hundreds of waits in one event loop; each pacing itself would still burst together. This
module holds the one deliberate process-wide object of the package: a registry of async token
buckets, per event loop and per (connection, region).
"""

from __future__ import annotations

import asyncio
import time
import weakref

DEFAULT_BURST = 4.0  # under EC2's 5, leaving room for other callers in the account
DEFAULT_RATE = 1.8  # per second, under EC2's 2


class AsyncTokenBucket:
    """Waiters are served in arrival order; each ``acquire`` takes one token."""

    def __init__(self, burst: float = DEFAULT_BURST, rate: float = DEFAULT_RATE) -> None:
        self.burst, self.rate = burst, rate
        self.tokens = burst
        self.updated = time.monotonic()
        self._lock = asyncio.Lock()
        self.granted = 0

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    async def acquire(self) -> None:
        async with self._lock:  # FIFO: asyncio.Lock wakes waiters in order
            self._refill()
            if self.tokens < 1:
                await asyncio.sleep((1 - self.tokens) / self.rate)
                self._refill()
            self.tokens -= 1
            self.granted += 1


_BUCKETS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, AsyncTokenBucket]] = (
    weakref.WeakKeyDictionary()
)


def launch_bucket(aws_conn_id: str | None, region: str | None) -> AsyncTokenBucket:
    """The RunInstances bucket shared by every trigger of this event loop for one account and region."""
    loop = asyncio.get_running_loop()
    buckets = _BUCKETS.setdefault(loop, {})
    key = (aws_conn_id, region)
    if key not in buckets:
        buckets[key] = AsyncTokenBucket()
    return buckets[key]
