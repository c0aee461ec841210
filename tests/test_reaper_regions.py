"""grid-resume reap over several regions: an expired instance in another region than the bucket's is found and
terminated with --instance-region, and only with it (against the local spot cloud)."""

from __future__ import annotations

import json
import time

import boto3
import pytest

from airflow_grid_resume.ec2.tags import expiry_tag, run_tags
from airflow_grid_resume.emulator.client import LocalSpotCloud
from airflow_grid_resume.reaper import main

AMI = "ami-03cf127a"


def report(out: str) -> dict:
    """The JSON report (the lines before it are the log lines Airflow's import prints)."""
    return json.loads(out[out.index("\n{") + 1 :] if not out.startswith("{") else out)


@pytest.fixture(scope="module")
def cloud():
    with LocalSpotCloud(notice_seconds=1) as c:
        c.set_fabric(enabled=False)
        yield c


def test_an_expired_instance_in_another_region_is_reaped_with_instance_region(
    cloud: LocalSpotCloud, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    for key, value in cloud.aws_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    west = boto3.client("ec2", region_name="us-west-2")
    tags = run_tags("s3://b/grid-runs/d/t/r", 1, expiry_tag(time.time() - 7200, 1), {})
    instance = west.run_instances(
        ImageId=AMI,
        InstanceType="t3.micro",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
    )["Instances"][0]["InstanceId"]
    base = ["--region", "us-east-1", "--no-read-runs", "--no-queues", "--apply", "--json"]
    assert main(base) == 0
    assert instance not in report(capsys.readouterr().out)["terminated"]  # one region only
    assert main([*base, "--instance-region", "us-west-2"]) == 0
    assert instance in report(capsys.readouterr().out)["terminated"]
    state = west.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state in ("shutting-down", "terminated")
