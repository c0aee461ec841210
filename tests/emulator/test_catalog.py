"""The local spot cloud knows instance types as EC2 does: offerings per zone and region (Unsupported for a pair
not offered), and GetInstanceTypesFromInstanceRequirements; over HTTP with real boto3 clients."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError

from airflow_grid_resume.emulator.catalog import instance_types
from airflow_grid_resume.emulator.client import LocalSpotCloud

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
    cloud.reset_offerings()
    cloud.set_fabric(enabled=False)
    yield cloud
    cloud.reset_offerings()
    cloud.set_fabric(enabled=True)


def zones_offering(ec2, instance_type: str) -> list[str]:
    found = ec2.describe_instance_type_offerings(
        LocationType="availability-zone", Filters=[{"Name": "instance-type", "Values": [instance_type]}]
    )["InstanceTypeOfferings"]
    return sorted(o["Location"] for o in found)


def test_a_pair_not_offered_answers_unsupported_as_ec2_does(env: LocalSpotCloud) -> None:
    ec2 = boto3.client("ec2", region_name="us-east-1")
    assert "us-east-1a" in zones_offering(ec2, "g5.xlarge")
    env.set_offered("g5.xlarge", "us-east-1a", offered=False)
    assert "us-east-1a" not in zones_offering(ec2, "g5.xlarge")
    subnet = next(s for s in ec2.describe_subnets()["Subnets"] if s["AvailabilityZone"] == "us-east-1a")
    with pytest.raises(ClientError) as raised:
        ec2.run_instances(ImageId=AMI, InstanceType="g5.xlarge", MinCount=1, MaxCount=1, SubnetId=subnet["SubnetId"])
    error = raised.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400 and error["Error"]["Code"] == "Unsupported"
    assert error["Error"]["Message"].startswith(
        "Your requested instance type (g5.xlarge) is not supported in your requested Availability Zone (us-east-1a)."
        " Please retry your request by not specifying an Availability Zone or choosing us-east-1b"
    )
    # another type in the same zone is still offered and launches
    ok = ec2.run_instances(ImageId=AMI, InstanceType="g4dn.xlarge", MinCount=1, MaxCount=1, SubnetId=subnet["SubnetId"])
    ec2.terminate_instances(InstanceIds=[ok["Instances"][0]["InstanceId"]])


def test_each_region_has_its_own_offerings(env: LocalSpotCloud) -> None:
    east = zones_offering(boto3.client("ec2", region_name="us-east-1"), "g5.xlarge")
    west = zones_offering(boto3.client("ec2", region_name="us-west-2"), "g5.xlarge")
    assert (
        east and west and all(z.startswith("us-east-1") for z in east) and all(z.startswith("us-west-2") for z in west)
    )
    assert "us-east-1e" not in east  # as on EC2: not every zone has every type


def test_instance_requirements_resolve_to_types_that_meet_them(env: LocalSpotCloud) -> None:
    ec2 = boto3.client("ec2", region_name="us-east-1")
    found = ec2.get_instance_types_from_instance_requirements(
        ArchitectureTypes=["x86_64"], VirtualizationTypes=["hvm"], InstanceRequirements=ONE_GPU_24G
    )["InstanceTypes"]
    names = [t["InstanceType"] for t in found]
    assert names
    data = instance_types()
    for name in names:
        gpus = data[name]["GpuInfo"]["Gpus"]
        assert sum(g["Count"] for g in gpus) == 1 and gpus[0]["Manufacturer"] == "NVIDIA"
        assert data[name]["GpuInfo"]["TotalGpuMemoryInMiB"] >= 24 * 1024
        assert "x86_64" in data[name]["ProcessorInfo"]["SupportedArchitectures"]
    assert "g5.xlarge" not in names  # its A10G has 22888 MiB in EC2's data: less than 24 GiB
    assert "p3.2xlarge" not in names  # 16 GiB V100
    arm = ec2.get_instance_types_from_instance_requirements(
        ArchitectureTypes=["arm64"], VirtualizationTypes=["hvm"], InstanceRequirements=ONE_GPU_24G
    )["InstanceTypes"]
    assert not {t["InstanceType"] for t in arm} & set(names)


def test_resolve_ssm_image_ids_are_read_in_the_launchs_region(env: LocalSpotCloud) -> None:
    name = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
    launched = {}
    for region in ("us-east-1", "us-west-2"):
        ec2 = boto3.client("ec2", region_name=region)
        expected = boto3.client("ssm", region_name=region).get_parameter(Name=name)["Parameter"]["Value"]
        subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
        answer = ec2.run_instances(
            ImageId=f"resolve:ssm:{name}", InstanceType="t3.micro", MinCount=1, MaxCount=1, SubnetId=subnet
        )
        instance = answer["Instances"][0]
        assert instance["ImageId"] == expected
        launched[region] = expected
        ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
    assert launched["us-east-1"] != launched["us-west-2"]  # one parameter, an AMI id per region
    with pytest.raises(ClientError) as raised:
        boto3.client("ec2", region_name="us-east-1").run_instances(
            ImageId="resolve:ssm:/no/such/parameter", InstanceType="t3.micro", MinCount=1, MaxCount=1
        )
    assert raised.value.response["Error"]["Code"] == "InvalidParameterValue"
