"""The metadata-service emulator speaks IMDSv2 with real status codes; the client reads it right."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from airflow_grid_resume.agent.imds import ImdsClient, ImdsDisabled, ImdsUnavailable, parse_instance_action
from airflow_grid_resume.agent.monitors import MonitorSettings, discover
from airflow_grid_resume.agent.monitors.events import StopEvent
from airflow_grid_resume.agent.monitors.runner import MonitorRunner
from airflow_grid_resume.emulator.imds import MetadataService


def http(method: str, url: str, headers: dict | None = None, body: dict | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_status_codes(imds: MetadataService) -> None:
    base = imds.url + "/latest"
    assert http("PUT", base + "/api/token")[0] == 400  # no TTL header
    assert http("PUT", base + "/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "0"})[0] == 400
    assert http("GET", base + "/meta-data/instance-id")[0] == 401  # IMDSv2 required: no token
    status, token = http("PUT", base + "/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"})
    assert status == 200
    auth = {"X-aws-ec2-metadata-token": token.decode()}
    assert http("GET", base + "/meta-data/spot/instance-action", auth)[0] == 404
    assert http("GET", base + "/meta-data/events/recommendations/rebalance", auth)[0] == 404
    assert http("GET", base + "/meta-data/instance-id", {"X-aws-ec2-metadata-token": "forged"})[0] == 401
    assert http("POST", imds.url + "/_emulator/notice", body={"action": "stop", "in_seconds": 120})[0] == 200
    status, body = http("GET", base + "/meta-data/spot/instance-action", auth)
    assert status == 200 and json.loads(body)["action"] == "stop"
    assert http("GET", base + "/meta-data/spot/termination-time", auth)[0] == 404  # only for terminate
    http("POST", imds.url + "/_emulator/notice", body={"in_seconds": 120})
    status, body = http("GET", base + "/meta-data/spot/termination-time", auth)
    assert status == 200 and body.decode().endswith("Z")
    http("POST", imds.url + "/_emulator/rebalance", body={})
    status, body = http("GET", base + "/meta-data/events/recommendations/rebalance", auth)
    assert status == 200 and "noticeTime" in json.loads(body)
    http("POST", imds.url + "/_emulator/fault", body={"status": 503, "count": 1})
    assert http("GET", base + "/meta-data/instance-id", auth)[0] == 503
    assert http("GET", base + "/meta-data/instance-id", auth)[0] == 200
    http("POST", imds.url + "/_emulator/expire-tokens", body={})
    assert http("GET", base + "/meta-data/instance-id", auth)[0] == 401
    http("POST", imds.url + "/_emulator/disable", body={})
    assert http("PUT", base + "/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"})[0] == 403
    assert http("POST", imds.url + "/_emulator/notice", body={"action": "reboot"})[0] == 400


def test_client_faults(imds: MetadataService) -> None:
    client = ImdsClient(imds.url, timeout=0.5)
    assert client.get("/latest/meta-data/spot/instance-action") is None
    imds.inject_fault(status=503)
    with pytest.raises(ImdsUnavailable, match="503"):
        client.get("/latest/meta-data/instance-id")
    imds.inject_fault(delay=1.0)
    with pytest.raises(ImdsUnavailable, match="timed out"):
        client.get("/latest/meta-data/instance-id")
    imds.expire_tokens()
    assert client.get("/latest/meta-data/instance-id") == b"i-0emulated0000000"  # refreshed after 401
    imds.set_disabled()
    with pytest.raises(ImdsDisabled):
        client.get("/latest/meta-data/instance-id")
    with pytest.raises(ImdsUnavailable):
        ImdsClient("http://127.0.0.1:9", timeout=0.5).token()


def test_monitors_read_each_event_once_and_ignore_garbage(imds: MetadataService) -> None:
    events: list[StopEvent] = []
    runner = MonitorRunner(discover(ImdsClient(imds.url), MonitorSettings(notice_window=120)), on_event=events.append)
    runner.poll_once()
    imds.inject_fault(status=500, path_prefix="/latest/meta-data/spot")
    runner.poll_once()
    assert events == []
    # A malformed 200 is logged, never read as a notice.
    original = imds._metadata
    imds._metadata = lambda path, now: (
        (200, "text/plain", "not json") if "instance-action" in path or "maintenance" in path else original(path, now)
    )
    runner.poll_once()
    assert events == []
    imds._metadata = original
    imds.schedule_notice(in_seconds=30)
    imds.schedule_rebalance()
    runner.poll_once()
    runner.poll_once()
    assert sorted((e.source, e.kind) for e in events) == [("imds", "stop"), ("rebalance", "advisory")]
    assert next(e for e in events if e.source == "imds").action == "terminate"


def test_scheduled_events_over_http(imds: MetadataService) -> None:
    client = ImdsClient(imds.url)
    assert json.loads(client.get("/latest/meta-data/events/maintenance/scheduled") or b"") == []
    assert client.clock_offset is not None and abs(client.clock_offset) < 1.5  # from the answer's Date header
    status, body = http(
        "POST", imds.url + "/_emulator/scheduled-event", body={"code": "instance-retirement", "in_seconds": 3600}
    )
    assert status == 200
    event_id = json.loads(body)["event_id"]
    (listed,) = json.loads(client.get("/latest/meta-data/events/maintenance/scheduled") or b"")
    assert listed["Code"] == "instance-retirement" and listed["State"] == "active" and listed["EventId"] == event_id
    assert listed["NotBefore"].endswith(" GMT")
    events: list[StopEvent] = []
    runner = MonitorRunner(discover(client, MonitorSettings(notice_window=120)), on_event=events.append)
    runner.poll_once()
    assert [(e.source, e.kind, e.action) for e in events] == [("scheduled", "advisory", "terminate")]
    runner.poll_once(time.time() + 3600 - 100)  # within the notice window of its NotBefore
    assert [(e.kind, e.action) for e in events[1:]] == [("stop", "terminate")]
    assert http("POST", imds.url + "/_emulator/cancel-scheduled-event", body={"event_id": event_id})[0] == 200
    assert json.loads(client.get("/latest/meta-data/events/maintenance/scheduled") or b"") == []
    (history,) = json.loads(client.get("/latest/meta-data/events/maintenance/history") or b"")
    assert history["State"] == "canceled"
    assert http("POST", imds.url + "/_emulator/scheduled-event", body={"code": "meteor"})[0] == 400


def test_notice_parsing() -> None:
    action, when = parse_instance_action(b'{"action": "terminate", "time": "2026-11-24T10:00:00Z"}')
    assert action == "terminate" and when == 1795514400.0
    for bad in (b"oops", b'{"action": "reboot", "time": "2026-11-24T10:00:00Z"}', b'{"action": "stop"}'):
        with pytest.raises(ValueError):
            parse_instance_action(bad)
