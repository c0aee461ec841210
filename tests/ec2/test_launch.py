"""Launch decisions without any server: error classes, pairs, tokens, backoff, fallback, user data."""

from __future__ import annotations

import dataclasses
import random

import pytest

from airflow_grid_resume.ec2.bootstrap import USER_DATA_LIMIT, parse_marker, render_user_data
from airflow_grid_resume.ec2.launch import (
    CAPACITY,
    FATAL,
    ON_DEMAND,
    SPOT,
    THROTTLE,
    FallbackPolicy,
    LaunchSpec,
    Pair,
    backoff_delay,
    classify_error,
    client_token,
    explain_fatal,
    make_pairs,
    run_instances_params,
    session_tokens,
)
from airflow_grid_resume.ec2.tags import run_tags
from airflow_grid_resume.spot.placement import order_pairs

CAPACITY_CODES = [
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "MaxSpotInstanceCountExceeded",
    "SpotMaxPriceTooLow",
    "UnfulfillableCapacity",
    "VcpuLimitExceeded",
    "InsufficientFreeAddressesInSubnet",
]


@pytest.mark.parametrize("code", CAPACITY_CODES)
def test_capacity_codes(code: str) -> None:
    assert classify_error(code) == CAPACITY


@pytest.mark.parametrize(
    ("code", "kind", "parameter"),
    [
        ("RequestLimitExceeded", THROTTLE, None),
        ("InvalidAMIID.NotFound", FATAL, "image_id"),
        ("InvalidSubnetID.NotFound", FATAL, "subnet_ids"),
        ("UnauthorizedOperation", FATAL, "aws_conn_id"),
        ("InvalidParameterValue", FATAL, "launch spec"),
        ("InvalidGroup.NotFound", FATAL, "security_group_ids"),
        ("SomethingNew", FATAL, None),
    ],
)
def test_other_codes(code: str, kind: str, parameter: str | None) -> None:
    assert classify_error(code) == kind
    if kind == FATAL:
        message = explain_fatal(code, "AWS text")
        assert code in message and "AWS text" in message
        if parameter:
            assert repr(parameter) in message


def test_pairs_prefer_those_not_just_failed() -> None:
    pairs = make_pairs(["g5.xlarge", "g4dn.xlarge"], {"subnet-a": "us-east-1a", "subnet-b": "us-east-1b"})
    assert [p.key for p in pairs] == [
        "g5.xlarge|subnet-a",
        "g5.xlarge|subnet-b",
        "g4dn.xlarge|subnet-a",
        "g4dn.xlarge|subnet-b",
    ]
    failed = {"g5.xlarge|subnet-a": 100.0, "g5.xlarge|subnet-b": 80.0}
    ordered = order_pairs(pairs, market=SPOT, failed_at=failed, now=120.0, cool_down=60.0)
    assert [p.key for p in ordered] == [
        "g4dn.xlarge|subnet-a",
        "g4dn.xlarge|subnet-b",
        "g5.xlarge|subnet-b",
        "g5.xlarge|subnet-a",
    ]
    assert (
        order_pairs(pairs, market=SPOT, failed_at=failed, now=1000.0, cool_down=60.0) == pairs
    )  # cooled down: user order again


def test_client_token_is_stable_short_and_per_pair() -> None:
    a, b = Pair("g5.xlarge", "subnet-a", "us-east-1a"), Pair("g5.xlarge", "subnet-b", "us-east-1b")
    token = client_token("dag.task.run", 3, a, SPOT)
    assert token == client_token("dag.task.run", 3, a, SPOT) and len(token) <= 64 and token.isascii()
    assert token not in {
        client_token("dag.task.run", 4, a, SPOT),
        client_token("dag.task.run", 3, b, SPOT),
        client_token("dag.task.run", 3, a, ON_DEMAND),
    }


def test_session_tokens_cover_every_attempt_the_session_could_make() -> None:
    pairs = [Pair("g5.xlarge", "subnet-a", "us-east-1a"), Pair("g4dn.xlarge", "subnet-b", "us-east-1b")]
    tokens = session_tokens("dag.task.run", 3, pairs)
    assert len(set(tokens)) == 4
    assert {client_token("dag.task.run", 3, p, m) for p in pairs for m in (SPOT, ON_DEMAND)} == set(tokens)
    assert client_token("dag.task.run", 2, pairs[0], SPOT) not in tokens


