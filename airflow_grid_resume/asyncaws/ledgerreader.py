"""The few ledger reads (and writes) a trigger makes, on aiobotocore: the run watch's records, output and lease,
and the launcher's attempt record. Objects go through the signed fast path (``fastobjects``)."""

from __future__ import annotations

import contextlib
import logging
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from airflow_grid_resume.asyncaws.fastobjects import FastObjects, ObjectRead
from airflow_grid_resume.ledger import layout, records
from airflow_grid_resume.ledger.errors import ManifestError, UnsupportedFormatError
from airflow_grid_resume.ledger.store import MAX_LOG_CHUNK, RunLedger, plan_log_reads
from airflow_grid_resume.ledger.uri import parse_s3_uri
from airflow_grid_resume.ledger.writeoptions import S3WriteOptions
from airflow_grid_resume.watch.cadence import ChunkSchedule

R = TypeVar("R", bound=records.Record)
log = logging.getLogger(__name__)


class AsyncLedgerReader:
    """The few ledger reads (and the one write) a run trigger needs, on aiobotocore."""

    def __init__(
        self,
        client: Any,
        run_uri: str,
        session: int,
        schedule: ChunkSchedule | None = None,
        write_options: S3WriteOptions | None = None,
    ) -> None:
        self.client = client
        self.objects = FastObjects(client, write_options)
        self.keys = RunLedger(None, parse_s3_uri(run_uri), write_options)
        self.bucket = self.keys.location.bucket
        self.session = session
        self.outcome_listed = False  # did the last read_log's LIST show outcome.json?
        self._outcome_key = self.keys.key(layout.outcome(session))
        self._chunk_end = 0  # an offset where a log chunk is known to end (the next one starts there)
        self.schedule = schedule  # the watch's reads; its period is the agent's upload interval

    async def _fetch(self, key: str, byte_range: str | None = None) -> ObjectRead | None:
        """An object's bytes and what its answer said of it, or None when it does not exist (yet)."""
        return await self.objects.get(self.bucket, key, byte_range)

    async def get(self, key: str, byte_range: str | None = None) -> bytes | None:
        found = await self._fetch(key, byte_range)
        return None if found is None else found.data

    async def _get_chunk(self, key: str) -> tuple[bytes, float | None] | None:
        """A whole object and its age in seconds by S3's own clock (Date minus Last-Modified, so no
        clock skew between hosts); None if it does not exist (yet)."""
        found = await self._fetch(key)
        if found is None:
            return None
        age = None
        if found.date and found.last_modified is not None:
            with contextlib.suppress(TypeError, ValueError):
                age = (parsedate_to_datetime(found.date) - found.last_modified).total_seconds()
        return found.data, age

    async def get_record(self, cls: type[R]) -> R | None:
        """The session's (or the run's) ``cls`` document, None when absent. One the agent rewrites
        (the heartbeat) counts as absent while unreadable; one written once (the outcome) never
        becomes readable, so it raises ManifestError. One in a newer format than this code knows
        raises UnsupportedFormatError."""
        key = self.keys.key(records.record_key(cls, self.session))
        data = await self.get(key)
        if data is None:
            return None
        try:
            return cls.from_json(data, name=key)
        except ManifestError as exc:
            if layout.rule(cls.KEY).how == "once":
                raise
            log.warning("%s is unreadable, counted as absent: %s", key, exc)
            return None

    async def exists(self, cls: type[records.Record]) -> bool:
        """Whether the session's ``cls`` document was written (readable or not)."""
        return await self.get(self.keys.key(records.record_key(cls, self.session))) is not None

    async def put_record(self, record: records.Record) -> None:
        """Write one of the session's records that the Airflow side overwrites (``watch.json``)."""
        assert layout.rule(record.KEY).how == "overwrite", record.KEY
        key = self.keys.key(records.record_key(type(record), self.session))
        await self.objects.put(self.bucket, key, record.to_json())

    async def read_lease(self) -> records.Lease | None:
        """The run's lease, None when absent or unreadable (no evidence of a holder)."""
        try:
            found = await self._fetch(self.keys.key(layout.LEASE))
            return None if found is None else records.Lease.from_json(found.data)
        except (ClientError, ManifestError, UnsupportedFormatError):
            return None

    async def release_dead_lease(self, instance_id: str) -> bool:
        """Release the run's lease if the agent of this session (now known dead) still holds it.

        A killed agent cannot release its lease; the next session's agent would be refused until
        the lease expires. The instance being terminated proves the holder is gone; the write is
        conditional on the ETag read, so a lease taken meanwhile by a live agent is never touched
        (``records.Lease.released_for_dead``).
        """
        key = self.keys.key(layout.LEASE)
        try:
            found = await self._fetch(key)
            if found is None:
                return False
            released = records.Lease.from_json(found.data, name=key).released_for_dead(self.session, instance_id)
        except (ClientError, ManifestError, UnsupportedFormatError):
            return False
        if released is None:
            return False
        try:
            await self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=released.to_json(),
                IfMatch=found.etag,
                **self.keys.write_options.put_kwargs(),
            )
        except ClientError:
            return False
        return True

    async def read_log(self, offset: int, limit: int = MAX_LOG_CHUNK) -> tuple[bytes, int]:
        """Bytes of the session's output from ``offset``; the same plan as ``RunLedger.read_log``.

        Chunks are contiguous and named by the offset they start at, so once a read ended at a
        chunk's end the next chunk's key is known: one GET, hit or miss (the cheapest request S3
        has; a LIST costs as much as a PUT). A chunk already older than the agent's upload interval
        means the one after it is probably there too (catch up now, not one chunk per read). Only
        an offset inside a chunk (a watch resumed from ``watch.json``) needs a LIST of the session's
        prefix; ``outcome.json`` sorts after every log chunk, so that LIST also tells whether the
        session has ended (``outcome_listed``).
        """
        self.outcome_listed = False
        if offset == self._chunk_end:
            out = bytearray()
            while len(out) < limit:
                found = await self._get_chunk(self.keys.log_key(self.session, offset + len(out)))
                if found is None:
                    break
                data, age = found
                out += data
                if age is None or self.schedule is None or age < self.schedule.period:
                    break
            self._chunk_end = offset + len(out)
            return bytes(out), offset + len(out)
        prefix, start_after = self.keys.log_listing(self.session, offset)
        session_prefix = self.keys.session_key(self.session, "") + "/"
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": session_prefix}
        if start_after:
            kwargs["StartAfter"] = start_after
        listing = []
        async for page in self.client.get_paginator("list_objects_v2").paginate(**kwargs):
            listing += [(item["Key"], int(item["Size"])) for item in page.get("Contents", [])]
        self.outcome_listed = any(key == self._outcome_key for key, _ in listing)
        out = bytearray()
        for key, byte_range in plan_log_reads(listing, prefix, offset, limit):
            chunk = await self.get(key, byte_range)
            if chunk is None:
                break
            out += chunk
            self._chunk_end = offset + len(out)  # whole chunks (or a chunk's tail) are read: a chunk ends here
        return bytes(out), offset + len(out)
