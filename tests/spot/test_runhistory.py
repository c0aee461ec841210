"""spot/runhistory.py: a session's end reaches the fleet record with its lasting spell counted, without servers
(an in-memory S3 stand-in: the conditional writes against the local spot cloud are tests/spot/test_fleetstore.py's)."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from airflow_grid_resume.ledger.records import Launch
from airflow_grid_resume.ledger.writeoptions import S3WriteOptions
from airflow_grid_resume.run.deadline import LASTED_HOURS
from airflow_grid_resume.spot.fleetrecord import pool_stats
from airflow_grid_resume.spot.runhistory import record_session_end

FLEET = "s3://bucket/grid-runs/fleet/pools.json"
POOL = "us-east-1|us-east-1a|g5.xlarge|spot"


class MemoryS3:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def get_object(self, *, Bucket: str, Key: str) -> dict:
        if Key not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": "none"}}, "GetObject")
        return {"Body": io.BytesIO(self.objects[Key]), "ETag": f'"{len(self.objects[Key])}"'}

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, **_: Any) -> dict:
        self.objects[Key] = Body
        return {"ETag": '"x"'}


class Ledger:
    """What ``record_session_end`` reads of a run's ledger: the session's launch record."""

    def __init__(self, launched_hours_ago: float) -> None:
        self.client = MemoryS3()
        self.location = "s3://bucket/grid-runs/run-1/"
        self.write_options = S3WriteOptions()
        self.launch = Launch(
            instance_id="i-1",
            instance_type="g5.xlarge",
            zone="us-east-1a",
            lifecycle="spot",
            launched_at=time.time() - launched_hours_ago * 3600,
        )

    def read_launch(self, session: int) -> Launch:
        return self.launch


@pytest.mark.parametrize(("hours", "status", "spells"), [(1.5, "interrupted", 1), (1.5, "succeeded", 0)])
def test_a_session_end_adds_its_time_past_half_an_hour_and_whether_it_ended_the_spell(
    hours: float, status: str, spells: int
) -> None:
    ledger = Ledger(launched_hours_ago=hours)
    record_session_end(FLEET, ledger, 1, status, lasted_hours=LASTED_HOURS)
    record = json.loads(ledger.client.objects["grid-runs/fleet/pools.json"])
    stats = pool_stats(record, POOL)
    assert stats.sessions == 1 and stats.lasting_spells == spells
    assert stats.lasting_hours == pytest.approx(hours - LASTED_HOURS, abs=0.01)
    # The same session's end again (a retried task): its id is the run's and the session's, so it counts once.
    record_session_end(FLEET, ledger, 1, status, lasted_hours=LASTED_HOURS)
    again = pool_stats(json.loads(ledger.client.objects["grid-runs/fleet/pools.json"]), POOL)
    assert (again.sessions, again.lasting_spells, again.lasting_hours) == (1, spells, stats.lasting_hours)
