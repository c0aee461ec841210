"""The run ledger: one S3 prefix per run, shared by the agent and the Airflow side.

Typed access over boto3 (stdlib + botocore otherwise); the keys and the rules of who writes them are
in :mod:`airflow_grid_resume.ledger.layout`, the manifest format in :mod:`.manifest`; see docs/ledger.md.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from airflow_grid_resume.ledger import layout, records
from airflow_grid_resume.ledger.awserror import error_code, error_message
from airflow_grid_resume.ledger.errors import BucketRulesError, CorruptObjectError, ManifestError
from airflow_grid_resume.ledger.manifest import (
    FileEntry,
    Manifest,
    parse_manifest,
    parse_manifest_name,
)
from airflow_grid_resume.ledger.s3client import (
    explain_access_error,
    is_not_found,
    is_precondition_failed,
)
from airflow_grid_resume.ledger.uri import S3Location
from airflow_grid_resume.ledger.writeoptions import S3WriteOptions, explain_write_refusal

MAX_LOG_CHUNK = 8 * 1024 * 1024
R = TypeVar("R", bound=records.Record)
_SESSION_DIR = re.compile(r"^(\d{6})/$")


class ConditionalWriteLost(Exception):
    """A conditional write found the key already written (or changed) by someone else.

    ``current`` is what :meth:`RunLedger.put_adopting_own` read back after the 412 (bytes and ETag;
    None if the key was gone by then), so a caller deciding what to do next need not read it again.
    """

    current: tuple[bytes, str] | None = None


@dataclass(frozen=True)
class StoredManifest:
    session: int
    seq: int
    key: str
    committed_at: float | None = None  # the object's LastModified, epoch seconds (for timelines)

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


class RunLedger:
    """Typed access to one run's prefix. Every call goes through a retrying boto3 client; every
    write carries ``write_options`` (encryption, checksum: ledger/writeoptions.py)."""

    def __init__(self, client: Any, location: S3Location, write_options: S3WriteOptions | None = None) -> None:
        self.client = client
        self.location = location
        self.write_options = write_options or S3WriteOptions()

    # -- keys -------------------------------------------------------------------------------
    def key(self, *parts: str) -> str:
        return self.location.key(*parts)

    def object_key(self, sha256: str) -> str:
        return self.key(layout.blob(sha256))

    def pack_key(self, sha256: str) -> str:
        return self.key(layout.pack(sha256))

    def manifest_key(self, session: int, seq: int) -> str:
        return self.key(layout.manifest(session, seq))

    def blob_keys(self, entry: FileEntry) -> list[str]:
        """The keys holding a file's bytes: its pack, or its object(s); none for an empty file."""
        if entry.pack:
            return [self.pack_key(entry.pack)]
        return [self.object_key(h) for h in entry.object_hashes()]

    def session_key(self, session: int, name: str) -> str:
        return self.key(layout.session_dir(session), name)

    def log_key(self, session: int, offset: int) -> str:
        return self.key(layout.log_chunk(session, offset))

    # -- primitives -------------------------------------------------------------------------
    def check_access(self) -> None:
        """Fail early, with a message that says what to fix, if the bucket cannot be used."""
        try:
            self.client.list_objects_v2(Bucket=self.location.bucket, Prefix=self.key(layout.MANIFESTS) + "/", MaxKeys=1)
        except (ClientError, BotoCoreError) as exc:
            raise explain_access_error(exc, self.location.bucket) from exc

    def put(self, key: str, body: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        """Write ``body``; conditional writes raise :class:`ConditionalWriteLost` on 412/409."""
        kwargs: dict[str, Any] = {
            "Bucket": self.location.bucket,
            "Key": key,
            "Body": body,
            **self.write_options.put_kwargs(),
        }
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        if if_match:
            kwargs["IfMatch"] = if_match
        try:
            return str(self.client.put_object(**kwargs)["ETag"])
        except ClientError as exc:
            if (if_none_match or if_match) and is_precondition_failed(exc):
                raise ConditionalWriteLost(key) from exc
            self.raise_refusal(exc, key)
            raise

    def raise_refusal(self, exc: ClientError, key: str) -> None:
        """Raise BucketRulesError, naming the option to set, when the bucket refused a write for want
        of an option it requires (server-side encryption, a checksum for Object Lock)."""
        message = error_message(exc)
        hint = explain_write_refusal(error_code(exc), message, self.write_options)
        if hint is not None:
            raise BucketRulesError(
                f"writing s3://{self.location.bucket}/{key} was refused ({error_code(exc)}: {message}): {hint}"
            ) from exc

    def put_once(self, key: str, body: bytes) -> bool:
        """Create ``key`` if absent. True if written now or already holding exactly ``body``."""
        try:
            self.put_adopting_own(key, body, if_none_match=True)
            return True
        except ConditionalWriteLost:
            return False

    def put_adopting_own(
        self, key: str, body: bytes, *, if_match: str | None = None, if_none_match: bool = False
    ) -> str:
        """A conditional write that survives its own lost answer: botocore retries a PUT whose response
        was lost, the retry sees 412 because the first attempt did succeed, and reading the key back
        finds exactly ``body``. Then it is ours (its ETag is returned); anything else is a real
        conflict (ConditionalWriteLost)."""
        try:
            return self.put(key, body, if_match=if_match, if_none_match=if_none_match)
        except ConditionalWriteLost as lost:
            current = lost.current = self.get_with_etag(key)
            if current is not None and current[0] == body:
                return current[1]
            raise

    def get(self, key: str, *, byte_range: str | None = None) -> bytes | None:
        """The object's bytes, or None if it does not exist."""
        got = self.get_with_etag(key, byte_range=byte_range)
        return None if got is None else got[0]

    def get_with_etag(self, key: str, *, byte_range: str | None = None) -> tuple[bytes, str] | None:
        kwargs: dict[str, Any] = {"Bucket": self.location.bucket, "Key": key}
        if byte_range:
            kwargs["Range"] = byte_range
        try:
            resp = self.client.get_object(**kwargs)
        except ClientError as exc:
            if is_not_found(exc):
                return None
            raise
        return resp["Body"].read(), str(resp["ETag"])

    def get_json(self, key: str) -> dict | None:
        data = self.get(key)
        if data is None:
            return None
        try:
            doc = json.loads(data)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None

    def put_json(self, key: str, doc: dict) -> str:
        return self.put(key, json_bytes(doc))

    # (Within this class, "list" is this method: annotations below spell the built-in builtins.list.)
    def list(self, prefix: str, *, start_after: str | None = None, delimiter: str | None = None) -> Iterator[dict]:
        """Every object (or common prefix, as ``{"Prefix": ...}``) under ``prefix``, in key order."""
        kwargs: dict[str, Any] = {"Bucket": self.location.bucket, "Prefix": prefix}
        if start_after:
            kwargs["StartAfter"] = start_after
        if delimiter:
            kwargs["Delimiter"] = delimiter
        for page in self.client.get_paginator("list_objects_v2").paginate(**kwargs):
            yield from page.get("CommonPrefixes", [])
            yield from page.get("Contents", [])

    # -- objects ----------------------------------------------------------------------------
    def put_blob(self, sha256: str, body: bytes) -> None:
        self.put(self.object_key(sha256), body)

    def get_blob(self, sha256: str) -> bytes:
        """An object's bytes, verified against its name."""
        data = self.get(self.object_key(sha256))
        if data is None:
            raise CorruptObjectError(f"object {sha256} is missing")
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise CorruptObjectError(f"object {sha256} is corrupt (its bytes hash to {actual})")
        return data

    def put_pack(self, sha256: str, body: bytes) -> None:
        """Store a pack under its own hash (rewriting an existing pack writes the same bytes)."""
        self.put(self.pack_key(sha256), body)

    def get_pack_range(self, sha256: str, start: int, length: int) -> bytes:
        """``length`` bytes of a pack from ``start`` (one ranged GET); unverified, the caller checks
        every file in it against its own sha256."""
        data = self.get(self.pack_key(sha256), byte_range=f"bytes={start}-{start + length - 1}")
        if data is None:
            raise CorruptObjectError(f"pack {sha256} is missing")
        if len(data) != length:
            raise CorruptObjectError(f"pack {sha256} is shorter than its manifest says ({len(data)} of {length} bytes)")
        return data

    def put_content(self, key: str, body: bytes) -> bool:
        """Store content-addressed bytes so that their date is now (what gc judges them by): True if
        the key was new; False if it existed (bytes an older checkpoint held, which a gc may be about
        to delete) and was written again."""
        try:
            self.put(key, body, if_none_match=True)
            return True
        except ConditionalWriteLost:  # or our own write whose answer was lost: writing again is harmless
            self.put(key, body)
            return False

    def modified(self, key: str) -> float | None:
        """The key's LastModified (epoch seconds) by a HEAD now, None if it does not exist."""
        try:
            resp = self.client.head_object(Bucket=self.location.bucket, Key=key)
        except ClientError as exc:
            if is_not_found(exc):
                return None
            raise
        return float(resp["LastModified"].timestamp())

    def refresh(self, key: str) -> bool:
        """Give a stored object today's date without sending its bytes again (a copy onto itself);
        False if it does not exist any more."""
        try:
            self.client.copy_object(
                Bucket=self.location.bucket,
                Key=key,
                CopySource={"Bucket": self.location.bucket, "Key": key},
                MetadataDirective="REPLACE",
                **self.write_options.encryption_kwargs(),
            )
        except ClientError as exc:
            if is_not_found(exc):
                return False
            self.raise_refusal(exc, key)
            raise
        return True

    def delete_if_older(self, key: str, cutoff: float) -> bool | None:
        """Delete ``key`` only if its LastModified, read by a HEAD right now, is before ``cutoff``:
        gc's listing may be minutes old and a sync may have written the same content-addressed key
        again since (S3's conditional DeleteObject cannot tell: the same bytes have the same ETag,
        and If-Match-Last-Modified-Time is for directory buckets only). True: deleted; False: kept,
        written since; None: already gone."""
        modified = self.modified(key)
        if modified is None:
            return None
        if modified >= cutoff:
            return False
        self.client.delete_object(Bucket=self.location.bucket, Key=key)
        return True

    def delete_keys(self, keys: builtins.list[str]) -> int:
        """Delete keys, 1,000 per request (S3's limit); returns how many were deleted."""
        deleted = 0
        for i in range(0, len(keys), 1000):
            batch = keys[i : i + 1000]
            resp = self.client.delete_objects(
                Bucket=self.location.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
            )
            errors = resp.get("Errors") or []
            if errors:
                first = errors[0]
                raise ClientError(
                    {"Error": {"Code": first.get("Code", ""), "Message": first.get("Message", "")}}, "DeleteObjects"
                )
            deleted += len(batch)
        return deleted

    # -- manifests --------------------------------------------------------------------------
    def list_manifests(self, *, from_name: str | None = None) -> builtins.list[StoredManifest]:
        """Every manifest, newest first; with ``from_name``, only that one (if it exists) and newer:
        one LIST starting right before it, whatever the number of older manifests."""
        prefix = self.key(layout.MANIFESTS) + "/"
        found = []
        start_after = prefix + from_name.removesuffix(".json") if from_name else None
        for item in self.list(prefix, start_after=start_after):
            name = item["Key"][len(prefix) :]
            parsed = parse_manifest_name(name)
            if parsed:
                modified = item.get("LastModified")
                committed_at = modified.timestamp() if modified is not None else None
                found.append(StoredManifest(parsed[0], parsed[1], item["Key"], committed_at))
        return sorted(found, key=lambda m: (m.session, m.seq), reverse=True)

    def read_manifest(self, stored: StoredManifest) -> Manifest:
        data = self.get(stored.key)
        if data is None:
            raise ManifestError(f"manifest {stored.name} disappeared")
        manifest = parse_manifest(data, name=f"manifest {stored.name}")
        if (manifest.session, manifest.seq) != (stored.session, stored.seq):
            raise ManifestError(f"manifest {stored.name} claims to be {manifest.name}")
        return manifest

    def commit_manifest(self, manifest: Manifest) -> str:
        """Write a manifest once; it is never overwritten. Returns its key."""
        key = self.manifest_key(manifest.session, manifest.seq)
        if not self.put_once(key, manifest.to_json()):
            raise ConditionalWriteLost(f"manifest {manifest.name} already exists with other content")
        return key

    # -- the newest-checkpoint pointer --------------------------------------------------------
    def read_pointer(self) -> tuple[str, str] | None:
        """(manifest name, ETag) of ``latest.json``, or None when absent or unreadable.

        A pointer in a newer format than this agent knows raises UnsupportedFormatError."""
        got = self.get_with_etag(self.key(layout.POINTER))
        pointer = None if got is None else layout.Pointer.from_json(got[0])
        return None if got is None or pointer is None else (pointer.manifest, got[1])

    def advance_pointer(self, manifest: Manifest, etag: str | None) -> str:
        """Point ``latest.json`` at ``manifest`` unless it already names a newer one; returns the
        ETag to pass next time. Conditional (If-Match on the ETag we last saw, If-None-Match when
        there was none), so a stale writer never moves the pointer back."""
        ours = layout.Pointer(manifest.name, manifest.session, manifest.seq, manifest.created_at)
        body, key = ours.to_json(), self.key(layout.POINTER)
        for _ in range(3):
            try:
                return self.put(key, body, if_match=etag) if etag else self.put(key, body, if_none_match=True)
            except ConditionalWriteLost:
                got = self.get_with_etag(key)
                if got is None:
                    etag = None
                    continue
                theirs = layout.Pointer.from_json(got[0])
                if theirs is not None and theirs.order >= ours.order:
                    return got[1]
                etag = got[1]
        raise ConditionalWriteLost(f"{key} kept changing while it was being advanced")

    # -- sessions ---------------------------------------------------------------------------
    def list_sessions(self) -> builtins.list[int]:
        prefix = self.key(layout.SESSIONS) + "/"
        out = []
        for item in self.list(prefix, delimiter="/"):
            m = _SESSION_DIR.match(item.get("Prefix", "")[len(prefix) :])
            if m:
                out.append(int(m.group(1)))
        return sorted(out)

    # -- typed records (ledger/records.py) ---------------------------------------------------
    def read_record(self, cls: type[R], session: int | None = None) -> R | None:
        """The run's (or session's) ``cls`` document, None when absent. A document in a newer format
        raises UnsupportedFormatError, one that does not parse a RecordError naming its key."""
        key = self.key(records.record_key(cls, session))
        data = self.get(key)
        return None if data is None else cls.from_json(data, name=key)

    def write_record(
        self, record: records.Record, session: int | None = None, *, if_match: str | None = None, create: bool = False
    ) -> str:
        """Write ``record`` with the condition its key's rule says (``layout.RULES``), the one way a
        record is written: ``once`` creates it, ``cas`` replaces the ETag ``if_match`` (None: creates it),
        ``overwrite`` just writes, or only creates it with ``create`` (a first write that another writer
        may have made first). A conditional write that finds other bytes there raises
        ConditionalWriteLost; one that finds exactly its own (its retry after a lost answer) is ours.
        Returns the stored object's ETag."""
        key = self.key(records.record_key(type(record), session))
        body, how = record.to_json(), layout.rule(type(record).KEY).how
        if how == "once" or create or (how == "cas" and not if_match):
            return self.put_adopting_own(key, body, if_none_match=True)
        if how == "cas":
            return self.put_adopting_own(key, body, if_match=if_match)
        return self.put(key, body)

    def read_launch(self, session: int) -> records.Launch | None:
        return self.read_record(records.Launch, session)

    def read_closed(self, session: int) -> records.Closed | None:
        return self.read_record(records.Closed, session)

    def read_final(self) -> records.Final | None:
        return self.read_record(records.Final)

    def read_spec(self) -> records.Spec | None:
        return self.read_record(records.Spec)

    # -- logs -------------------------------------------------------------------------------
    def append_log(self, session: int, offset: int, data: bytes) -> None:
        self.put(self.log_key(session, offset), data)

    def log_listing(self, session: int, offset: int) -> tuple[str, str | None]:
        """(prefix, start_after) of the LIST that finds every chunk able to hold bytes from ``offset``."""
        prefix = self.key(layout.logs(session)) + "/"
        return prefix, (self.log_key(session, offset - MAX_LOG_CHUNK) if offset >= MAX_LOG_CHUNK else None)

    def read_log(self, session: int, offset: int = 0, *, limit: int = MAX_LOG_CHUNK) -> tuple[bytes, int]:
        """Log bytes from ``offset`` (at most about ``limit``), and the offset to read from next."""
        prefix, start_after = self.log_listing(session, offset)
        listing = [(item["Key"], int(item["Size"])) for item in self.list(prefix, start_after=start_after)]
        out = bytearray()
        for key, byte_range in plan_log_reads(listing, prefix, offset, limit):
            data = self.get(key, byte_range=byte_range)
            if data is None:
                break
            out += data
        return bytes(out), offset + len(out)


def plan_log_reads(
    listing: list[tuple[str, int]], prefix: str, offset: int, limit: int
) -> list[tuple[str, str | None]]:
    """Which chunks (key, Range header) to fetch, in order, for the bytes from ``offset``.

    Chunk objects are named by the byte offset they start at; reading stops at a gap (the chunk
    covering the next byte is not written yet) and once about ``limit`` bytes are planned.
    """
    chunks = sorted(
        (int(key[len(prefix) : -4]), size, key)
        for key, size in listing
        if key.startswith(prefix) and key.endswith(".log") and key[len(prefix) : -4].isdigit()
    )
    plan: list[tuple[str, str | None]] = []
    position = offset
    for start, size, key in chunks:
        if start + size <= position:
            continue
        if start > position or position - offset >= limit:
            break
        skip = position - start
        plan.append((key, f"bytes={skip}-" if skip else None))
        position = start + size
    return plan


def json_bytes(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
