"""The agent's stop sources: typed events, one monitor per source, and the decisions on them (no servers)."""

from __future__ import annotations

import subprocess
import sys
from calendar import timegm
from pathlib import Path

import pytest

from airflow_grid_resume.agent.bundle import build_zipapp
from airflow_grid_resume.agent.imds import ImdsDisabled, ImdsUnavailable, server_clock_offset
from airflow_grid_resume.agent.monitors import MonitorSettings, discover
from airflow_grid_resume.agent.monitors.events import (
    ADVISORY,
    IGNORE,
    KILL,
    START_STOP,
    STOP,
    SYNC,
    TIGHTEN,
    StopEvent,
    lease_lost_event,
    react,
    signal_event,
    unwatched_event,
)
from airflow_grid_resume.agent.monitors.rebalance import RebalanceMonitor, rebalance_event
from airflow_grid_resume.agent.monitors.runner import MonitorRunner
from airflow_grid_resume.agent.monitors.scheduled import (
    SCHEDULED,
    ScheduledEventMonitor,
    parse_event_time,
    parse_scheduled_events,
    scheduled_decisions,
)
from airflow_grid_resume.agent.monitors.spot_itn import SpotInterruptionMonitor, notice_event

# The example in EC2's user guide ("Scheduled events for your instances", instance metadata).
AWS_EXAMPLE = b"""[
  {
    "NotBefore" : "21 Jan 2019 09:00:43 GMT",
    "Code" : "system-reboot",
    "Description" : "scheduled reboot",
    "EventId" : "instance-event-0d59937288b749b32",
    "NotAfter" : "21 Jan 2019 09:17:23 GMT",
    "State" : "active"
  }
]"""
NOT_BEFORE = timegm((2019, 1, 21, 9, 0, 43, 0, 0, 0))


class FakeClient:
    """What a monitor asks the metadata service, answered from a dict (None: 404)."""

    def __init__(self, answers: dict[str, bytes | Exception | None]) -> None:
        self.answers = answers

    def get(self, path: str) -> bytes | None:
        answer = self.answers.get(path)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_scheduled_event_document_and_times() -> None:
    (event,) = parse_scheduled_events(AWS_EXAMPLE)
    assert (event.event_id, event.code, event.state) == ("instance-event-0d59937288b749b32", "system-reboot", "active")
    assert event.not_before == NOT_BEFORE
    assert parse_event_time("2 Jan 2006 15:04:05 GMT") == timegm((2006, 1, 2, 15, 4, 5, 0, 0, 0))
    assert parse_scheduled_events(b"[]") == [] and parse_scheduled_events(b"") == []
    for bad in (b"{}", b"not json", b'[{"Code": "system-reboot", "NotBefore": "tomorrow"}]', b"[1]"):
        with pytest.raises(ValueError):
            parse_scheduled_events(bad)


def test_scheduled_events_stop_a_window_before_not_before() -> None:
    events = parse_scheduled_events(AWS_EXAMPLE)
    # Days ahead: an advisory (one early sync), the session goes on.
    (early,) = scheduled_decisions(events, NOT_BEFORE - 86400, lead=120)
    assert early.kind == ADVISORY and early.source == "scheduled" and early.action == "reboot"
    assert "stops 120 s before it" in early.detail
    # Within the window: a stop whose reclaim time is NotBefore, like a spot notice.
    (stop,) = scheduled_decisions(events, NOT_BEFORE - 119, lead=120)
    assert (stop.kind, stop.action, stop.reclaim_at) == (STOP, "reboot", NOT_BEFORE)
    assert stop.key != early.key
    # Late (already in the event's window): a stop at once, planned from the past NotBefore (warned as late).
    (late,) = scheduled_decisions(events, NOT_BEFORE + 60, lead=120)
    assert late.kind == STOP and late.reclaim_at == NOT_BEFORE
    actions = {}
    for code in ("instance-stop", "instance-retirement", "instance-reboot", "system-reboot", "system-maintenance", "x"):
        doc = AWS_EXAMPLE.replace(b"system-reboot", code.encode())
        (decision,) = scheduled_decisions(parse_scheduled_events(doc), NOT_BEFORE, lead=120)
        actions[code] = (decision.kind, decision.action)
    assert actions == {
        "instance-stop": (STOP, "stop"),
        "instance-retirement": (STOP, "terminate"),
        "instance-reboot": (STOP, "reboot"),
        "system-reboot": (STOP, "reboot"),
        "system-maintenance": (ADVISORY, "none"),  # network or power work: not a stop
        "x": (ADVISORY, "none"),  # unknown codes never stop a session
    }
    for state in (b"canceled", b"completed"):
        assert scheduled_decisions(parse_scheduled_events(AWS_EXAMPLE.replace(b"active", state)), NOT_BEFORE, 120) == []


def test_scheduled_events_are_judged_on_the_metadata_services_clock() -> None:
    events = parse_scheduled_events(AWS_EXAMPLE)
    # The instance's clock is 400 s behind AWS's (the metadata service's Date says so): the stop comes on time,
    # and its reclaim time is given on the instance's clock, which the supervisor plans with.
    (stop,) = scheduled_decisions(events, NOT_BEFORE - 400 - 100, lead=120, clock_offset=400.0)
    assert stop.kind == STOP and stop.reclaim_at == NOT_BEFORE - 400
    (early,) = scheduled_decisions(events, NOT_BEFORE - 100, lead=120, clock_offset=-400.0)  # 400 s ahead
    assert early.kind == ADVISORY
    # Less than the Date header's resolution is no skew.
    (stop,) = scheduled_decisions(events, NOT_BEFORE - 100, lead=120, clock_offset=1.2)
    assert stop.reclaim_at == NOT_BEFORE
    assert server_clock_offset("Mon, 21 Jan 2019 09:00:43 GMT", NOT_BEFORE - 10.0) == 10.5
    assert server_clock_offset(None, 0.0) is None and server_clock_offset("garbage", 0.0) is None