def test_the_emulator_takes_out_the_filter_moto_lacks_and_renumbers_the_rest() -> None:
    from airflow_grid_resume.emulator.cloud import without_filter

    params = {
        "Action": "DescribeInstances",
        "Filter.1.Name": "client-token",
        "Filter.1.Value.1": "gr-a",
        "Filter.1.Value.2": "gr-b",
        "Filter.2.Name": "instance-state-name",
        "Filter.2.Value.1": "pending",
        "Filter.2.Value.2": "running",
    }
    rest, tokens = without_filter(params, "client-token")
    assert tokens == ["gr-a", "gr-b"]
    assert rest == {
        "Action": "DescribeInstances",
        "Filter.1.Name": "instance-state-name",
        "Filter.1.Value.1": "pending",
        "Filter.1.Value.2": "running",
    }
    assert without_filter(rest, "client-token") == (rest, None)


def test_backoff_grows_with_jitter_and_cap() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(n, base=15, cap=300, rng=rng) for n in range(1, 9)]
    assert 7.5 <= delays[0] <= 15 and 15 <= delays[1] <= 30
    assert all(150 <= d <= 300 for d in delays[5:])
    assert len({round(backoff_delay(3, rng=random.Random(s)), 3) for s in range(20)}) > 10  # spread out


def test_fallback_policy() -> None:
    off = FallbackPolicy()
    assert off.market(capacity_failures_in_a_row=99, interruptions=99, waited_seconds=1e9) == SPOT
    policy = FallbackPolicy(after_capacity_failures=3, after_interruptions=5, after_wait_seconds=3600)
    assert policy.market(capacity_failures_in_a_row=2, interruptions=4, waited_seconds=3599) == SPOT
    assert policy.market(capacity_failures_in_a_row=3, interruptions=0, waited_seconds=0) == ON_DEMAND
    assert policy.market(capacity_failures_in_a_row=0, interruptions=5, waited_seconds=0) == ON_DEMAND
    assert policy.market(capacity_failures_in_a_row=0, interruptions=0, waited_seconds=3600) == ON_DEMAND
    assert "interruptions" in policy.reason(capacity_failures_in_a_row=0, interruptions=5, waited_seconds=0)


def test_launch_spec_validation_names_the_parameter() -> None:
    with pytest.raises(ValueError, match="image_id") as err:
        LaunchSpec(image_id="ubuntu", instance_types=(), subnet_ids=())
    assert "instance_types" in str(err.value) and "subnet_ids" in str(err.value)
    spec = LaunchSpec(image_id="ami-1", instance_types=("g5.xlarge",), subnet_ids=("subnet-a",), tags={"team": "ml"})
    assert LaunchSpec.from_dict(spec.as_dict()) == spec


def test_run_instances_request_is_safe_and_tagged() -> None:
    spec = LaunchSpec(
        image_id="ami-1",
        instance_types=("g5.xlarge",),
        subnet_ids=("subnet-a",),
        iam_instance_profile="grid-training",
        root_volume_gb=200,
        security_group_ids=("sg-1",),
    )
    pair = Pair("g5.xlarge", "subnet-a", "us-east-1a")
    tags = run_tags("dag.task.run", 2, "2026-11-27T00:00:00Z", {"team": "ml"})
    params = run_instances_params(spec, pair, market=SPOT, token="gr-x", tags=tags, user_data="#!/bin/bash")
    assert params["MetadataOptions"]["HttpTokens"] == "required"
    assert params["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert params["InstanceMarketOptions"]["SpotOptions"]["SpotInstanceType"] == "one-time"
    assert (params["MinCount"], params["MaxCount"], params["ClientToken"]) == (1, 1, "gr-x")
    tag_map = {t["Key"]: t["Value"] for t in params["TagSpecifications"][0]["Tags"]}
    assert tag_map["grid-resume:session"] == "2" and tag_map["grid-resume:expires-at"].startswith("2026")
    assert tag_map["team"] == "ml"
    on_demand = run_instances_params(spec, pair, market=ON_DEMAND, token="t", tags=tags, user_data="")
    assert "InstanceMarketOptions" not in on_demand
    assert params["BlockDeviceMappings"][0]["DeviceName"] == "/dev/xvda"  # unresolved: Amazon Linux's
    ubuntu = dataclasses.replace(spec, root_device_name="/dev/sda1")
    mapped = run_instances_params(ubuntu, pair, market=SPOT, token="t", tags=tags, user_data="")
    assert mapped["BlockDeviceMappings"][0] == {
        "DeviceName": "/dev/sda1",  # the AMI's root device is resized, no second volume is added
        "Ebs": {"VolumeSize": 200, "VolumeType": "gp3", "DeleteOnTermination": True},
    }
    assert LaunchSpec.from_dict(ubuntu.as_dict()) == ubuntu  # survives the trigger's JSON


def test_user_data_has_no_secrets_and_fits(monkeypatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "SUPERSECRETKEYVALUE")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "SESSIONTOKENVALUE")
    user_data = render_user_data("s3://bucket/grid-runs/dag.task.run", 7, "us-east-1")
    assert "SUPERSECRETKEYVALUE" not in user_data and "SESSIONTOKENVALUE" not in user_data
    # The launcher reads credentials from the instance's environment or its profile; the script never sets any.
    for word in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN"):
        assert f"{word}=" not in user_data and f"export {word}" not in user_data
    assert "password" not in user_data.lower()
    assert len(user_data.encode()) <= USER_DATA_LIMIT
    assert parse_marker(user_data) == {
        "run_uri": "s3://bucket/grid-runs/dag.task.run",
        "session": 7,
        "region": "us-east-1",
    }
    assert parse_marker("#!/bin/bash\necho other\n") is None
    hostile = render_user_data("s3://bucket/x'; rm -rf / #", 1, None)
    assert "'s3://bucket/x'\"'\"'; rm -rf / #'" in hostile  # shell-quoted


