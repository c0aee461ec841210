"""spot/runhistory.py: a session's end reaches the fleet record in the local spot cloud's S3 (moto's server over
HTTP) with its lasting spell counted."""

from __future__ import annotations

import time

import pytest

from airflow_grid_resume.ledger.records import Launch
from airflow_grid_resume.ledger.store import RunLedger
from airflow_grid_resume.run.deadline import LASTED_HOURS
from airflow_grid_resume.spot import fleetstore
from airflow_grid_resume.spot.fleetrecord import pool_stats
from airflow_grid_resume.spot.runhistory import record_session_end

POOL = "us-east-1|us-east-1a|g5.xlarge|spot"


@pytest.mark.parametrize(("hours", "status", "spells"), [(1.5, "interrupted", 1), (1.5, "succeeded", 0)])
def test_a_session_end_adds_its_time_past_half_an_hour_and_whether_it_ended_the_spell(
    ledger: RunLedger, bucket: str, hours: float, status: str, spells: int
) -> None:
    launch = Launch(
        instance_id="i-1",
        instance_type="g5.xlarge",
        zone="us-east-1a",
        lifecycle="spot",
        launched_at=time.time() - hours * 3600,
    )
    ledger.write_record(launch, 1)
    fleet = fleetstore.fleet_uri(f"s3://{bucket}/grid-runs/")
    record_session_end(fleet, ledger, 1, status, lasted_hours=LASTED_HOURS)
    stats = pool_stats(fleetstore.read(ledger.client, fleet)[0], POOL)
    assert stats.sessions == 1 and stats.lasting_spells == spells
    assert stats.lasting_hours == pytest.approx(hours - LASTED_HOURS, abs=0.01)
    # The same session's end again (a retried task): its id is the run's and the session's, so it counts once.
    record_session_end(fleet, ledger, 1, status, lasted_hours=LASTED_HOURS)
    again = pool_stats(fleetstore.read(ledger.client, fleet)[0], POOL)
    assert (again.sessions, again.lasting_spells, again.lasting_hours) == (1, spells, stats.lasting_hours)
