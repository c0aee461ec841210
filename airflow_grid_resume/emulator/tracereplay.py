"""A spot availability trace replayed as one pool's capacity and interruptions, time-compressed.

The traces are those ``grid-resume simulate`` reads (the public "Can't Be Late" format: one number per tick of
``gap_seconds``, spot available while it is above 0). The local spot cloud plays tick ``start`` of the trace at the
moment the route was called and each later tick ``tick_seconds`` real seconds after the one before (a 10-minute
tick in 2 s is a compression of 300): while the tick's value is 0, a spot RunInstances of that (type, zone) answers
InsufficientInstanceCapacity, and at the start of each tick whose value is 0, every spot instance running there
gets an interruption notice, as in the simulation's model (section 3.1 of the paper: preempted at the start of
the first 0 tick). After the trace's last tick its last value holds.

Pure: the caller (``emulator/cloud.py``) gives the clock and carries out the interruptions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class TraceReplay:
    """One pool's trace, from tick ``start`` at ``started_at`` (epoch seconds), ``tick_seconds`` per tick."""

    instance_type: str
    zone: str
    data: tuple[float, ...]
    tick_seconds: float
    started_at: float
    start: int = 0

    @classmethod
    def from_doc(cls, doc: dict, now: float) -> TraceReplay:
        data = doc.get("data")
        if not isinstance(data, list) or not data or not all(isinstance(v, (int, float)) for v in data):
            raise ValueError("data must be a non-empty list of numbers (the trace's ticks; above 0: spot available)")
        tick = float(doc.get("tick_seconds") or 0)
        if tick <= 0:
            raise ValueError(f"tick_seconds must be positive (real seconds per trace tick), got {tick}")
        start = int(doc.get("start") or 0)
        if not 0 <= start < len(data):
            raise ValueError(f"start {start} is outside the trace (ticks 0 to {len(data) - 1})")
        return cls(
            instance_type=str(doc.get("instance_type") or "*"),
            zone=str(doc.get("zone") or "*"),
            data=tuple(float(v) for v in data),
            tick_seconds=tick,
            started_at=now,
            start=start,
        )

    def matches(self, instance_type: str, zone: str) -> bool:
        return self.instance_type in ("*", instance_type) and self.zone in ("*", zone)

    def tick(self, now: float) -> int:
        """The trace's tick at ``now`` (its last one once it has ended)."""
        elapsed = max(0.0, now - self.started_at)
        return min(len(self.data) - 1, self.start + int(elapsed // self.tick_seconds))

    def available(self, now: float) -> bool:
        return self.data[self.tick(now)] > 0

    def zero_ticks(self) -> list[float]:
        """Seconds from ``started_at`` to the start of each tick whose value is 0 and the one before was not
        (or the first tick played): spot instances running there then get their notice."""
        out = []
        for k in range(self.start, len(self.data)):
            if self.data[k] <= 0 and (k == self.start or self.data[k - 1] > 0):
                out.append((k - self.start) * self.tick_seconds)
        return out

    def describe(self, now: float) -> dict:
        return {
            "instance_type": self.instance_type,
            "zone": self.zone,
            "ticks": len(self.data),
            "start": self.start,
            "tick_seconds": self.tick_seconds,
            "tick": self.tick(now),
            "available": self.available(now),
        }


def replays_allow(replays: Sequence[TraceReplay], instance_type: str, zone: str, now: float) -> bool:
    """Whether every trace replayed for this (type, zone) has spot now."""
    return all(r.available(now) for r in replays if r.matches(instance_type, zone))
