"""What a region offers and which types meet the run's requirements, asked once per region and kept for an hour
in the process (a triggerer runs many capacity triggers: one DescribeInstanceTypeOfferings per region and type
list, not one per trigger or per round). Bounded; a failed look-up is not kept.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

TTL_SECONDS = 3600.0
MAX_ENTRIES = 64


class TimedCache:
    """key -> value for ``ttl`` seconds, at most ``size`` entries (the least recently used go first)."""

    def __init__(self, ttl: float = TTL_SECONDS, size: int = MAX_ENTRIES, clock: Callable[[], float] = time.monotonic):
        self.ttl, self.size, self.clock = ttl, size, clock
        self.entries: OrderedDict[Any, tuple[float, Any]] = OrderedDict()

    def get(self, key: Any) -> Any | None:
        found = self.entries.get(key)
        if found is None or found[0] <= self.clock():
            self.entries.pop(key, None)
            return None
        self.entries.move_to_end(key)
        return found[1]

    def put(self, key: Any, value: Any) -> None:
        self.entries[key] = (self.clock() + self.ttl, value)
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)

    async def get_or_load(self, key: Any, load: Callable[[], Awaitable[T]]) -> T:
        found = self.get(key)
        if found is not None:
            return found
        value = await load()
        self.put(key, value)
        return value


OFFERINGS = TimedCache()
REQUIREMENTS = TimedCache()

__all__ = ["OFFERINGS", "REQUIREMENTS", "TimedCache"]
