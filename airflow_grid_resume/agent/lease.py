"""One live agent per run: a lease object written with conditional requests.

Acquire creates ``lease.json`` with If-None-Match; if it exists and is released or expired it is
taken over with If-Match on the ETag that was read, so of two racing agents exactly one wins.
Renewals use If-Match on our own last ETag: a lost renewal means someone broke our lease. Every one
of these writes reads the key back after a 412 and adopts it when it holds exactly our bytes: that
412 was the retry of our own write whose answer was lost.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from airflow_grid_resume.agent import layout
from airflow_grid_resume.agent.errors import LeaseHeldError
from airflow_grid_resume.agent.ledger import ConditionalWriteLost, RunLedger, json_bytes

log = logging.getLogger(__name__)


@dataclass
class Lease:
    """The lease this agent holds; ``etag`` is what the next renewal must match."""

    ledger: RunLedger
    holder: dict
    etag: str
    ttl: float

    @property
    def key(self) -> str:
        return self.ledger.key(layout.LEASE)

    def renew(self, now: float | None = None, **fields: object) -> None:
        """Extend the lease; raises ConditionalWriteLost if another agent took it."""
        now = time.time() if now is None else now
        self.holder.update(fields, renewed_at=now, expires_at=now + self.ttl)
        self.etag = write_adopting_own(self.ledger, self.key, json_bytes(self.holder), if_match=self.etag)

    def release(self) -> None:
        """Mark the lease released so the next session can start at once."""
        self.holder.update(released=True, renewed_at=time.time())
        try:
            self.etag = write_adopting_own(self.ledger, self.key, json_bytes(self.holder), if_match=self.etag)
        except ConditionalWriteLost:
            log.warning("the run lease was taken by another agent before release")


def write_adopting_own(
    ledger: RunLedger, key: str, body: bytes, *, if_match: str | None = None, if_none_match: bool = False
) -> str:
    """A conditional write that survives its own lost answer: botocore retries a PUT whose response
    was lost, the retry sees 412 because the first attempt did succeed, and reading the key back finds
    exactly our bytes. Then it is ours (its ETag is returned); anything else is a real conflict."""
    try:
        return ledger.put(key, body, if_match=if_match, if_none_match=if_none_match)
    except ConditionalWriteLost:
        current = ledger.get_with_etag(key)
        if current is not None and current[0] == body:
            return current[1]
        raise


def describe_holder(doc: dict, now: float) -> str:
    """One line about who holds a lease, for the refusal message."""
    renewed = now - float(doc.get("renewed_at", now))
    expires = float(doc.get("expires_at", now)) - now
    who = ", ".join(f"{k} {doc[k]}" for k in ("session", "instance_id", "host", "pid") if doc.get(k) not in (None, ""))
    return f"{who}; last renewed {renewed:.0f} s ago, expires in {max(expires, 0):.0f} s"


def acquire_lease(ledger: RunLedger, holder: dict, *, ttl: float, now: float | None = None) -> Lease:
    """Take the run's lease or raise LeaseHeldError naming the live holder."""
    now = time.time() if now is None else now
    doc = {**holder, "acquired_at": now, "renewed_at": now, "expires_at": now + ttl, "released": False}
    key = ledger.key(layout.LEASE)
    try:
        return Lease(ledger, doc, write_adopting_own(ledger, key, json_bytes(doc), if_none_match=True), ttl)
    except ConditionalWriteLost:
        pass
    current = ledger.get_with_etag(key)
    if current is None:  # released and deleted between our two calls: try once more
        return Lease(ledger, doc, write_adopting_own(ledger, key, json_bytes(doc), if_none_match=True), ttl)
    body, etag = current
    try:
        existing = json.loads(body)
    except ValueError:
        existing = {}
    if isinstance(existing, dict) and not existing.get("released") and float(existing.get("expires_at", 0)) > now:
        raise LeaseHeldError(
            f"another agent is already running {ledger.location} ({describe_holder(existing, now)}). "
            "Two agents on one run would overwrite each other's checkpoints; this one exits without "
            "touching the run. If that agent is gone, wait for its lease to expire."
        )
    try:
        return Lease(ledger, doc, write_adopting_own(ledger, key, json_bytes(doc), if_match=etag), ttl)
    except ConditionalWriteLost as exc:
        raise LeaseHeldError(f"another agent took the lease of {ledger.location} at the same moment") from exc
