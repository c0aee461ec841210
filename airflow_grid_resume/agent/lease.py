"""One live agent per run: a lease object written with conditional requests.

Acquire creates ``lease.json`` with If-None-Match; if it exists and is released or expired it is
taken over with If-Match on the ETag that was read, so of two racing agents exactly one wins.
Renewals use If-Match on our own last ETag: a lost renewal means someone broke our lease. Every one
of these writes is ``RunLedger.write_record``'s, which reads the key back after a 412 and adopts it
when it holds exactly our bytes: that 412 was the retry of our own write whose answer was lost.
A write whose every answer was lost raises; the next write's 412 then finds that write's bytes, and
the lease is still ours (``Lease.unsure``).

A lease whose holder has ended is taken over even before it expires (``takeover_reason``): its
session's outcome exists (the instance was reclaimed after the outcome was written but before the
lease was released), the Airflow side released it (the instance is gone), or its renewals stopped
past the TTL.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from airflow_grid_resume.ledger import layout, records
from airflow_grid_resume.ledger.errors import LeaseHeldError, ManifestError
from airflow_grid_resume.ledger.store import ConditionalWriteLost, RunLedger

log = logging.getLogger(__name__)

MAX_UNSURE = 8  # writes that raised in a row, kept to recognise one that landed with all its answers lost


@dataclass
class Lease:
    """The lease this agent holds: ``record`` as last written, ``etag`` what the next write must match."""

    ledger: RunLedger
    record: records.Lease
    etag: str
    ttl: float
    unsure: list[bytes] = field(default_factory=list)  # writes that raised since the last confirmed one

    def renew(self, now: float | None = None, **fields: Any) -> None:
        """Extend the lease; raises ConditionalWriteLost if another agent took it."""
        now = time.time() if now is None else now
        self._write(dataclasses.replace(self.record, **fields, renewed_at=now, expires_at=now + self.ttl))

    def release(self) -> None:
        """Mark the lease released so the next session can start at once."""
        try:
            self._write(dataclasses.replace(self.record, released=True, renewed_at=time.time()))
        except ConditionalWriteLost:
            log.warning("the run lease was taken by another agent before release")

    def _write(self, record: records.Lease) -> None:
        try:
            etag = self._put(record)
        except ConditionalWriteLost:
            raise
        except Exception:  # it may have landed with every answer lost: a later 412 may be this write
            self.unsure = [*self.unsure[-(MAX_UNSURE - 1) :], record.to_json()]
            raise
        self.etag, self.record, self.unsure = etag, record, []

    def _put(self, record: records.Lease) -> str:
        try:
            return self.ledger.write_record(record, if_match=self.etag)
        except ConditionalWriteLost as lost:
            # Our ETag is stale: was the lease last written by one of our own writes that raised?
            # Only its exact bytes (our agent_id, our renewed_at) prove it; anything else is a conflict.
            current = lost.current  # read back by the write (a lease is always written conditionally)
            if current is None or current[0] not in self.unsure:
                raise
            return self.ledger.write_record(record, if_match=current[1])


def describe_holder(lease: records.Lease, now: float) -> str:
    """One line about who holds a lease, for the refusal message."""
    renewed = now - (now if lease.renewed_at is None else lease.renewed_at)
    fields = (("session", lease.session), ("instance_id", lease.instance_id), ("host", lease.host), ("pid", lease.pid))
    who = ", ".join(f"{k} {v}" for k, v in fields if v not in (None, ""))
    return f"{who}; last renewed {renewed:.0f} s ago, expires in {max(lease.expires_at - now, 0):.0f} s"


def takeover_reason(existing: records.Lease | None, now: float, *, holder_ended: bool) -> str | None:
    """Why the lease ``existing`` may be taken over (None: its holder is alive, refuse). ``holder_ended``:
    the holder's session has written its outcome, so it syncs nothing more even if its lease was never
    released (an instance reclaimed between the two)."""
    if existing is None:
        return "no readable lease"
    if existing.released:
        return f"released ({existing.released_by})" if existing.released_by else "released"
    if existing.expires_at <= now:
        return f"expired {now - existing.expires_at:.0f} s ago (its renewals stopped)"
    if holder_ended and existing.session is not None:
        return f"session {existing.session} has ended (its outcome is written) without releasing it"
    return None


def _holder_ended(ledger: RunLedger, lease: records.Lease | None) -> bool:
    """Whether the holder's session has recorded its outcome (a GET; False when unknown)."""
    if lease is None or lease.session is None or lease.released or lease.expires_at <= time.time():
        return False
    try:
        return ledger.get(ledger.key(layout.outcome(lease.session))) is not None
    except Exception as exc:  # unknown: the lease stands
        log.warning("could not read session %s's outcome: %s", lease.session, exc)
        return False


def acquire_lease(ledger: RunLedger, holder: records.Lease, *, ttl: float, now: float | None = None) -> Lease:
    """Take the run's lease for ``holder`` (who it is: agent, host, pid, instance) or raise
    LeaseHeldError naming the live holder. A lease in a newer format than this agent knows is
    refused (UnsupportedFormatError), never taken over."""
    now = time.time() if now is None else now
    ours = dataclasses.replace(holder, acquired_at=now, renewed_at=now, expires_at=now + ttl, released=False)
    try:
        return Lease(ledger, ours, ledger.write_record(ours), ttl)
    except ConditionalWriteLost as lost:
        current = lost.current  # what the write read back after its 412
    if current is None:  # released and deleted between our two calls: try once more
        return Lease(ledger, ours, ledger.write_record(ours), ttl)
    body, etag = current
    try:
        existing: records.Lease | None = records.Lease.from_json(body)
    except ManifestError:  # not a lease at all: nobody holds it
        existing = None
    why = takeover_reason(existing, now, holder_ended=_holder_ended(ledger, existing))
    if why is None:
        assert existing is not None
        raise LeaseHeldError(
            f"another agent is already running {ledger.location} ({describe_holder(existing, now)}). "
            "Two agents on one run would overwrite each other's checkpoints; this one exits without "
            "touching the run. If that agent is gone, wait for its lease to expire.",
            holder_session=existing.session,
        )
    if existing is not None:
        log.info("taking over the run's lease from %s: %s", describe_holder(existing, now), why)
    try:
        return Lease(ledger, ours, ledger.write_record(ours, if_match=etag), ttl)
    except ConditionalWriteLost as exc:
        raise LeaseHeldError(f"another agent took the lease of {ledger.location} at the same moment") from exc
