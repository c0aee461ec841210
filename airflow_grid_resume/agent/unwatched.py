"""Stop a session that no Airflow trigger watches any more, so no instance runs unattended.

A user who marks a deferred task failed while its trigger is not running (not yet picked up by a
triggerer, or the triggerer is down) removes the trigger without its ``on_kill``: nothing on the
Airflow side will ever terminate the instance. The run trigger proves it is there by rewriting
``sessions/N/watch.json`` at least every minute; the agent watches that object's ETag with its own
monotonic clock (no clock skew between hosts) and stops the session like an interruption when it
has not changed for ``timeout`` seconds. The checkpoint is saved, so a later try resumes.
"""

from __future__ import annotations


class UnwatchedGuard:
    """Pure bookkeeping: when to look at ``watch.json`` next, and whether it is too old."""

    def __init__(self, timeout: float, now: float) -> None:
        self.timeout = timeout
        self.since = now  # the session start counts as the last sign of a watcher
        self.tag: str | None = None
        self.next_check = now

    @property
    def enabled(self) -> bool:
        return self.timeout > 0

    def due(self, now: float) -> bool:
        return self.enabled and now >= self.next_check

    def observe(self, tag: str | None, now: float) -> bool:
        """Record the ETag seen now (None: no watch.json); True once nobody has watched for too long."""
        self.next_check = now + min(60.0, self.timeout / 4)
        if tag is not None and tag != self.tag:
            self.tag, self.since = tag, now
        return now - self.since > self.timeout

    def silent_for(self, now: float) -> float:
        return now - self.since
