"""The capacity trigger against the local spot cloud: offerings first, Unsupported skips a pair, instance
requirements resolved by EC2's own call, and the pool that just reclaimed the run comes last."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import boto3
import pytest

from airflow_grid_resume.ec2.launch import SPOT, LaunchSpec, Pair
from airflow_grid_resume.ec2.tags import RUN_TAG, run_tag_value
from airflow_grid_resume.emulator.client import LocalSpotCloud
from airflow_grid_resume.ledger.records import Closed, Launch
from airflow_grid_resume.ledger.s3client import make_s3_client
from airflow_grid_resume.ledger.store import RunLedger
from airflow_grid_resume.ledger.uri import parse_s3_uri
from airflow_grid_resume.spot import catalog, fleetrecord, fleetstore
from airflow_grid_resume.spot.fleetrecord import Observation
from airflow_grid_resume.spot.runhistory import read_run_state
from airflow_grid_resume.triggers.capacity import SpotCapacityTrigger

AMI = "ami-03cf127a"
ONE_GPU_24G = {
    "VCpuCount": {"Min": 4},
    "MemoryMiB": {"Min": 8192},
    "AcceleratorCount": {"Min": 1, "Max": 1},
    "AcceleratorManufacturers": ["nvidia"],
    "AcceleratorTotalMemoryMiB": {"Min": 24 * 1024},
}


@pytest.fixture
def env(cloud: LocalSpotCloud, monkeypatch: pytest.MonkeyPatch) -> LocalSpotCloud:
    for key, value in cloud.aws_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    cloud.set_capacity("*", "*", available=True, market="all")
    cloud.reset_faults()
    cloud.reset_offerings()
    cloud.set_fabric(enabled=False)  # these tests are about where an instance goes, not what runs on it
    catalog.OFFERINGS.entries.clear()
    catalog.REQUIREMENTS.entries.clear()
    yield cloud
    cloud.reset_offerings()
    cloud.set_fabric(enabled=True)


@pytest.fixture
def subnets(env) -> list[dict]:
    found = boto3.client("ec2").describe_subnets()["Subnets"]
    by_zone = {s["AvailabilityZone"]: s for s in found}
    return [by_zone["us-east-1a"], by_zone["us-east-1b"]]


@pytest.fixture
def bucket(env) -> str:
    name = f"runs-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def trigger_for(subnets: list[dict], types=("g5.xlarge",), **kw) -> SpotCapacityTrigger:
    spec = LaunchSpec(
        image_id=AMI,
        instance_types=tuple(types),
        subnet_ids=tuple(s["SubnetId"] for s in subnets),
        instance_requirements=kw.pop("instance_requirements", None),
    ).as_dict()
    defaults = dict(
        run_uri=f"s3://nowhere/run-{uuid.uuid4().hex[:8]}",
        session=1,
        spec=spec,
        started_at=time.time(),
        max_wait=30,
        aws_conn_id=None,
        region_name="us-east-1",
        backoff_base=0.3,
        backoff_max=1.0,
    )
    defaults.update(kw)
    return SpotCapacityTrigger(**defaults)


def first_event(trigger: SpotCapacityTrigger) -> dict:
    async def go() -> dict:
        async with contextlib.aclosing(trigger.run()) as events:
            async for event in events:
                return event.payload
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(go())


def instances_of(run_uri: str) -> list[str]:
    tag = {"Name": f"tag:{RUN_TAG}", "Values": [run_tag_value(run_uri)]}
    response = boto3.client("ec2").describe_instances(Filters=[tag])
    return [i["InstanceId"] for r in response["Reservations"] for i in r["Instances"]]


def test_a_pair_not_offered_is_never_tried(env: LocalSpotCloud, subnets: list[dict]) -> None:
    env.set_offered("g5.xlarge", "us-east-1a", offered=False)
    unsupported = env.state()["counters"]["unsupported"]
    trigger = trigger_for(subnets)
    event = first_event(trigger)
    assert event["status"] == "launched", event
    assert (event["instance_type"], event["zone"]) == ("g5.xlarge", "us-east-1b")
    assert env.state()["counters"]["unsupported"] == unsupported  # skipped before asking, from the offerings


def test_unsupported_for_one_pair_skips_that_pair_not_the_run(env: LocalSpotCloud, subnets: list[dict]) -> None:
    first_event(trigger_for(subnets))  # the offerings of the region are now cached in this process...
    env.set_offered("g5.xlarge", "us-east-1a", offered=False)  # ...and EC2 stops offering one pair
    unsupported = env.state()["counters"]["unsupported"]
    trigger = trigger_for(subnets)
    event = first_event(trigger)
    assert event["status"] == "launched", event
    assert event["zone"] == "us-east-1b"
    assert env.state()["counters"]["unsupported"] == unsupported + 1
    assert len(instances_of(trigger.run_uri)) == 1


def test_no_offered_pair_at_all_fails_with_what_to_fix(env: LocalSpotCloud, subnets: list[dict]) -> None:
    env.set_offered("g5.xlarge", "us-east-1a", offered=False)
    env.set_offered("g5.xlarge", "us-east-1b", offered=False)
    event = first_event(trigger_for(subnets))
    assert event["status"] == "error" and event["code"] == "Unsupported"
    assert "'instance_types'" in event["message"] and "us-east-1a" in event["message"]


def test_instance_requirements_launch_a_type_the_cloud_resolves_and_say_which(
    env: LocalSpotCloud, subnets: list[dict], capfd
) -> None:
    trigger = trigger_for(subnets, types=(), instance_requirements=ONE_GPU_24G)
    event = first_event(trigger)
    assert event["status"] == "launched", event
    resolved = event["resolved_types"]
    assert resolved and event["instance_type"] in resolved and "g5.xlarge" not in resolved
    ec2 = boto3.client("ec2", region_name="us-east-1")
    gpus = ec2.describe_instance_types(InstanceTypes=[event["instance_type"]])["InstanceTypes"][0]["GpuInfo"]
    assert gpus["TotalGpuMemoryInMiB"] >= 24 * 1024 and sum(g["Count"] for g in gpus["Gpus"]) == 1
    logged = [line for line in capfd.readouterr().out.splitlines() if "instance_requirements resolved" in line]
    assert logged and event["instance_type"] in logged[0]


def test_after_an_interruption_the_next_session_avoids_that_pool(env: LocalSpotCloud, subnets: list[dict]) -> None:
    reclaimed = Pair("g5.xlarge", subnets[0]["SubnetId"], "us-east-1a", "us-east-1").pool(SPOT)
    control = first_event(trigger_for(subnets))
    assert control["zone"] == "us-east-1a"  # the author's order when nothing is known
    event = first_event(trigger_for(subnets, run_state={"reclaimed_in": reclaimed, "last_pools": [reclaimed]}))
    assert event["status"] == "launched" and event["zone"] == "us-east-1b"
    # ...but when the other pool has no capacity, the run goes back rather than wait
    env.set_capacity("g5.xlarge", "us-east-1b", available=False)
    back = first_event(trigger_for(subnets, run_state={"reclaimed_in": reclaimed}))
    assert back["status"] == "launched" and back["zone"] == "us-east-1a"


def test_the_fleet_record_orders_the_pools(env: LocalSpotCloud, subnets: list[dict], bucket: str) -> None:
    fleet = fleetstore.fleet_uri(f"s3://{bucket}/grid-runs")
    zone_a = Pair("g5.xlarge", subnets[0]["SubnetId"], "us-east-1a", "us-east-1").pool(SPOT)
    zone_b = Pair("g5.xlarge", subnets[1]["SubnetId"], "us-east-1b", "us-east-1").pool(SPOT)
    observations = [Observation(zone_a, fleetrecord.INTERRUPTED, float(i), 600.0) for i in range(4)]
    observations += [Observation(zone_b, fleetrecord.ENDED, 5.0, 20 * 3600.0)]
    fleetstore.add(boto3.client("s3"), fleet, observations)
    event = first_event(trigger_for(subnets, fleet_uri=fleet))
    assert event["status"] == "launched" and event["zone"] == "us-east-1b"


def test_the_runs_state_comes_from_its_earlier_sessions(env: LocalSpotCloud, bucket: str) -> None:
    ledger = RunLedger(make_s3_client(), parse_s3_uri(f"s3://{bucket}/grid-runs/dag.task.run"))
    ledger.write_record(Launch(instance_id="i-1", instance_type="g5.xlarge", zone="us-west-2a", lifecycle="spot"), 1)
    ledger.write_record(Closed(status="interrupted", at=1.0), 1)
    state = read_run_state(ledger, 2)
    assert state["reclaimed_in"] == "us-west-2|us-west-2a|g5.xlarge|spot"
    assert state["interruptions_by_pool"] == {"us-west-2|us-west-2a|g5.xlarge|spot": 1}
    ledger.write_record(Launch(instance_id="i-2", instance_type="g5.xlarge", zone="us-west-2b", lifecycle="spot"), 2)
    ledger.write_record(Closed(status="failed", at=2.0), 2)
    assert read_run_state(ledger, 3)["reclaimed_in"] is None


def test_requirements_no_type_meets_fail_with_what_to_fix(env: LocalSpotCloud, subnets: list[dict]) -> None:
    impossible = {**ONE_GPU_24G, "AcceleratorCount": {"Min": 64}}
    event = first_event(trigger_for(subnets, types=(), instance_requirements=impossible))
    assert event["status"] == "error" and event["code"] == "InvalidParameterValue"
    assert "'instance_requirements'" in event["message"]
