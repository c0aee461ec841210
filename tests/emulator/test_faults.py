"""The local spot cloud is at least as unkind as EC2 and S3: throttling on every API, 5xx, lost
answers, eventual consistency and skewed clocks, each over HTTP with real boto3 clients."""

from __future__ import annotations

import json
import os
import threading
import time

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError

from airflow_grid_resume.agent.imds import ImdsClient
from airflow_grid_resume.ec2.bootstrap import MARKER
from airflow_grid_resume.emulator.client import LocalSpotCloud
from airflow_grid_resume.emulator.cloud import SCHEDULED_STOP, _without_instances
from airflow_grid_resume.emulator.faults import EC2_DEFAULT_BUCKETS, Faults, TokenBucket, bucket_key

AMI = "ami-03cf127a"
ONE_TRY = Config(retries={"mode": "standard", "total_max_attempts": 1}, read_timeout=10)


# -- pure ---------------------------------------------------------------------------------------------
def test_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(2, 1, now=0.0)
    assert [bucket.take(now=0.0) for _ in range(3)] == [True, True, False]
    assert bucket.take(now=0.5) is False
    assert bucket.take(now=1.01) is True


def test_each_action_draws_from_its_own_bucket_or_its_category() -> None:
    buckets = {k: TokenBucket(*v) for k, v in EC2_DEFAULT_BUCKETS.items()}
    assert bucket_key("RunInstances", buckets) == "RunInstances"
    assert bucket_key("DescribeInstances", buckets) == "Describe*"
    assert bucket_key("CreateTags", buckets) == "*"
    assert bucket_key("DescribeInstances", {"RunInstances": buckets["RunInstances"]}) is None


def test_faults_and_drops_count_down_per_api() -> None:
    faults = Faults()
    faults.add_fault("DescribeInstances", "Unavailable", 2)
    assert faults.take_fault("RunInstances") is None
    assert [faults.take_fault("DescribeInstances") for _ in range(3)] == ["Unavailable", "Unavailable", None]
    faults.add_drop("*", 1)
    assert faults.take_drop("TerminateInstances") is True
    assert faults.take_drop("TerminateInstances") is False
    with pytest.raises(ValueError, match="code must be one of"):
        faults.add_fault("*", "Teapot", 1)


def test_hidden_instances_leave_a_describe_answer_and_empty_reservations_go() -> None:
    ns = "http://ec2.amazonaws.com/doc/2016-11-15/"
    body = (
        f'<DescribeInstancesResponse xmlns="{ns}"><reservationSet>'
        "<item><reservationId>r-1</reservationId><instancesSet><item><instanceId>i-1</instanceId>"
        "<tagSet><item><key>a</key></item></tagSet></item></instancesSet></item>"
        "<item><reservationId>r-2</reservationId><instancesSet><item><instanceId>i-2</instanceId></item>"
        "</instancesSet></item></reservationSet></DescribeInstancesResponse>"
    ).encode()
    out = _without_instances(body, {"i-1"})
    assert b"i-1" not in out and b"r-1" not in out and b"i-2" in out


# -- over HTTP ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cloud():
    with LocalSpotCloud(notice_seconds=3) as c:
        yield c


@pytest.fixture
def ec2(cloud: LocalSpotCloud, monkeypatch: pytest.MonkeyPatch):
    for key, value in cloud.aws_env().items():
        monkeypatch.setenv(key, value)
    cloud.reset_faults()
    cloud.set_throttle(enabled=False)
    yield boto3.client("ec2", config=ONE_TRY)
    cloud.reset_faults()


def _subnet(ec2) -> str:
    return str(ec2.describe_subnets()["Subnets"][0]["SubnetId"])


def _launch(ec2, token: str | None = None, user_data: str = "") -> str:
    kwargs: dict = {}
    if token:
        kwargs["ClientToken"] = token
        kwargs["TagSpecifications"] = [{"ResourceType": "instance", "Tags": [{"Key": "probe", "Value": token}]}]
    if user_data:
        kwargs["UserData"] = user_data
    response = ec2.run_instances(ImageId=AMI, InstanceType="m5.large", MinCount=1, MaxCount=1, **kwargs)
    return str(response["Instances"][0]["InstanceId"])


def _ours(ec2, token: str) -> list[str]:
    found = ec2.describe_instances(Filters=[{"Name": "tag:probe", "Values": [token]}])
    return [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]


def test_a_just_launched_instance_is_unknown_by_id_and_missing_from_filters(cloud, ec2) -> None:
    cloud.set_consistency(describe_not_found_seconds=2)
    instance_id = _launch(ec2)
    with pytest.raises(ClientError) as caught:
        ec2.describe_instances(InstanceIds=[instance_id])
    assert caught.value.response["Error"]["Code"] == "InvalidInstanceID.NotFound"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    listed = ec2.describe_instances(Filters=[{"Name": "instance-id", "Values": [instance_id]}])
    assert listed["Reservations"] == []
    time.sleep(2.2)
    found = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    assert found["InstanceId"] == instance_id
    assert cloud.state()["counters"]["not_found"] >= 1


