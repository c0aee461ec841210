"""The tags this project puts on what it creates in AWS, and how their values are written.

Every instance carries the run, the session, the expiry and the market it was launched on; every live-output queue
the run and the expiry. ``grid-resume reap`` finds what outlived its run by these tags alone, so their names are a
contract with instances and queues already running: they never change.

A run is named twice: ``grid-resume:run-id`` is the run URI for people (cut at EC2's 256 characters, so two long
URIs that differ only at their end share it) and ``grid-resume:run-sha256`` the SHA-256 of the whole URI, which
no two runs share. Whether an instance belongs to a run is decided by the latter (ec2/identity.py).
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta, timezone

PREFIX = "grid-resume:"
RUN_TAG = PREFIX + "run-id"
RUN_DIGEST_TAG = PREFIX + "run-sha256"
SESSION_TAG = PREFIX + "session"
EXPIRES_TAG = PREFIX + "expires-at"
# The market (spot or on-demand) the instance was launched on; the tag's name predates the word.
MARKET_TAG = PREFIX + "lifecycle"
RESERVED_PREFIXES = ("aws:", PREFIX)

_TAG_SAFE = re.compile(r"[^A-Za-z0-9_.:/=+\-@ ]")


def run_tag_value(run_uri: str) -> str:
    """The run URI as a tag value: characters EC2 refuses replaced, at most 256 characters."""
    return _TAG_SAFE.sub("_", run_uri)[:256]


def run_digest(run_uri: str) -> str:
    """The run's identity on its instances: the SHA-256 of the whole run URI, 64 hex characters."""
    return hashlib.sha256(run_uri.encode()).hexdigest()


def run_tag_is_whole(value: str) -> bool:
    """Whether a ``grid-resume:run-id`` value of an instance launched without the digest tag can be the whole
    run URI: shorter than EC2's limit, so it was not cut (run URIs hold no character the tag replaces)."""
    return 0 < len(value) < 256


def run_tags(run_uri: str, session: int, expires_at: str, extra: dict[str, str]) -> dict[str, str]:
    """Tags on every instance: run identity, session and expiry, so nothing is unaccounted for."""
    return {
        **extra,
        RUN_TAG: run_tag_value(run_uri),
        RUN_DIGEST_TAG: run_digest(run_uri),
        SESSION_TAG: str(session),
        EXPIRES_TAG: expires_at,
        "Name": f"grid-resume {_TAG_SAFE.sub('_', run_uri)[:200]} #{session}",
    }


def expiry_tag(started_at: float, hours: float) -> str:
    """The expiry tag value: ``hours`` after ``started_at`` (epoch seconds), UTC."""
    return (datetime.fromtimestamp(started_at, timezone.utc) + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")
