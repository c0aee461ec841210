"""The ledger's typed records (ledger/records.py): round trips, forward compatibility, refusal of newer
formats, and documents as today's writers (agent, triggers) write them. Pure: no server."""

from __future__ import annotations

import json

import pytest

from airflow_grid_resume.ledger import layout, records
from airflow_grid_resume.ledger.errors import ManifestError, UnsupportedFormatError
from airflow_grid_resume.ledger.records import RecordError

# One document per record, with the fields the writers put there today (supervisor.py, lease.py,
# operators.py, triggers/run.py, triggers/capacity.py), without a format field: version 1.
TODAY = {
    records.SessionStart: {
        "agent_id": "a" * 32,
        "host": "ip-10-0-0-1",
        "pid": 4242,
        "instance_id": "i-0123",
        "started_at": "2026-01-01T00:00:00.000Z",
        "command": ["python", "train.py"],
        "agent_version": "0.1.0",
        "session": 2,
    },
    records.Heartbeat: {
        "session": 2,
        "seq": 7,
        "time": "2026-01-01T00:01:00.000Z",
        "epoch": 1767225660.5,
        "state": "running",
        "log_bytes": 1234,
        "last_manifest": "000002-000001.json",
        "notice": None,
        "interval": 10.0,
        "progress": {"done": 40, "total": 100},
    },
    records.Outcome: {
        "session": 2,
        "status": "interrupted",
        "exit_code": 0,
        "clean": True,
        "reason": "the command saved its state and exited 0 after SIGTERM",
        "warnings": [],
        "notice": {"action": "terminate", "time": "2026-01-01T00:02:00Z", "source": "imds"},
        "manifest": "000002-000003.json",
        "restored_from": "000001-000009.json",
        "restore_fallbacks": [{"manifest": "000001-000010.json", "reason": "pack missing"}],
        "started_at": "2026-01-01T00:00:00.000Z",
        "ended_at": "2026-01-01T00:02:05.000Z",
        "tail": [],
        "agent_exit_code": 0,
        "progress": {"first": 31, "last": 52, "total": 100},
    },
    records.Lease: {
        "agent_id": "a" * 32,
        "host": "ip-10-0-0-1",
        "pid": 4242,
        "instance_id": "i-0123",
        "acquired_at": 1767225600.0,
        "renewed_at": 1767225610.0,
        "expires_at": 1767225670.0,
        "released": False,
        "session": 2,
    },
    records.Spec: {
        "command": ["python", "train.py"],
        "agent_args": ["--sync-interval", "60"],
        "run_uri": "s3://b/runs/d/t/r",
        "budgets": {"max_interruptions": 10, "failure_retries": 0},
    },
    records.Final: {"status": "succeeded", "session": 3, "reason": "succeeded", "at": 1767225900.25},
    records.LaunchAttempt: {
        "session": 2,
        "expires_at": "2026-01-02T00:00:00Z",
        "attempt": {"pair": ["m5.large", "subnet-1"], "lifecycle": "spot", "token": "t"},
        "at": 1767225500,
    },
    records.Launch: {
        "instance_id": "i-0123",
        "instance_type": "m5.large",
        "zone": "us-east-1a",
        "subnet_id": "subnet-1",
        "lifecycle": "spot",
        "spot_price": 0.035,
        "on_demand_price": 0.096,
        "launched_at": 1767225550.0,
        "waited_seconds": 12,
    },
    records.Watch: {"log_offset": 8192, "at": 1767225700.0},
    records.Closed: {"status": "lost", "reason": "no heartbeat for 300 s", "instance_id": "i-0123", "at": 1767225800},
    records.Deadline: {
        "deadline_at": 1767250800.0,
        "expected_hours": 6.0,
        "first_started_at": 1767225600.0,
        "given": "2026-01-01T07:00:00+00:00",
    },
    records.Decision: {
        "action": "on-demand",
        "at": 1767225800.0,
        "point": "capacity",
        "pool": None,
        "reason": "1.3 h behind",
        "commit": False,
        "deadline_at": 1767250800.0,
        "predicted_finish": 1767248000.0,
        "ahead_hours": -1.3,
        "work_hours": 6.0,
        "progress_hours": 1.0,
        "changeover_hours": 0.2,
    },
    records.Boot: {
        "session": 2,
        "python": "/usr/bin/python3.9",
        "python_version": "3.9.18",
        "candidates": ["/usr/bin/python3 (3.9.18)"],
        "at": "2026-01-01T00:00:00Z",
    },
}


def test_every_record_has_a_document_of_today() -> None:
    assert set(TODAY) == set(records.ALL)


@pytest.mark.parametrize("cls", records.ALL, ids=lambda c: c.__name__)
def test_todays_documents_read_and_round_trip(cls: type[records.Record]) -> None:
    doc = TODAY[cls]
    record = cls.from_json(json.dumps(doc).encode())
    assert record.extra == {}
    for key, value in doc.items():  # every field today's writers put there is a field of the record
        assert getattr(record, key) == value
    written = json.loads(record.to_json())
    assert written["format"] == f"grid-resume-{cls.NAME}/1"
    assert {k: v for k, v in written.items() if k != "format"} == {**doc}
    assert cls.from_json(record.to_json()) == record


