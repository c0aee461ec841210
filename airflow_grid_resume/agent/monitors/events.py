"""What can end or endanger a session, as typed events, and how the supervisor reacts to them (pure).

Every source produces the same ``StopEvent``: the metadata-service monitors of this package (spot
interruption notice, EC2 scheduled events, rebalance recommendation) and the supervisor's own sources
(a signal to the agent, nobody watching the session, the lease taken by another agent). ``react``
decides what one more event means given the stop already under way, if any.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Protocol

STOP = "stop"  # checkpoint and exit before ``reclaim_at``
ADVISORY = "advisory"  # keep running; sync now, so less is pending if a stop follows

# What ``react`` answers.
START_STOP = "stop"  # the first stop: SIGTERM to the command, plan the deadline
SYNC = "sync"  # an advisory while running: an early background sync
KILL = "kill"  # a second stop signal: SIGKILL the command now
TIGHTEN = "tighten"  # another stop while stopping: keep the earlier of the two deadlines
IGNORE = "ignore"


@dataclass(frozen=True)
class StopEvent:
    """One event from one source. ``reclaim_at`` is when the instance goes (epoch seconds on the instance's
    clock), None when the source does not say (a signal); ``key`` tells a monitor's repeats apart."""

    kind: str  # STOP or ADVISORY
    source: str  # "imds" (spot notice), "scheduled", "rebalance", "signal", "unwatched", "lease", "planned"
    action: str = "terminate"  # what happens to the instance: terminate, stop, hibernate, reboot
    reclaim_at: float | None = None
    detail: str = ""
    key: str = ""

    @property
    def stops(self) -> bool:
        return self.kind == STOP

    def with_reclaim(self, now: float, fallback_seconds: float) -> StopEvent:
        """The event with a reclaim time: its own, or ``fallback_seconds`` from ``now``."""
        if self.reclaim_at is not None:
            return self
        return replace(self, reclaim_at=now + fallback_seconds)

    def as_dict(self) -> dict:
        """As the outcome and the heartbeat record it (the Airflow side reads ``source``)."""
        doc = {"action": self.action, "time": iso(self.reclaim_at) if self.reclaim_at else None, "source": self.source}
        if self.detail:
            doc["detail"] = self.detail
        return doc


class Monitor(Protocol):
    """A polled source of events (one metadata path, typically). ``poll`` reports each event once and raises
    ``ImdsUnavailable`` (retried next poll) or ``ImdsDisabled`` (the monitor is dropped)."""

    name: str

    def poll(self, now: float) -> list[StopEvent]: ...


def react(event: StopEvent, stopping: StopEvent | None) -> str:
    """What ``event`` means while ``stopping`` (the stop under way, None if none) goes on."""
    if not event.stops:
        return IGNORE if stopping is not None else SYNC
    if stopping is None:
        return START_STOP
    if event.source == "signal" and stopping.source == "signal":
        return KILL  # the operator (or the OS) insists
    return TIGHTEN


def signal_event(name: str) -> StopEvent:
    return StopEvent(STOP, "signal", detail=f"the agent received {name}")


def unwatched_event(silent_for: float) -> StopEvent:
    return StopEvent(STOP, "unwatched", detail=f"no Airflow trigger has watched this session for {silent_for:.0f} s")


def planned_stop_event(watch_body: bytes) -> StopEvent | None:
    """The planned stop the Airflow side asks for in ``watch.json`` (``"stop": {"reason": ...}``): a deadline=
    run leaving on-demand to go back to spot. Saved and synced like a notice; None when none is asked."""
    try:
        doc = json.loads(watch_body)
    except (ValueError, UnicodeDecodeError):
        return None
    stop = doc.get("stop") if isinstance(doc, dict) else None
    if not isinstance(stop, dict):
        return None
    reason = str(stop.get("reason") or "the deadline policy goes back to spot")
    return StopEvent(STOP, "planned", detail=f"planned stop asked by the Airflow side: {reason}", key="planned")


def lease_lost_event() -> StopEvent:
    return StopEvent(STOP, "lease", detail="the run's lease was taken by another agent")


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