def test_user_data_carries_the_digests_and_fits_the_longest_run_uri() -> None:
    """The digests of the agent and spec the Airflow side wrote ride in the user data (which only RunInstances
    writes); with S3's longest key in the run URI it still fits EC2's 16 KB (raw, before base64)."""
    import ast

    from airflow_grid_resume.ec2 import bootpy
    from airflow_grid_resume.ec2.bootstrap import REFUSED_EXIT, REFUSED_MARKER, launcher_source

    agent, spec = "a" * 64, "b" * 64
    longest = "s3://" + "b" * 63 + "/" + "k" * 1024
    user_data = render_user_data(longest, 12, "us-east-1", agent_sha256=agent, spec_sha256=spec)
    assert len(user_data.encode()) <= USER_DATA_LIMIT
    assert parse_marker(user_data) == {
        "run_uri": longest, "session": 12, "region": "us-east-1", "agent_sha256": agent, "spec_sha256": spec,
    }  # fmt: skip
    assert f'"$SEEN" {agent} {spec}\n' in user_data  # handed to the launcher
    ast.parse(launcher_source())  # the embedded launcher is still Python, without its docstrings
    assert '"""' not in launcher_source()
    assert (bootpy.REFUSED, bootpy.REFUSED_EXIT) == (REFUSED_MARKER, REFUSED_EXIT)
    with pytest.raises(ValueError, match="agent_sha256 must be 64 lowercase hex"):
        render_user_data("s3://b/r", 1, None, agent_sha256="$(reboot)", spec_sha256=spec)


def test_the_launcher_refuses_bytes_of_another_digest() -> None:
    import hashlib

    from airflow_grid_resume.ec2 import bootpy

    body = b"the agent the Airflow side uploaded"
    good = hashlib.sha256(body).hexdigest()
    assert bootpy.checked("agent zipapp", "agent/a.pyz", body, good) is None
    assert bootpy.checked("agent zipapp", "agent/a.pyz", body, "-") is None  # launched by an older trigger
    refused = bootpy.checked("agent zipapp", "agent/a.pyz", body + b"!", good)
    assert refused is not None and refused.startswith("grid-resume: refused to start: agent zipapp in S3")
    assert f"launched with ({good})" in refused


def test_the_hop_limit_is_the_specs() -> None:
    pair = Pair("g5.xlarge", "subnet-1", "us-east-1a")
    for limit in (1, 2, 3):
        spec = LaunchSpec(
            image_id="ami-1", instance_types=("g5.xlarge",), subnet_ids=("subnet-1",), metadata_hop_limit=limit
        )
        params = run_instances_params(spec, pair, market="spot", token="t", tags={}, user_data="")
        assert params["MetadataOptions"]["HttpPutResponseHopLimit"] == limit
    assert LaunchSpec(image_id="ami-1", instance_types=("t",), subnet_ids=("s",)).metadata_hop_limit == 2
    with pytest.raises(ValueError, match="metadata_hop_limit must be 1 to 64"):
        LaunchSpec(image_id="ami-1", instance_types=("t",), subnet_ids=("s",), metadata_hop_limit=0)
