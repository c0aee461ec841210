"""GridRunOperator over several regions with dag.test() against the local spot cloud: a region without capacity
for an hour, a run that finishes in the next one with one instance per session, and the pools remembered."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import boto3
import pytest

from airflow_grid_resume.ec2.prices import GB, US_REGION_USD_PER_GB
from airflow_grid_resume.ledger import records
from airflow_grid_resume.spot import fleetstore
from tests.conftest import OPERATOR_ARGS, TRAIN, make_dag
from tests.test_operators import reference_result, result_of, run_ledger, summary_of

AMI = "ami-03cf127a"
WEST_IMAGE = "resolve:ssm:/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
QUICK_STEPS = 20
QUICK = f"python3 train.py {QUICK_STEPS} 0.05"
AN_HOUR = 3600.0
DATA_BYTES = 16 << 20  # a data file in the workdir: what the west's restore downloads across regions


@pytest.fixture
def training_dir(tmp_path: Path) -> Path:
    workdir = tmp_path / "training"
    workdir.mkdir()
    shutil.copy(TRAIN, workdir / "train.py")
    return workdir


def subnets_of(region: str, zones: tuple[str, ...]) -> list[str]:
    found = boto3.client("ec2", region_name=region).describe_subnets()["Subnets"]
    by_zone = {s["AvailabilityZone"]: s["SubnetId"] for s in found}
    return [by_zone[z] for z in zones]


def all_instances(run_tag: str) -> list[tuple[str, str]]:
    """(region, instance id) of every instance of the run, whatever its state, in both regions."""
    found = []
    for region in ("us-east-1", "us-west-2"):
        answer = boto3.client("ec2", region_name=region).describe_instances(
            Filters=[{"Name": "tag:grid-resume:run-id", "Values": [run_tag]}]
        )
        found += [(region, i["InstanceId"]) for r in answer["Reservations"] for i in r["Instances"]]
    return found


def test_a_region_without_capacity_for_an_hour_hands_the_run_to_the_next(
    spot_cloud, training_dir: Path, tmp_path: Path, capfd
) -> None:
    """Also the cost of reaching the bucket (us-east-1) from the west: the session's agent restores the workdir's
    16 MiB of data across regions, and the run's cost counts the bytes it moved at $0.02 per GB."""
    (training_dir / "data.bin").write_bytes(os.urandom(DATA_BYTES))
    bucket = f"op-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    placements = [
        {"region": "us-east-1", "subnet_ids": subnets_of("us-east-1", ("us-east-1a", "us-east-1b")), "image_id": AMI},
        {"region": "us-west-2", "subnet_ids": subnets_of("us-west-2", ("us-west-2a",)), "image_id": WEST_IMAGE},
    ]
    for zone in ("us-east-1a", "us-east-1b"):
        spot_cloud.set_capacity("*", zone, available=False, for_seconds=AN_HOUR)
    try:
        dag = make_dag(
            f"grid_regions_{uuid.uuid4().hex[:6]}",
            training_dir,
            bucket,
            retries=0,
            command=QUICK,
            image_id=None,
            subnet_ids=(),
            placements=placements,
        )
        dagrun = dag.test()
    finally:
        spot_cloud.set_capacity("*", "*", available=True, market="all")
    assert dagrun.state == "success"
    ledger = run_ledger(bucket)
    launch = ledger.read_launch(1)
    assert launch is not None and launch.region == "us-west-2" and str(launch.zone).startswith("us-west-2")
    assert ledger.read_launch(2) is None  # one session, one instance
    from airflow_grid_resume.ec2.tags import run_tag_value

    instances = all_instances(run_tag_value(str(ledger.location)))
    assert instances == [("us-west-2", launch.instance_id)]
    west = boto3.client("ec2", region_name="us-west-2").describe_instances(InstanceIds=[launch.instance_id])
    ssm = boto3.client("ssm", region_name="us-west-2")
    expected_image = ssm.get_parameter(Name=WEST_IMAGE.split(":", 2)[2])["Parameter"]["Value"]
    assert west["Reservations"][0]["Instances"][0]["ImageId"] == expected_image  # the west's own AMI
    assert result_of(ledger, tmp_path) == reference_result(tmp_path, QUICK_STEPS)
    summary = summary_of(dagrun)
    assert summary["interruptions"] == 0
    out = capfd.readouterr().out
    assert "no capacity at once: g5.xlarge in us-east-1a" in out
    # the pools remember: the east answered no capacity, the west had it and ran the session
    record, _ = fleetstore.read(boto3.client("s3"), fleetstore.fleet_uri(f"s3://{bucket}/grid-runs/"))
    assert record is not None
    pools = record["pools"]
    assert pools["us-east-1|us-east-1a|g5.xlarge|spot"]["no_capacity"] >= 1
    west_pool = f"us-west-2|{launch.zone}|{launch.instance_type}|spot"
    assert pools[west_pool]["capacity"] == 1 and pools[west_pool]["sessions"] == 1
    assert json.dumps(record)  # plain JSON, readable by people
    # the data transfer between the west and the bucket's region, proportional to the bytes the agent moved
    assert launch.bucket_region == "us-east-1"
    outcome = ledger.read_record(records.Outcome, 1)
    assert outcome is not None and outcome.transfer is not None
    moved = outcome.transfer["uploaded_bytes"] + outcome.transfer["downloaded_bytes"]
    assert outcome.transfer["downloaded_bytes"] >= DATA_BYTES
    expected = round(moved * US_REGION_USD_PER_GB / GB, 6)
    session = summary["session_details"][0]
    assert session["transfer_bytes"] == moved and session["transfer_cost_usd"] == expected > 0
    assert summary["transfer_cost_usd"] == expected
    assert f"of which {expected:.6f} USD data transfer: {moved / 1048576:.1f} MiB to and from the bucket" in out


