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
    reap, notes = select_reapable(instances, now, lambda run_uri, _session: 2 if run_uri == "s3://b/r" else None)
    assert {r.instance_id: r.reason.split()[0] for r in reap} == {"i-expired": "expired", "i-ended": "its"}
    assert len(notes) == 1 and "i-untagged-expiry" in notes[0]


def test_the_reaper_reads_no_ledger_a_cut_run_tag_names() -> None:
    """Two runs whose URIs share their first 256 characters share the readable run tag: the reaper never reads
    the ledger at the cut URI for either (it could be the other run's), and takes them by their expiry only.
    An instance launched before the digest tag keeps being judged by its ledger when its tag is not cut."""
    from airflow_grid_resume.ec2.tags import run_tags

    now = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)
    future = (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    long_a, long_b = "s3://b/" + "x" * 300 + "/0", "s3://b/" + "x" * 300 + "/1"
    short = "s3://b/short-run"
    legacy = {"grid-resume:run-id": "s3://b/old-run", "grid-resume:session": "1", "grid-resume:expires-at": future}
    instances = [
        instance("i-a", run_tags(long_a, 1, future, {})),
        instance("i-b", run_tags(long_b, 1, future, {})),
        instance("i-short", run_tags(short, 1, future, {})),
        instance("i-legacy", legacy),
        instance("i-legacy-cut", {**legacy, "grid-resume:run-id": long_a[:256]}),
    ]
    asked: list[tuple[str, int]] = []

    def ended(run_uri: str, session: int) -> int:
        asked.append((run_uri, session))
        return 1  # every ledger asked says its run ended in session 1

    reap, _notes = select_reapable(instances, now, ended)
    assert sorted(r.instance_id for r in reap) == ["i-legacy", "i-short"]
    assert sorted(asked) == [("s3://b/old-run", 1), (short, 1)]
