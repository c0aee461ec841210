"""EC2 scheduled events: ``events/maintenance/scheduled`` lists the maintenance AWS scheduled for this
instance, ``[{"Code", "Description", "EventId", "NotBefore", "NotAfter", "State"}]`` with times like
``21 Jan 2019 09:00:43 GMT`` (an empty list when there are none).

``instance-stop``, ``instance-retirement``, ``instance-reboot`` and ``system-reboot`` end the session: a stop
or a retirement takes the instance away, and a reboot kills the agent and the command without an outcome (user
data does not run again after a reboot, so nothing resumes there; the Airflow side would call the session lost
and the work since the last checkpoint would be gone). Each is handled as a spot notice whose reclaim time is
``NotBefore``, the earliest moment EC2 may act, seen ``lead`` seconds ahead (the notice window, 120 s): the
command gets the SIGTERM-to-deadline budget a spot notice gives, the final sync is planned the same way, and the
session ends ``interrupted`` with its checkpoint. Not earlier: AWS posts these events days ahead, and stopping
at first sight would give up days of a healthy instance. Until then the event is an advisory (one early sync).
``system-maintenance`` (network or power work that may briefly affect the instance) and codes unknown here are
advisories only. ``completed`` and ``canceled`` events are ignored; a stop planned for an event canceled before
its time never fires.

``NotBefore`` is AWS's time, so it is compared with the metadata service's clock (the ``Date`` of its answers),
not the instance's own: an instance whose clock is off would otherwise stop far too early, or only after EC2
acted. The stop's reclaim time is then given on the instance's clock, as the supervisor plans with it.
"""

from __future__ import annotations

import json
import logging
from calendar import timegm
from dataclasses import dataclass
from time import strptime

from airflow_grid_resume.agent.imds import ImdsClient
from airflow_grid_resume.agent.monitors.events import ADVISORY, STOP, StopEvent, iso
from airflow_grid_resume.agent.monitors.runner import MonitorSettings

log = logging.getLogger(__name__)

SCHEDULED = "/latest/meta-data/events/maintenance/scheduled"
TIME_FORMAT = "%d %b %Y %H:%M:%S GMT"
# Event code -> what happens to the instance; the codes that end a session.
STOPPING = {
    "instance-stop": "stop",
    "instance-retirement": "terminate",
    "instance-reboot": "reboot",
    "system-reboot": "reboot",
}
ENDED = ("completed", "canceled")


@dataclass(frozen=True)
class ScheduledEvent:
    event_id: str
    code: str
    state: str
    not_before: float  # epoch seconds
    description: str = ""


def parse_event_time(value: object) -> float:
    if not isinstance(value, str):
        raise ValueError(f"missing time in a scheduled event: {value!r}")
    return float(timegm(strptime(value.strip(), TIME_FORMAT)))


def parse_scheduled_events(body: bytes) -> list[ScheduledEvent]:
    """The events of a scheduled-events document; ValueError if it is not one."""
    doc = json.loads(body) if body.strip() else []
    if not isinstance(doc, list) or not all(isinstance(e, dict) for e in doc):
        raise ValueError(f"unexpected scheduled-events document: {body[:200]!r}")
    return [
        ScheduledEvent(
            event_id=str(e.get("EventId") or f"{e.get('Code')}@{e.get('NotBefore')}"),
            code=str(e.get("Code") or "?"),
            state=str(e.get("State") or "active"),
            not_before=parse_event_time(e.get("NotBefore")),
            description=str(e.get("Description") or ""),
        )
        for e in doc
    ]


SKEW_TOLERANCE = 2.0  # a smaller offset from the metadata service's clock is the Date header's resolution


def scheduled_decisions(
    events: list[ScheduledEvent], now: float, lead: float, clock_offset: float | None = None
) -> list[StopEvent]:
    """What each event means at ``now`` (the instance's clock, which is ``clock_offset`` seconds behind the
    metadata service's, if known): a stop once its ``NotBefore`` is ``lead`` seconds away or nearer (or past),
    with its reclaim time on the instance's clock; an advisory before that or for a code that does not end the
    session; nothing for a completed or canceled one. Keys are per event and meaning, so a monitor reports each
    once."""
    offset = clock_offset if clock_offset is not None and abs(clock_offset) >= SKEW_TOLERANCE else 0.0
    out = []
    for event in events:
        if event.state in ENDED:
            continue
        what = f"EC2 scheduled {event.code} at {iso(event.not_before)}"
        if event.description:
            what += f" ({event.description})"
        action = STOPPING.get(event.code)
        if action is None:
            detail = f"{what}: not a stop; syncing now"
            out.append(
                StopEvent(ADVISORY, "scheduled", "none", event.not_before - offset, detail, f"{event.event_id}:seen")
            )
        elif now + offset >= event.not_before - lead:
            reclaim = event.not_before - offset
            out.append(StopEvent(STOP, "scheduled", action, reclaim, what, f"{event.event_id}:stop"))
        else:
            detail = f"{what}: syncing now; the session stops {lead:.0f} s before it"
            out.append(
                StopEvent(ADVISORY, "scheduled", action, event.not_before - offset, detail, f"{event.event_id}:seen")
            )
    return out


class ScheduledEventMonitor:
    name = "events/maintenance/scheduled"

    def __init__(self, client: ImdsClient, lead: float) -> None:
        self.client = client
        self.lead = lead
        self._seen: set[str] = set()

    def poll(self, now: float) -> list[StopEvent]:
        body = self.client.get(SCHEDULED)
        if body is None:
            return []
        try:
            events = parse_scheduled_events(body)
        except ValueError as exc:
            log.warning("ignoring a malformed scheduled-events document: %s", exc)
            return []
        decisions = scheduled_decisions(events, now, self.lead, getattr(self.client, "clock_offset", None))
        fresh = [e for e in decisions if e.key not in self._seen]
        self._seen.update(e.key for e in fresh)
        return fresh


def build(client: ImdsClient, settings: MonitorSettings) -> ScheduledEventMonitor:
    return ScheduledEventMonitor(client, lead=settings.notice_window)