def test_a_dropped_run_instances_is_carried_out_and_its_token_finds_it(cloud, ec2) -> None:
    token = f"t-{os.urandom(6).hex()}"
    cloud.drop_responses("RunInstances", count=1)
    with pytest.raises((ConnectionClosedError, EndpointConnectionError)):
        _launch(ec2, token)
    assert len(_ours(ec2, token)) == 1  # the launch happened although its answer was lost
    again = _launch(ec2, token)  # the retry with the same token: the same instance, not a second one
    assert _ours(ec2, token) == [again]


def test_racing_retries_with_one_token_make_one_instance(cloud, ec2) -> None:
    token = f"t-{os.urandom(6).hex()}"
    got: list[str] = []
    threads = [threading.Thread(target=lambda: got.append(_launch(ec2, token))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 1 and len(got) == 6
    assert _ours(ec2, token) == got[:1]


def test_every_api_can_be_throttled_with_ec2s_codes(cloud, ec2) -> None:
    cloud.set_throttle("DescribeInstances", burst=2, rate=0.01)
    ec2.describe_instances()
    ec2.describe_instances()
    with pytest.raises(ClientError) as caught:
        ec2.describe_instances()
    assert caught.value.response["Error"]["Code"] == "RequestLimitExceeded"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    ec2.describe_subnets()  # another API, another bucket
    state = cloud.set_throttle("defaults")
    assert state["throttle"]["Describe*"] == {"burst": 100.0, "rate": 20.0}


def test_injected_5xx_are_answered_without_being_carried_out(cloud, ec2) -> None:
    cloud.inject_fault("RunInstances", code="InternalError", count=1)
    token = f"t-{os.urandom(6).hex()}"
    with pytest.raises(ClientError) as caught:
        _launch(ec2, token)
    assert caught.value.response["Error"]["Code"] == "InternalError"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert _ours(ec2, token) == []
    cloud.inject_fault("*", code="Unavailable", count=1)
    with pytest.raises(ClientError) as caught:
        ec2.describe_subnets()
    assert caught.value.response["Error"]["Code"] == "Unavailable"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    ec2.describe_subnets()


def test_a_dropped_s3_put_is_applied(cloud, ec2) -> None:
    s3 = boto3.client("s3", config=ONE_TRY)
    bucket = f"drop-{os.urandom(4).hex()}"
    s3.create_bucket(Bucket=bucket)
    cloud.drop_responses("PutObject", count=1)
    with pytest.raises((ConnectionClosedError, EndpointConnectionError)):
        s3.put_object(Bucket=bucket, Key="lease.json", Body=b"mine", IfNoneMatch="*")
    assert s3.get_object(Bucket=bucket, Key="lease.json")["Body"].read() == b"mine"
    with pytest.raises(ClientError) as caught:  # the retry of a conditional write that did succeed
        s3.put_object(Bucket=bucket, Key="lease.json", Body=b"mine", IfNoneMatch="*")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412


def test_instances_launched_after_a_clock_change_run_on_a_skewed_clock(cloud, ec2) -> None:
    cloud.set_clock(offset_seconds=-900)
    header = json.dumps({"run_uri": "s3://none/x", "session": 1, "region": "us-east-1"})
    script = f"#!/bin/bash\n{MARKER}{header}\ndate +%s > clock.txt\npython3 -c 'import time; print(time.time())'\n"
    instance_id = _launch(ec2, user_data=script)
    directory = cloud.instance(instance_id)["directory"]
    deadline = time.time() + 20
    while time.time() < deadline and cloud.instance(instance_id)["state"] == "running":
        time.sleep(0.1)
    with open(os.path.join(directory, "clock.txt")) as fh:
        shell_clock = float(fh.read())
    with open(os.path.join(directory, "console.log")) as fh:
        python_clock = float(fh.read().split()[-1])
    assert -960 < shell_clock - time.time() < -840
    assert -960 < python_clock - time.time() < -840


def test_a_scheduled_stop_is_posted_on_the_instance_and_carried_out(cloud, ec2) -> None:
    header = json.dumps({"run_uri": "s3://none/x", "session": 1, "region": "us-east-1"})
    instance_id = _launch(ec2, user_data=f"#!/bin/bash\n{MARKER}{header}\nsleep 60\n")
    posted = cloud.schedule_event(instance_id, code="instance-stop", in_seconds=1.5)
    imds = ImdsClient(cloud.instance(instance_id)["imds_endpoint"])
    (listed,) = json.loads(imds.get("/latest/meta-data/events/maintenance/scheduled") or b"")
    assert (listed["Code"], listed["EventId"], listed["State"]) == ("instance-stop", posted["event_id"], "active")
    deadline = time.time() + 10
    while time.time() < deadline and cloud.instance(instance_id)["state"] == "running":
        time.sleep(0.1)
    assert cloud.instance(instance_id)["reason"] == SCHEDULED_STOP
