"""gc on versioned buckets: the versions of the keys it deleted go, nothing else does; without the
permissions it says once which lifecycle rule to add."""

from __future__ import annotations

import logging
from pathlib import Path

import boto3
import pytest

from airflow_grid_resume.agent.restore import Restorer
from airflow_grid_resume.ledger import versions
from airflow_grid_resume.ledger.gc import collect_garbage
from airflow_grid_resume.ledger.s3client import make_s3_client
from airflow_grid_resume.ledger.store import RunLedger
from airflow_grid_resume.ledger.uri import parse_s3_uri
from airflow_grid_resume.ledger.versions import Version, purge_noncurrent, versions_to_remove
from tests.agent.test_sync import snapshot
from tests.ledger.test_gc import _versions


def test_only_the_deleted_keys_lose_versions_and_a_key_written_again_keeps_its_current_one() -> None:
    entries = [
        Version("run/objects/a", "1", latest=False),
        Version("run/objects/a", "m", latest=True, marker=True),
        Version("run/objects/b", "1", latest=False),
        Version("run/objects/b", "2", latest=True),  # written again after gc deleted it (a sync reused it)
        Version("run/objects/b", "m", latest=False, marker=True),
        Version("run/objects/c", "1", latest=False),  # not deleted by this gc: never touched
        Version("run/objects/c", "2", latest=True),
    ]
    gone, markers = versions_to_remove(entries, {"run/objects/a", "run/objects/b"})
    assert gone == [entries[0], entries[2]]
    assert markers == [entries[1]]  # b's marker stays with b's current version


def all_versions(bucket: str, prefix: str) -> list[tuple[str, bool]]:
    listing = boto3.client("s3").list_object_versions(Bucket=bucket, Prefix=prefix)
    return [(v["Key"], False) for v in listing.get("Versions", [])] + [
        (m["Key"], True) for m in listing.get("DeleteMarkers", [])
    ]


def test_gc_on_a_versioned_bucket_frees_what_it_deleted_and_nothing_else(ledger: RunLedger, tmp_path: Path) -> None:
    bucket = ledger.location.bucket
    s3 = boto3.client("s3")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    other = ledger.key("notes.txt")  # a key gc never deletes, with a noncurrent version of its own
    s3.put_object(Bucket=bucket, Key=other, Body=b"one")
    s3.put_object(Bucket=bucket, Key=other, Body=b"two")
    src = tmp_path / "src"
    _versions(ledger, src, 4)
    plan = collect_garbage(ledger, keep=2, grace=0, apply=True)
    deleted = {m.key for m in plan.manifests} | {b.key for b in plan.blobs}
    assert len(deleted) == 9
    left = all_versions(bucket, ledger.key(""))
    assert not [key for key, _ in left if key in deleted]  # neither their bytes nor their markers remain
    assert plan.versions_removed >= 2 * len(deleted)  # a version and a delete marker each, at least
    assert [key for key, _ in left].count(other) == 2  # both versions of the other key are still there
    assert plan.versions_note is None
    dst = tmp_path / "dst"
    assert Restorer(ledger, str(dst)).restore().manifest.name == "000001-000004.json"
    assert snapshot(dst) == snapshot(src)


def test_an_unversioned_bucket_costs_no_version_listing(ledger: RunLedger, tmp_path: Path) -> None:
    calls: list[str] = []
    ledger.client.meta.events.register("before-call.s3.*", lambda model, **kw: calls.append(model.name))
    result = purge_noncurrent(ledger, [ledger.key("objects/x")], [ledger.key("objects") + "/"])
    assert (result.removed, result.note) == (0, None) and calls == ["GetBucketVersioning"]


def test_without_the_permissions_gc_says_once_which_lifecycle_rule_to_add(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """moto checks IAM policies once INITIAL_NO_AUTH_ACTION_COUNT actions have passed: a user whose policy
    denies s3:ListBucketVersions and s3:DeleteObjectVersion, on a versioned bucket."""
    from airflow_grid_resume.emulator.moto_server import MotoServer

    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "3")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(versions, "_told", set())
    with MotoServer() as server:
        for name, value in {
            "AWS_ENDPOINT_URL": server.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            monkeypatch.setenv(name, value)
        iam = boto3.client("iam")
        iam.create_user(UserName="gc")
        key = iam.create_access_key(UserName="gc")["AccessKey"]
        policy = (
            '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}, '
            '{"Effect": "Deny", "Action": ["s3:ListBucketVersions", "s3:DeleteObjectVersion"], "Resource": "*"}]}'
        )
        iam.put_user_policy(UserName="gc", PolicyName="s3", PolicyDocument=policy)  # checked from here on
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        s3 = make_s3_client()
        s3.create_bucket(Bucket="versioned")
        s3.put_bucket_versioning(Bucket="versioned", VersioningConfiguration={"Status": "Enabled"})
        ledger = RunLedger(s3, parse_s3_uri("s3://versioned/grid-runs/dag/train/run"))
        _versions(ledger, tmp_path / "src", 3)
        with caplog.at_level(logging.WARNING, logger="airflow_grid_resume.ledger.versions"):
            plan = collect_garbage(ledger, keep=1, grace=0, apply=True)
            again = purge_noncurrent(ledger, [m.key for m in plan.manifests], [ledger.key("manifests") + "/"])
        assert plan.manifests and plan.versions_removed == 0
        note = plan.versions_note or ""
        assert "bucket versioned keeps what gc deleted as noncurrent versions" in note
        assert '"NoncurrentVersionExpiration": {"NoncurrentDays": 1}' in note and '"Prefix": "grid-runs/"' in note
        assert again.note is None  # said once
        assert [r.getMessage() for r in caplog.records if r.name == "airflow_grid_resume.ledger.versions"] == [note]
        assert any("put-bucket-lifecycle-configuration" in line for line in plan.lines("s3://x", 0, True))
