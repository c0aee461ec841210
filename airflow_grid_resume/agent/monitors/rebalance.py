"""The rebalance recommendation: ``events/recommendations/rebalance`` answers 404 until EC2 sees this instance
at elevated risk of interruption, then ``{"noticeTime": "...Z"}``.

An advisory, not a stop: it often comes long before an interruption, or with none at all, and stopping on it
would spend an interruption (and a relaunch) on a healthy instance. What it is worth is an early sync: less is
pending when a notice follows (the final-sync reserve is planned from what is pending), and less is lost if the
instance vanishes without one."""

from __future__ import annotations

import json

from airflow_grid_resume.agent.imds import REBALANCE, ImdsClient
from airflow_grid_resume.agent.monitors.events import ADVISORY, StopEvent
from airflow_grid_resume.agent.monitors.runner import MonitorSettings


def rebalance_event(body: bytes) -> StopEvent:
    try:
        notice_time = str(json.loads(body).get("noticeTime", ""))
    except (ValueError, AttributeError):
        notice_time = body.decode(errors="replace")[:64]
    detail = f"rebalance recommendation (noticeTime {notice_time or '?'}): syncing now, not stopping"
    return StopEvent(ADVISORY, "rebalance", detail=detail, key=notice_time)


class RebalanceMonitor:
    name = "events/recommendations/rebalance"

    def __init__(self, client: ImdsClient) -> None:
        self.client = client
        self._seen: str | None = None

    def poll(self, now: float) -> list[StopEvent]:
        body = self.client.get(REBALANCE)
        if body is None:
            return []
        event = rebalance_event(body)
        if event.key == self._seen:
            return []
        self._seen = event.key
        return [event]


def build(client: ImdsClient, settings: MonitorSettings) -> RebalanceMonitor:
    return RebalanceMonitor(client)
