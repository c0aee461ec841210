"""Is a session's instance alive, gone, or unknown? One judgement, pure, on the watcher's own clock.

Nothing here compares two hosts' wall clocks: the agent's heartbeat counts as alive while its
content changes (its ``seq`` and ``time``), timed on the watcher's monotonic clock, and "dead" needs the
same heartbeat observed unchanged for longer than ``heartbeat_timeout`` by reads that succeeded.
"Gone" needs positive evidence from EC2: a state of shutting-down/terminated (or stopped), or the
instance not listed for longer than EC2's consistency window. A failed read or describe is no
evidence at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from airflow_grid_resume.ledger.records import Heartbeat

GONE_STATES = ("shutting-down", "terminated", "stopping", "stopped")

ALIVE = "alive"
BOOTING = "booting"
SILENT = "silent"  # the agent's heartbeat stopped while the instance runs: dead or hung agent
GONE = "gone"
NO_AGENT = "no-agent"  # no heartbeat ever, long after launch: the agent never started


@dataclass
class Verdict:
    kind: str
    reason: str = ""
    state: str = ""  # EC2's state (or reason code) when gone


class Liveness:
    """Evidence about one session, fed by the watch, judged by :meth:`verdict`.

    ``now`` is always the watcher's monotonic clock; ``launched_ago`` is how long ago (by the Airflow
    side's own clocks) the instance was launched when the watch started.
    """

    def __init__(
        self,
        *,
        now: float,
        launched_ago: float,
        heartbeat_timeout: float,
        boot_timeout: float,
        not_found_grace: float,
    ) -> None:
        self.started = now
        self.launched_ago = max(0.0, launched_ago)
        self.heartbeat_timeout = heartbeat_timeout
        self.boot_timeout = boot_timeout
        self.not_found_grace = not_found_grace
        self.beat_tag: object = None
        self.beat_changed: float | None = None  # when the heartbeat last changed (or was first seen)
        self.beat_read: float | None = None  # when the heartbeat was last read successfully
        self.output_read: float | None = None  # when new output was last read
        self.not_found_since: float | None = None
        self.gone_state: str | None = None
        self.gone_reason: str = ""

    def since_launch(self, now: float) -> float:
        return self.launched_ago + (now - self.started)

    # -- evidence ---------------------------------------------------------------------------------
    def heartbeat(self, beat: Heartbeat | None, now: float) -> None:
        """A successful read of the heartbeat, None if there is none yet. A new ``seq`` or ``time`` is a
        new beat (the agent's clock is never compared with ours)."""
        self.beat_read = now
        if beat is None:
            return
        tag = (beat.seq, beat.time)
        if self.beat_changed is None or tag != self.beat_tag:
            self.beat_tag, self.beat_changed = tag, now

    def instance(self, found: dict | None, now: float) -> None:
        """A DescribeInstances answer: the instance, or None when EC2 did not list it."""
        if found is None:
            if self.not_found_since is None:
                self.not_found_since = now
            return
        self.not_found_since = None
        state = str(found.get("State", {}).get("Name", ""))
        if state in GONE_STATES:
            self.gone_state = state
            self.gone_reason = str(found.get("StateReason", {}).get("Code") or state)
        else:
            self.gone_state = None

    # -- judgement --------------------------------------------------------------------------------
    def output(self, now: float) -> None:
        """New output from the agent was read: it is alive now, whatever its heartbeat says."""
        self.beat_changed = now
        self.output_read = now

    def heartbeat_due(self, now: float) -> bool:
        """Read the heartbeat a few times per timeout: enough to see it change, cheap enough."""
        return now >= self.next_heartbeat_read()

    def next_heartbeat_read(self) -> float:
        """Once a heartbeat has been seen, output read since counts as one: while output flows the
        heartbeat can only say "alive" again, and a read of it is one call of a triggerer's budget."""
        if self.beat_read is None:
            return self.started
        last = self.beat_read if self.beat_tag is None else max(self.beat_read, self.output_read or 0.0)
        return last + self.heartbeat_timeout / 3

    def verdict(self, now: float) -> Verdict:
        if self.gone_state is not None:
            return Verdict(GONE, f"the instance is {self.gone_state} ({self.gone_reason})", self.gone_reason)
        if self.not_found_since is not None:
            missing = now - self.not_found_since
            # Unknown to EC2 for longer than its consistency window, and not just launched: it is gone
            # (EC2 lists a terminated instance for about an hour).
            if missing > self.not_found_grace and self.since_launch(now) > self.not_found_grace:
                return Verdict(GONE, f"EC2 has not listed the instance for {missing:.0f} s", "not-found")
        if self.beat_changed is None:
            if self.since_launch(now) > self.boot_timeout and self.beat_read is not None:
                reason = f"no heartbeat {self.boot_timeout:.0f} s after launch: the agent never started"
                return Verdict(NO_AGENT, reason)
            return Verdict(BOOTING)
        # Only what was observed counts: the same heartbeat seen over more than the timeout.
        unchanged = (self.beat_read or now) - self.beat_changed
        if unchanged > self.heartbeat_timeout:
            return Verdict(SILENT, f"the agent's heartbeat has not changed for {unchanged:.0f} s")
        return Verdict(ALIVE)
