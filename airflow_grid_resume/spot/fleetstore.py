"""The fleet record in S3 (``<artifacts prefix>/fleet/pools.json``): read it, and add observations to it with
conditional writes, so that any number of workers and triggerers writing at once lose nothing.

A write reads the record and its ETag, merges the observations (``fleetrecord.apply``, pure) and puts it back
with ``If-Match: <ETag>`` (``If-None-Match: *`` when there is none yet). S3 answers 412 (409 when two conditional
writes race) to the loser, which reads again and merges again, up to ``MAX_TRIES`` times with a jittered wait.
The record is a convenience for the launch order: a failure to read or write it is logged, never fatal.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from airflow_grid_resume.ledger.s3client import is_not_found
from airflow_grid_resume.ledger.shareddoc import read_json, update_json
from airflow_grid_resume.ledger.uri import parse_s3_uri
from airflow_grid_resume.ledger.writeoptions import S3WriteOptions
from airflow_grid_resume.spot import fleetrecord
from airflow_grid_resume.spot.fleetrecord import Observation

FLEET_KEY = "fleet/pools.json"
MAX_TRIES = 12

log = logging.getLogger(__name__)


def fleet_uri(artifacts_uri: str) -> str:
    """Where the fleet record of a deployment lives: next to its runs."""
    return f"{artifacts_uri.rstrip('/')}/{FLEET_KEY}"


def _where(uri: str) -> tuple[str, str]:
    location = parse_s3_uri(uri, what="the fleet record")
    return location.bucket, location.prefix.rstrip("/")


def read(client: Any, uri: str) -> tuple[dict | None, str | None]:
    """The record and its ETag; (None, None) when there is none yet."""
    return read_json(client, *_where(uri))


def add(
    client: Any,
    uri: str,
    observations: Sequence[Observation],
    *,
    rng: random.Random | None = None,
    write: S3WriteOptions | None = None,
    lasted_hours: float | None = None,
) -> dict | None:
    """Merge ``observations`` into the record at ``uri`` with conditional writes carrying the bucket's ``write``
    options (encryption, checksum); the record written, or None if it could not be (logged). ``lasted_hours``:
    as ``fleetrecord.apply``'s (given with session ends)."""
    if not observations:
        return None

    def merge(current: dict | None) -> dict:
        merged = fleetrecord.apply(current, observations, lasted_hours=lasted_hours)
        merged["updated_at"] = round(time.time(), 3)
        return merged

    put = (write or S3WriteOptions()).put_kwargs()
    return update_json(client, *_where(uri), merge, what="the fleet record", put_kwargs=put, tries=MAX_TRIES, rng=rng)


async def a_read(client: Any, uri: str | None) -> dict | None:
    """The record on aiobotocore, for the triggers; None when absent or unreadable (logged)."""
    if not uri:
        return None
    bucket, key = _where(uri)
    try:
        response = await client.get_object(Bucket=bucket, Key=key)
        async with response["Body"] as body:
            data = await body.read()
        return dict(json.loads(data))
    except ClientError as exc:
        if not is_not_found(exc):
            log.warning("could not read the fleet record %s: %s", uri, exc)
    except (BotoCoreError, ValueError, OSError) as exc:
        log.warning("could not read the fleet record %s: %s", uri, exc)
    return None


__all__ = ["FLEET_KEY", "a_read", "add", "fleet_uri", "read"]
