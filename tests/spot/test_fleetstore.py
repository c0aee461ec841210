"""spot/fleetstore.py: the fleet record in the local spot cloud's S3, written by several writers at once."""

from __future__ import annotations

import asyncio
import threading

import boto3
import pytest
from aiobotocore.session import get_session

from airflow_grid_resume.emulator.client import LocalSpotCloud
from airflow_grid_resume.ledger.s3client import is_precondition_failed
from airflow_grid_resume.spot import fleetrecord, fleetstore
from airflow_grid_resume.spot.fleetrecord import Observation
from tests.conftest import cloud_bucket

WRITERS = 4
ADDS = 12


@pytest.fixture
def fleet(cloud: LocalSpotCloud, monkeypatch: pytest.MonkeyPatch) -> str:
    return fleetstore.fleet_uri(f"s3://{cloud_bucket(cloud, monkeypatch, 'fleet')}/grid-runs/")


class CountingClient:
    """A real boto3 S3 client that counts the conditional writes S3 refused (to prove the writers raced)."""

    def __init__(self) -> None:
        self.inner = boto3.client("s3")
        self.refused = 0

    def get_object(self, **kw):
        return self.inner.get_object(**kw)

    def put_object(self, **kw):
        try:
            return self.inner.put_object(**kw)
        except Exception as exc:
            if is_precondition_failed(exc):
                self.refused += 1
            raise


def test_writers_at_once_lose_nothing(fleet: str) -> None:
    clients = [CountingClient() for _ in range(WRITERS)]
    barrier = threading.Barrier(WRITERS)
    written: list[bool] = []

    def writer(n: int) -> None:
        barrier.wait()
        for i in range(ADDS):
            obs = [
                Observation("us-east-1|us-east-1a|g5.xlarge|spot", fleetrecord.NO_CAPACITY, float(i), oid=f"{n}-{i}"),
                Observation(f"us-west-2|us-west-2{'ab'[n % 2]}|g5.xlarge|spot", fleetrecord.CAPACITY, float(i)),
            ]
            written.append(fleetstore.add(clients[n], fleet, obs) is not None)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(written) and len(written) == WRITERS * ADDS
    record, etag = fleetstore.read(boto3.client("s3"), fleet)
    assert record is not None and etag
    pools = record["pools"]
    assert pools["us-east-1|us-east-1a|g5.xlarge|spot"]["no_capacity"] == WRITERS * ADDS
    assert pools["us-west-2|us-west-2a|g5.xlarge|spot"]["capacity"] == WRITERS * ADDS // 2
    assert pools["us-west-2|us-west-2b|g5.xlarge|spot"]["capacity"] == WRITERS * ADDS // 2
    assert sum(c.refused for c in clients) > 0  # the writers did collide, and the conditions caught it


def test_the_trigger_side_reads_it(fleet: str) -> None:
    obs = [Observation("us-east-1|us-east-1a|g5.xlarge|spot", fleetrecord.INTERRUPTED, 1.0, 7200.0)]
    fleetstore.add(boto3.client("s3"), fleet, obs)

    async def read() -> dict | None:
        async with get_session().create_client("s3") as s3:
            return await fleetstore.a_read(s3, fleet)

    record = asyncio.run(read())
    assert fleetrecord.pool_stats(record, "us-east-1|us-east-1a|g5.xlarge|spot").mean_up_hours == 2.0
    missing = fleet.replace("pools.json", "none.json")

    async def read_missing() -> dict | None:
        async with get_session().create_client("s3") as s3:
            return await fleetstore.a_read(s3, missing)

    assert asyncio.run(read_missing()) is None
