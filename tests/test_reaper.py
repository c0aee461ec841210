"""reaper.py: which instances and queues grid-resume reap removes. Pure: no server."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow_grid_resume.reaper import select_reapable


# -- the reaper ---------------------------------------------------------------------------------------
def instance(instance_id: str, tags: dict[str, str], state: str = "running") -> dict:
    return {
        "InstanceId": instance_id,
        "State": {"Name": state},
        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
    }


def test_the_reaper_takes_expired_or_ended_tagged_instances_only() -> None:
    now = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)
    past, future = (now - timedelta(hours=1)), (now + timedelta(hours=1))
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    run = {"grid-resume:run-id": "s3://b/r", "grid-resume:session": "2"}
    instances = [
        instance("i-expired", {**run, "grid-resume:expires-at": past.strftime(fmt)}),
        instance("i-live", {**run, "grid-resume:session": "3", "grid-resume:expires-at": future.strftime(fmt)}),
        instance("i-ended", {**run, "grid-resume:expires-at": future.strftime(fmt)}),
        instance("i-theirs", {"Name": "not ours", "grid-resume:expires-at": past.strftime(fmt)}),
        instance("i-gone", {**run, "grid-resume:expires-at": past.strftime(fmt)}, state="terminated"),
        instance("i-untagged-expiry", {**run, "grid-resume:session": "9"}),
    ]
    reap, notes = select_reapable(instances, now, lambda run_uri: 2 if run_uri == "s3://b/r" else None)
    assert {r.instance_id: r.reason.split()[0] for r in reap} == {"i-expired": "expired", "i-ended": "its"}
    assert len(notes) == 1 and "i-untagged-expiry" in notes[0]