@pytest.mark.parametrize("cls", records.ALL, ids=lambda c: c.__name__)
def test_unknown_fields_are_kept_and_written_back(cls: type[records.Record]) -> None:
    newer = {**TODAY[cls], "format": f"grid-resume-{cls.NAME}/1", "added_later": {"x": [1, 2]}}
    record = cls.from_dict(newer)
    assert record.extra == {"added_later": {"x": [1, 2]}}
    assert json.loads(record.to_json()) == newer


@pytest.mark.parametrize("cls", records.ALL, ids=lambda c: c.__name__)
def test_a_newer_format_is_refused_with_what_to_do(cls: type[records.Record]) -> None:
    body = json.dumps({**TODAY[cls], "format": f"grid-resume-{cls.NAME}/2"}).encode()
    with pytest.raises(UnsupportedFormatError, match=rf"grid-resume-{cls.NAME}/2, newer .*upgrade airflow-grid-resume"):
        cls.from_json(body, name="s3://b/run/" + cls.KEY)


def test_another_documents_format_or_a_bad_field_is_an_error_naming_it() -> None:
    with pytest.raises(ManifestError, match=r"launch\.json is not a grid-resume-launch/N document"):
        records.Launch.from_dict({**TODAY[records.Launch], "format": "grid-resume-closed/1"})
    with pytest.raises(RecordError, match=r"sessions/000001/launch.json: field 'spot_price' is 'cheap', not a number"):
        records.Launch.from_dict({**TODAY[records.Launch], "spot_price": "cheap"}, name="sessions/000001/launch.json")
    with pytest.raises(RecordError, match="field 'clean' is 1, not true or false"):
        records.Outcome.from_dict({**TODAY[records.Outcome], "clean": 1})
    with pytest.raises(RecordError, match="field 'session' is True, not an integer"):
        records.Final.from_dict({**TODAY[records.Final], "session": True})
    with pytest.raises(RecordError, match=r"outcome\.json lacks status"):
        records.Outcome.from_dict({"session": 1})
    with pytest.raises(RecordError, match="is not valid JSON"):
        records.Watch.from_json(b"{half")
    with pytest.raises(RecordError, match="is not a JSON object"):
        records.Watch.from_json(b"[1]")


def test_field_types_are_json_types() -> None:
    """An integer reads as a number, a bool as neither; a key named like the class's own attributes
    (``KEY``, ``extra``) is just an unknown field."""
    beat = records.Heartbeat.from_dict({"session": 1, "epoch": 5, "KEY": "k", "extra": 1})
    assert beat.epoch == 5.0 and isinstance(beat.epoch, float) and beat.extra == {"KEY": "k", "extra": 1}
    with pytest.raises(RecordError, match="field 'epoch' is False, not a number or null"):
        records.Heartbeat.from_dict({"session": 1, "epoch": False})
    with pytest.raises(RecordError, match=r"field 'session' is 1\.5, not an integer"):
        records.Heartbeat.from_dict({"session": 1.5})


def test_optional_fields_are_left_out_when_absent_as_the_writers_do() -> None:
    """The progress protocol: no ``progress`` before any progress line; ``hint`` only for a crash."""
    beat = json.loads(records.Heartbeat(session=1).to_json())
    assert "progress" not in beat and beat["notice"] is None
    outcome = json.loads(records.Outcome(session=1, status="failed").to_json())
    assert "progress" not in outcome and "hint" not in outcome
    assert "unwatched" not in json.loads(records.Closed(status="lost").to_json())
    assert records.Watch.from_dict({}).log_offset == 0


def test_lease_held_until_expiry_unless_released() -> None:
    lease = records.Lease.from_dict(TODAY[records.Lease])
    assert lease.held(lease.expires_at - 1) and not lease.held(lease.expires_at)
    assert not records.Lease.from_dict({**TODAY[records.Lease], "released": True}).held(0)


def test_every_record_lives_at_a_key_of_the_layout_with_a_rule() -> None:
    for cls in records.ALL:
        rule = layout.rule(cls.KEY)
        assert rule.writers
        key = records.record_key(cls, 3)
        assert key == cls.KEY.replace("SSSSSS", "000003")
    assert records.record_key(records.Outcome, 12) == layout.outcome(12)
    with pytest.raises(ValueError, match="needs a session number"):
        records.record_key(records.Launch)
    with pytest.raises(KeyError):
        layout.rule("nope.json")


def test_the_airflow_side_releases_only_a_dead_holders_lease() -> None:
    """The shared rule for the lease's second writer: the session (or instance) known dead, not released."""
    lease = records.Lease.from_dict(TODAY[records.Lease])
    released = lease.released_for_dead(2, "i-other")
    assert released is not None and released.released and "i-other is gone" in released.released_by
    assert json.loads(released.to_json())["agent_id"] == lease.agent_id  # the holder stays on record
    assert lease.released_for_dead(9, "i-0123") is not None  # its instance, whatever the session
    assert lease.released_for_dead(3, "i-other") is None  # a live agent of another session: never touched
    assert released.released_for_dead(2, "i-0123") is None  # already released