def test_scheduled_monitor_reports_each_meaning_once_and_a_canceled_event_never_stops() -> None:
    client = FakeClient({SCHEDULED: AWS_EXAMPLE})
    monitor = ScheduledEventMonitor(client, lead=120)  # type: ignore[arg-type]
    assert [e.kind for e in monitor.poll(NOT_BEFORE - 3600)] == [ADVISORY]
    assert monitor.poll(NOT_BEFORE - 3000) == []
    canceled = FakeClient({SCHEDULED: AWS_EXAMPLE.replace(b"active", b"canceled")})
    monitor.client = canceled  # type: ignore[assignment]
    assert monitor.poll(NOT_BEFORE - 60) == []  # canceled before its time: the planned stop never fires
    monitor.client = client  # type: ignore[assignment]
    assert [e.kind for e in monitor.poll(NOT_BEFORE - 60)] == [STOP]
    assert monitor.poll(NOT_BEFORE - 30) == []
    monitor.client = FakeClient({SCHEDULED: b"<html>garbage</html>"})  # type: ignore[assignment]
    assert monitor.poll(NOT_BEFORE) == []
    assert ScheduledEventMonitor(FakeClient({}), lead=120).poll(NOT_BEFORE) == []  # type: ignore[arg-type]


def test_spot_and_rebalance_monitors() -> None:
    notice = b'{"action": "stop", "time": "2027-01-15T08:01:00Z"}'
    event = notice_event(notice)
    assert (event.kind, event.source, event.action) == (STOP, "imds", "stop")
    assert event.as_dict()["time"] == "2027-01-15T08:01:00Z" and event.as_dict()["source"] == "imds"
    client = FakeClient({})
    spot = SpotInterruptionMonitor(client)  # type: ignore[arg-type]
    assert spot.poll(0) == []
    client.answers["/latest/meta-data/spot/instance-action"] = b"not json"
    assert spot.poll(0) == []  # garbage is never a notice
    client.answers["/latest/meta-data/spot/instance-action"] = notice
    assert len(spot.poll(0)) == 1 and spot.poll(0) == []
    assert rebalance_event(b'{"noticeTime": "2027-01-15T08:00:00Z"}').kind == ADVISORY
    client.answers["/latest/meta-data/events/recommendations/rebalance"] = b'{"noticeTime": "T1"}'
    rebalance = RebalanceMonitor(client)  # type: ignore[arg-type]
    assert len(rebalance.poll(0)) == 1 and rebalance.poll(0) == []
    client.answers["/latest/meta-data/events/recommendations/rebalance"] = b'{"noticeTime": "T2"}'
    assert len(rebalance.poll(0)) == 1  # a new recommendation, a new sync


def test_react_to_events() -> None:
    notice = notice_event(b'{"action": "terminate", "time": "2027-01-15T08:01:00Z"}')
    rebalance = rebalance_event(b'{"noticeTime": "T"}')
    sigterm = signal_event("SIGTERM")
    assert react(rebalance, None) == SYNC and react(rebalance, notice) == IGNORE
    assert react(notice, None) == START_STOP and react(sigterm, None) == START_STOP
    assert react(sigterm, sigterm) == KILL  # a second signal
    assert react(sigterm, notice) == TIGHTEN and react(notice, sigterm) == TIGHTEN
    assert react(unwatched_event(1900), None) == START_STOP and react(lease_lost_event(), notice) == TIGHTEN
    # Sources that announce no reclaim time get the agent's own grace.
    assert sigterm.with_reclaim(1000.0, 31.0).reclaim_at == 1031.0
    assert notice.with_reclaim(1000.0, 31.0) is notice
    assert StopEvent(STOP, "lease").as_dict() == {"action": "terminate", "time": None, "source": "lease"}


def test_runner_keeps_polling_through_failures() -> None:
    class Flaky:
        name = "flaky"

        def __init__(self, *answers):
            self.answers = list(answers)

        def poll(self, now):
            answer = self.answers.pop(0) if self.answers else []
            if isinstance(answer, Exception):
                raise answer
            return answer

    got: list[StopEvent] = []
    stop = StopEvent(STOP, "imds", reclaim_at=1.0)
    broken, disabled = Flaky(RuntimeError("bug"), [stop]), Flaky(ImdsDisabled("403"))
    flaky = Flaky(ImdsUnavailable("503"), [stop])
    runner = MonitorRunner([broken, disabled, flaky], on_event=got.append)
    runner.poll_once(0)
    assert got == [] and runner.disabled and runner.monitors == [broken, flaky]
    runner.poll_once(0)
    assert got == [stop, stop]


def test_every_source_module_is_discovered_in_the_zipapp_too(tmp_path: Path) -> None:
    names = [m.name for m in discover(FakeClient({}), MonitorSettings())]  # type: ignore[arg-type]
    assert names == ["events/recommendations/rebalance", "events/maintenance/scheduled", "spot/instance-action"]
    pyz = build_zipapp(str(tmp_path / "agent.pyz"))
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); from airflow_grid_resume.agent.monitors import discover, "
        "MonitorSettings; print([m.name for m in discover(None, MonitorSettings())])"
    )
    out = subprocess.run([sys.executable, "-c", probe, pyz], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.strip() == repr(names)


def test_the_run_view_names_a_scheduled_stop() -> None:
    from airflow_grid_resume.run.ending import ended_by

    record = {"session": 1, "outcome": {"status": "interrupted", "notice": {"source": "scheduled", "action": "reboot"}}}
    assert ended_by(record) == "EC2 scheduled event: instance reboot (checkpoint saved)"