def test_placements_are_validated_with_what_to_fix() -> None:
    from airflow_grid_resume.operators import GridRunOperator

    base = {k: v for k, v in OPERATOR_ARGS.items() if k not in ("image_id", "subnet_ids")}
    good = {"region": "us-west-2", "subnet_ids": ["subnet-1"], "image_id": "ami-1"}
    cases = [
        ([{**good, "image_id": "ubuntu"}], "placements\\[0\\] needs its own image_id"),
        ([{**good, "subnet_ids": "subnet-1"}], "placements\\[0\\] must list its subnet_ids"),
        ([{**good, "region": ""}], "placements\\[0\\] must name its region"),
        ([good, good], "region 'us-west-2' is given twice"),
        ([{**good, "zone": "x"}], "unknown keys \\['zone'\\]"),
        ({"region": "us-west-2"}, "placements must be a list"),
    ]
    for placements, message in cases:
        with pytest.raises(ValueError, match=message):
            GridRunOperator(**base, placements=placements)
    with pytest.raises(ValueError, match=r"either placements .* or image_id"):
        GridRunOperator(**OPERATOR_ARGS, placements=[good])
    with pytest.raises(ValueError, match="instance_requirements has 'Gpus'"):
        GridRunOperator(**{**OPERATOR_ARGS, "instance_types": [], "instance_requirements": {"Gpus": 1}})
    op = GridRunOperator(**base, placements=[good, {**good, "region": "eu-west-1", "image_id": "ami-2"}])
    assert list(op.spec.by_region("us-east-1")) == ["us-west-2", "eu-west-1"]
    assert op.spec.by_region("us-east-1")["eu-west-1"].image_id == "ami-2"
    one = GridRunOperator(**OPERATOR_ARGS)  # the one-region form, unchanged
    assert one.spec.by_region("us-east-1") == {"us-east-1": one.spec}
    _ = records  # the Launch record's region is read above through the ledger


def test_after_an_interruption_the_next_session_goes_to_another_pool(
    spot_cloud, training_dir: Path, tmp_path: Path
) -> None:
    """One type in two zones, capacity in both: without the run's memory the author's order sends every session
    to the first zone, the one that just reclaimed it (seen: this test fails with order_pairs' ranking reduced to
    the author's order). Three rules agree here: the pool that reclaimed the run goes last, the run's own
    interruption there halves its worth, and the fleet record's short lifetime there lowers it; each alone is
    tested in tests/spot/test_placement.py."""
    from tests.test_operators import chaos

    bucket = f"op-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    interrupted, stop = chaos(spot_cloud, times=1, notice=True, after=1.0)
    try:
        dag = make_dag(
            f"grid_pools_{uuid.uuid4().hex[:6]}",
            training_dir,
            bucket,
            retries=0,  # the default 80 steps: still training when the interruption comes
            instance_types=["g5.xlarge"],
            subnet_ids=subnets_of("us-east-1", ("us-east-1a", "us-east-1b")),
        )
        dagrun = dag.test()
    finally:
        stop.set()
    assert len(interrupted) == 1 and dagrun.state == "success"
    ledger = run_ledger(bucket)
    first, second = ledger.read_launch(1), ledger.read_launch(2)
    assert first is not None and second is not None
    assert first.zone == "us-east-1a"  # the author's first pair
    assert second.zone == "us-east-1b"  # not straight back into the pool that reclaimed the run
    assert result_of(ledger, tmp_path) == reference_result(tmp_path)
    record, _ = fleetstore.read(boto3.client("s3"), fleetstore.fleet_uri(f"s3://{bucket}/grid-runs/"))
    assert record is not None and record["pools"]["us-east-1|us-east-1a|g5.xlarge|spot"]["interruptions"] == 1


def test_a_run_told_one_gpu_of_24_gib_launches_a_type_the_cloud_resolves_and_logs_which(
    spot_cloud, training_dir: Path, tmp_path: Path, capfd
) -> None:
    """The whole run (the operator's first round, the agent, success) with instance_requirements= and no type named:
    the local spot cloud resolves the requirements, the session runs on one of the types it named, and the task log
    says which types they resolved to and which one was launched."""
    from tests.triggers.test_capacity_anywhere import ONE_GPU_24G

    bucket = f"op-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    dag = make_dag(
        f"grid_requirements_{uuid.uuid4().hex[:6]}",
        training_dir,
        bucket,
        retries=0,
        command=QUICK,
        instance_types=[],
        instance_requirements=ONE_GPU_24G,
    )
    dagrun = dag.test()
    assert dagrun.state == "success"
    ledger = run_ledger(bucket)
    launch = ledger.read_launch(1)
    assert launch is not None and launch.resolved_types and launch.instance_type in launch.resolved_types
    ec2 = boto3.client("ec2", region_name="us-east-1")
    gpus = ec2.describe_instance_types(InstanceTypes=[str(launch.instance_type)])["InstanceTypes"][0]["GpuInfo"]
    assert gpus["TotalGpuMemoryInMiB"] >= 24 * 1024 and sum(g["Count"] for g in gpus["Gpus"]) == 1
    assert result_of(ledger, tmp_path) == reference_result(tmp_path, QUICK_STEPS)
    out = capfd.readouterr().out
    resolved_lines = [line for line in out.splitlines() if "instance_requirements resolved in us-east-1" in line]
    assert resolved_lines and ", ".join(launch.resolved_types) in resolved_lines[0]
    assert f"session 1: launched spot instance {launch.instance_id} ({launch.instance_type} in" in out
    assert summary_of(dagrun)["session_details"][0]["instance_type"] == launch.instance_type
