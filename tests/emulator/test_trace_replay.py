"""A spot trace replayed as a pool's capacity and interruptions (emulator/tracereplay.py, the /_emulator/trace
route), pure and over HTTP with real boto3."""

from __future__ import annotations

import time

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from airflow_grid_resume.emulator.client import LocalSpotCloud
from airflow_grid_resume.emulator.tracereplay import TraceReplay, replays_allow

AMI = "ami-03cf127a"  # one of the AMIs moto ships with


def test_ticks_follow_the_compressed_clock_and_the_last_value_holds() -> None:
    replay = TraceReplay.from_doc(
        {"instance_type": "g5.xlarge", "zone": "z", "data": [1, 0, 0, 2, 0], "tick_seconds": 2}, 100.0
    )
    assert [replay.available(100.0 + s) for s in (0, 1.9, 2, 5.9, 6, 8, 50)] == [
        True,
        True,
        False,
        False,
        True,
        False,
        False,
    ]
    assert replay.zero_ticks() == [2.0, 8.0]  # the start of each run of zeros: spot instances get their notice
    started_late = TraceReplay.from_doc({"zone": "z", "data": [0, 0, 1], "tick_seconds": 1, "start": 1}, 0.0)
    assert started_late.zero_ticks() == [0.0] and started_late.available(1.0)
    assert not replays_allow([replay], "g5.xlarge", "z", 103.0) and replays_allow([replay], "g4dn.xlarge", "z", 103.0)


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ({"data": [], "tick_seconds": 1}, "non-empty list"),
        ({"data": [1], "tick_seconds": 0}, "tick_seconds"),
        ({"data": [1], "tick_seconds": 1, "start": 3}, "outside"),
    ],
)
def test_a_bad_trace_says_what_is_wrong(doc: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        TraceReplay.from_doc(doc, 0.0)


def test_the_trace_withholds_spot_capacity_and_interrupts_running_spot_instances(
    cloud: LocalSpotCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in cloud.aws_env().items():
        monkeypatch.setenv(key, value)
    ec2 = boto3.client("ec2", config=Config(retries={"max_attempts": 1, "mode": "standard"}))  # EC2's answer as is
    subnet = sorted(ec2.describe_subnets()["Subnets"], key=lambda s: s["AvailabilityZone"])[0]
    zone = subnet["AvailabilityZone"]

    def launch(market: str) -> str:
        extra = {"InstanceMarketOptions": {"MarketType": "spot"}} if market == "spot" else {}
        reply = ec2.run_instances(
            ImageId=AMI, InstanceType="g5.xlarge", MinCount=1, MaxCount=1, SubnetId=subnet["SubnetId"], **extra
        )
        return str(reply["Instances"][0]["InstanceId"])

    spot = launch("spot")
    on_demand = launch("on-demand")
    started = time.time()
    answer = cloud.replay_trace("g5.xlarge", zone, [1, 0, 0, 0, 1], tick_seconds=2.0)
    assert answer["traces"][0]["available"] is True
    deadline = time.time() + 10
    while cloud.instance(spot)["state"] != "terminated" and time.time() < deadline:
        time.sleep(0.2)
    assert cloud.instance(spot)["reason"] == "Server.SpotInstanceTermination"  # noticed at the 0 tick, reclaimed
    assert time.time() < started + 7.5, "too slow to check the 0 ticks (2 s to 8 s)"
    with pytest.raises(ClientError) as err:  # still inside the 0 ticks
        launch("spot")
    assert err.value.response["Error"]["Code"] == "InsufficientInstanceCapacity"
    assert cloud.instance(on_demand)["state"] == "running"  # on-demand is not the trace's
    launch("on-demand")
    time.sleep(max(0.0, started + 8.2 - time.time()))
    launch("spot")  # the fifth tick has spot again
    cloud.replay_trace("g5.xlarge", zone, None, tick_seconds=1.0)
    assert cloud.state()["traces"] == []


def test_spot_placement_scores_follow_the_capacity(cloud: LocalSpotCloud, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run watch's question (GetSpotPlacementScores, which moto lacks) answered from the same capacity."""
    import asyncio

    from airflow_grid_resume.hooks.spot import SpotLaunchHook

    for key, value in cloud.aws_env().items():
        monkeypatch.setenv(key, value)
    zone = sorted(z["ZoneName"] for z in boto3.client("ec2").describe_availability_zones()["AvailabilityZones"])[0]
    hook = SpotLaunchHook(aws_conn_id=None, region_name="us-east-1")
    cloud.set_capacity("g5.xlarge", zone, available=False, market="spot")
    try:
        scores = asyncio.run(hook.a_spot_placement_scores(["g5.xlarge"], "us-east-1"))
    finally:
        cloud.set_capacity("*", "*", available=True, market="all")
    assert scores[zone] == 1 and all(score == 9 for name, score in scores.items() if name != zone)
    assert asyncio.run(hook.a_spot_placement_scores(["g5.xlarge"], "us-east-1"))[zone] == 9
