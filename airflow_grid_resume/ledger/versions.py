"""Versioned buckets: on them DeleteObject only adds a delete marker, and the bytes stay stored (and
billed) as a noncurrent version. gc removes the versions of the keys it deleted itself (never of any
other key), with ListObjectVersions and DeleteObjects by VersionId; without the permissions (or under
Object Lock retention) it says once that a lifecycle rule is needed, and prints it.

The rule and the permissions are in docs/user-guide.md ("Buckets with security rules").
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from airflow_grid_resume.ledger.awserror import error_code
from airflow_grid_resume.ledger.store import RunLedger

log = logging.getLogger(__name__)

# What a bucket's owner adds when gc may not remove noncurrent versions itself (PutBucketLifecycleConfiguration).
LIFECYCLE_RULE = {
    "ID": "grid-resume-noncurrent",
    "Status": "Enabled",
    "Filter": {"Prefix": "grid-runs/"},
    "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
    "Expiration": {"ExpiredObjectDeleteMarker": True},
}
DENIED = ("AccessDenied", "403", "Forbidden", "AllAccessDisabled")
_told: set[str] = set()  # buckets this process has already told about the lifecycle rule


@dataclass(frozen=True)
class Version:
    """One entry of ListObjectVersions: a stored version or a delete marker."""

    key: str
    version_id: str
    latest: bool
    marker: bool = False


@dataclass
class VersionPurge:
    removed: int = 0  # noncurrent versions and delete markers removed
    note: str | None = None  # the lifecycle rule to add, when gc could not remove them


def versions_to_remove(entries: Iterable[Version], deleted: set[str]) -> tuple[list[Version], list[Version]]:
    """(noncurrent versions, delete markers) of the keys in ``deleted``, nothing of any other key. A key
    written again since it was deleted keeps its current version (and its markers: only older versions
    go). Markers go in a second pass, once their key's versions are gone: removing a marker while a
    version remains would make that version current again."""
    mine = [e for e in entries if e.key in deleted]
    written_again = {e.key for e in mine if e.latest and not e.marker}
    versions = [e for e in mine if not e.marker and not e.latest]
    markers = [e for e in mine if e.marker and e.key not in written_again]
    return versions, markers


def lifecycle_note(bucket: str, run_prefix: str, why: str) -> str:
    """The words gc says once: why, and the rule (for the run prefix's top folder, where runs live)."""
    top = run_prefix.strip("/").split("/", 1)[0]
    rule = {**LIFECYCLE_RULE, "Filter": {"Prefix": f"{top}/" if top else ""}}
    config = json.dumps({"Rules": [rule]})
    return (
        f"bucket {bucket} keeps what gc deleted as noncurrent versions ({why}): add this lifecycle rule to "
        f"remove them: aws s3api put-bucket-lifecycle-configuration --bucket {bucket} --lifecycle-configuration "
        f"'{config}' (or allow s3:ListBucketVersions and s3:DeleteObjectVersion on the run prefix)"
    )


def is_versioned(ledger: RunLedger) -> bool | None:
    """True/False from GetBucketVersioning (Enabled or Suspended: versions may exist); None: not allowed to ask."""
    try:
        status = ledger.client.get_bucket_versioning(Bucket=ledger.location.bucket).get("Status")
    except ClientError as exc:
        if error_code(exc) in DENIED:
            return None
        raise
    return status in ("Enabled", "Suspended")


def purge_noncurrent(ledger: RunLedger, deleted: Iterable[str], prefixes: Iterable[str]) -> VersionPurge:
    """Remove the noncurrent versions (and then the delete markers) of ``deleted`` keys, listing the
    versions under each of ``prefixes`` once. Nothing happens on a bucket that never had versioning."""
    keys = set(deleted)
    result = VersionPurge()
    if not keys or is_versioned(ledger) is False:
        return result
    bucket = ledger.location.bucket
    try:
        entries = [e for prefix in prefixes for e in _list_versions(ledger, prefix)]
        versions, markers = versions_to_remove(entries, keys)
        failed = _delete(ledger, versions)
        result.removed = len(versions) - len(failed)
        failed_keys = {v.key for v in failed}
        left = [m for m in markers if m.key not in failed_keys]
        result.removed += len(left) - len(_delete(ledger, left))
        if failed:
            result.note = lifecycle_note(
                bucket,
                ledger.key(""),
                f"S3 refused to remove {len(failed)}: no s3:DeleteObjectVersion, or Object Lock retention",
            )
    except (ClientError, BotoCoreError) as exc:
        if error_code(exc) not in DENIED:
            raise
        result.note = lifecycle_note(bucket, ledger.key(""), "gc may not list or delete versions")
    if result.note and bucket not in _told:
        _told.add(bucket)
        log.warning("%s", result.note)
    elif result.note:
        result.note = None  # said once already
    return result


def _list_versions(ledger: RunLedger, prefix: str) -> list[Version]:
    out = []
    paginator = ledger.client.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=ledger.location.bucket, Prefix=prefix):
        for item in page.get("Versions", []):
            out.append(Version(item["Key"], item["VersionId"], bool(item.get("IsLatest"))))
        for item in page.get("DeleteMarkers", []):
            out.append(Version(item["Key"], item["VersionId"], bool(item.get("IsLatest")), marker=True))
    return out


def _delete(ledger: RunLedger, entries: list[Version]) -> list[Version]:
    """Delete ``entries`` by version, 1,000 a request; returns those S3 refused."""
    failed: list[Version] = []
    for i in range(0, len(entries), 1000):
        batch = entries[i : i + 1000]
        resp = ledger.client.delete_objects(
            Bucket=ledger.location.bucket,
            Delete={"Objects": [{"Key": e.key, "VersionId": e.version_id} for e in batch], "Quiet": True},
        )
        refused = {(err.get("Key"), err.get("VersionId")) for err in resp.get("Errors") or []}
        failed += [e for e in batch if (e.key, e.version_id) in refused]
    return failed
