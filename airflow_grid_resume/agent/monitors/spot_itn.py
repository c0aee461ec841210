"""The spot interruption notice: ``spot/instance-action`` answers 404 until EC2 marks the instance, then
``{"action": "terminate"|"stop"|"hibernate", "time": "...Z"}`` about two minutes before the reclaim."""

from __future__ import annotations

import logging

from airflow_grid_resume.agent.imds import INSTANCE_ACTION, ImdsClient, parse_instance_action
from airflow_grid_resume.agent.monitors.events import STOP, StopEvent
from airflow_grid_resume.agent.monitors.runner import MonitorSettings

log = logging.getLogger(__name__)


def notice_event(body: bytes) -> StopEvent:
    """The stop a notice document announces; ValueError if it is malformed."""
    action, when = parse_instance_action(body)
    return StopEvent(STOP, "imds", action, when, "spot interruption notice", f"{action}@{when}")


class SpotInterruptionMonitor:
    name = "spot/instance-action"

    def __init__(self, client: ImdsClient) -> None:
        self.client = client
        self._seen: set[str] = set()

    def poll(self, now: float) -> list[StopEvent]:
        body = self.client.get(INSTANCE_ACTION)
        if body is None:
            return []
        try:
            event = notice_event(body)
        except ValueError as exc:  # never read garbage as a notice
            log.warning("ignoring a malformed interruption notice: %s", exc)
            return []
        if event.key in self._seen:
            return []
        self._seen.add(event.key)
        return [event]


def build(client: ImdsClient, settings: MonitorSettings) -> SpotInterruptionMonitor:
    return SpotInterruptionMonitor(client)
