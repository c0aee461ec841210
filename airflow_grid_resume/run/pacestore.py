"""The task's pace record in S3 (``<artifacts prefix>/<dag_id>/<task_id>/pace.json``, ``pace-<map index>.json``
for a mapped task's instance): what its earlier runs measured, the prior of a ``deadline=`` run's pace
(``run/pace.py``). A convenience like the fleet record: failures to read or write it are logged, never fatal."""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from airflow_grid_resume.ledger.shareddoc import read_json, update_json
from airflow_grid_resume.ledger.uri import parse_s3_uri
from airflow_grid_resume.ledger.writeoptions import S3WriteOptions
from airflow_grid_resume.run.keys import task_key
from airflow_grid_resume.run.pace import Pace, PriorPace, prior_pace, with_run

# Conditional writes lost to another run of the same task finishing at the same moment, before giving up.
MAX_TRIES = 6

log = logging.getLogger(__name__)


def pace_uri(artifacts_uri: str, dag_id: str, task_id: str, map_index: int = -1) -> str:
    """Where the pace record of one task (one mapped instance of it) lives: beside its runs."""
    name = "pace.json" if map_index < 0 else f"pace-{map_index}.json"
    return f"{artifacts_uri.rstrip('/')}/{task_key(dag_id, task_id)}/{name}"


def read_prior(client: Any, uri: str | None) -> PriorPace | None:
    """What earlier runs of the task measured; None without a record (or when it cannot be read: logged)."""
    if not uri:
        return None
    location = parse_s3_uri(uri, what="the pace record")
    try:
        record, _ = read_json(client, location.bucket, location.prefix)
    except (ClientError, BotoCoreError, ValueError) as exc:
        log.warning("could not read the task's pace record %s: %s", uri, exc)
        return None
    return prior_pace(record)


def record_run(
    client: Any, uri: str | None, run: str, pace: Pace, at: float, write: S3WriteOptions | None = None
) -> bool:
    """Add a finished run's pace to the record (conditional writes: two runs ending at once both land); whether
    it was written (False also when the run measured nothing to keep)."""
    if not uri:
        return False
    location = parse_s3_uri(uri, what="the pace record")
    put = (write or S3WriteOptions()).put_kwargs()
    written = update_json(
        client,
        location.bucket,
        location.prefix,
        lambda current: with_run(current, run, pace, at),
        what="the task's pace record",
        put_kwargs=put,
        tries=MAX_TRIES,
    )
    return written is not None


__all__ = ["pace_uri", "read_prior", "record_run"]
