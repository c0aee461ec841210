"""Spot launches, the capacity trigger and the local spot cloud, over HTTP with real boto3/aiobotocore."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import json
import os
import pkgutil
import re
import threading
import time
import uuid
from pathlib import Path

import boto3
import pytest
from airflow.triggers.base import BaseTrigger
from botocore.exceptions import ClientError

import airflow_grid_resume.triggers as triggers_pkg
from airflow_grid_resume.agent.bundle import build_zipapp
from airflow_grid_resume.ec2.bootstrap import AGENT_KEY, SPEC_KEY
from airflow_grid_resume.ec2.launch import CAPACITY, THROTTLE, LaunchSpec, Pair
from airflow_grid_resume.ec2.tags import RUN_TAG, run_tag_value
from airflow_grid_resume.emulator.client import LocalSpotCloud
from airflow_grid_resume.emulator.cloud import descendants, marked_processes
from airflow_grid_resume.hooks.spot import LaunchError, SpotLaunchHook
from airflow_grid_resume.ledger.s3client import make_s3_client
from airflow_grid_resume.ledger.store import RunLedger
from airflow_grid_resume.ledger.uri import parse_s3_uri
from airflow_grid_resume.triggers.capacity import SpotCapacityTrigger
from airflow_grid_resume.triggers.run import RunWatchTrigger
from tests.conftest import heartbeat_of, outcome_of

AMI = "ami-03cf127a"  # one of the AMIs moto ships with


@pytest.fixture(scope="module")
def cloud():
    with LocalSpotCloud(notice_seconds=3) as c:
        yield c


@pytest.fixture
def cloud_env(cloud: LocalSpotCloud, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key, value in cloud.aws_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    cloud.set_capacity("*", "*", available=True, market="all")
    cloud.reset_faults()
    return cloud.aws_env()


@pytest.fixture
def subnets(cloud_env) -> list[dict]:
    found = boto3.client("ec2").describe_subnets()["Subnets"]
    return sorted(found, key=lambda s: s["AvailabilityZone"])[:2]


def spec_for(subnets: list[dict], types=("g5.xlarge", "g4dn.xlarge"), image_id: str = AMI) -> dict:
    return LaunchSpec(
        image_id=image_id, instance_types=tuple(types), subnet_ids=tuple(s["SubnetId"] for s in subnets)
    ).as_dict()


def trigger_for(spec: dict, run_uri: str | None = None, **kw) -> SpotCapacityTrigger:
    defaults = dict(
        run_uri=run_uri or f"s3://nowhere/run-{uuid.uuid4().hex[:8]}",
        session=1,
        spec=spec,
        started_at=time.time(),
        max_wait=60,
        aws_conn_id=None,
        region_name="us-east-1",
        backoff_base=0.3,
        backoff_max=1.0,
    )
    defaults.update(kw)
    return SpotCapacityTrigger(**defaults)


def first_event(trigger: BaseTrigger) -> dict:
    async def go() -> dict:
        async with contextlib.aclosing(trigger.run()) as events:  # as the triggerer: closed in the loop
            async for event in events:
                return event.payload
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(go())


def instances_of(run_uri: str) -> list[str]:
    """Every instance ever launched for the run, whatever its state (a bootstrap that cannot reach
    its ledger ends, and the instance terminates itself, as on EC2)."""
    tag = {"Name": f"tag:{RUN_TAG}", "Values": [run_tag_value(run_uri)]}
    response = boto3.client("ec2").describe_instances(Filters=[tag])
    return [i["InstanceId"] for r in response["Reservations"] for i in r["Instances"]]


def test_capacity_and_throttle_errors_are_classified(cloud, subnets) -> None:
    hook = SpotLaunchHook(aws_conn_id=None, region_name="us-east-1")
    spec = LaunchSpec.from_dict(spec_for(subnets))
    pair = Pair("g5.xlarge", subnets[0]["SubnetId"], subnets[0]["AvailabilityZone"])
    cloud.set_capacity("g5.xlarge", pair.zone, available=False)
    with pytest.raises(LaunchError) as err:
        hook.launch(
            spec,
            pair,
            market="spot",
            run_uri="s3://b/r-cap",
            session=1,
            user_data="",
            expires_at="2030-01-01T00:00:00Z",
        )
    assert err.value.kind == CAPACITY and err.value.code == "InsufficientInstanceCapacity"
    assert pair.zone in err.value.message
    cloud.set_capacity("g5.xlarge", pair.zone, available=True)
    cloud.set_throttle(burst=1, rate=0.001)
    hook.launch(
        spec, pair, market="spot", run_uri="s3://b/r-thr", session=1, user_data="", expires_at="2030-01-01T00:00:00Z"
    )
    with pytest.raises(LaunchError) as err:
        hook.launch(
            spec,
            pair,
            market="spot",
            run_uri="s3://b/r-thr",
            session=2,
            user_data="",
            expires_at="2030-01-01T00:00:00Z",
        )
    assert err.value.kind == THROTTLE and err.value.code == "RequestLimitExceeded"


def test_client_token_idempotency(cloud_env, subnets) -> None:
    ec2 = boto3.client("ec2")
    args = dict(
        ImageId=AMI,
        MinCount=1,
        MaxCount=1,
        InstanceType="g5.xlarge",
        SubnetId=subnets[0]["SubnetId"],
        ClientToken=f"tok-{uuid.uuid4().hex}",
    )
    first = ec2.run_instances(**args)["Instances"][0]["InstanceId"]
    assert ec2.run_instances(**args)["Instances"][0]["InstanceId"] == first
    with pytest.raises(ClientError, match="IdempotentParameterMismatch"):
        ec2.run_instances(**{**args, "InstanceType": "g4dn.xlarge"})


def test_trigger_waits_then_launches_on_the_next_free_pair(cloud, subnets, capfd) -> None:
    zone_a, zone_b = subnets[0]["AvailabilityZone"], subnets[1]["AvailabilityZone"]
    cloud.set_capacity("g5.xlarge", "*", available=False)
    cloud.set_capacity("g4dn.xlarge", zone_a, available=False)
    cloud.set_capacity("g4dn.xlarge", zone_b, available=False)
    refused = cloud.state()["counters"]["capacity_errors"]

    def release_after_one_round() -> None:  # all four pairs refused once (not a fixed drought: a busy machine)
        while cloud.state()["counters"]["capacity_errors"] < refused + 4:
            time.sleep(0.1)
        cloud.set_capacity("g4dn.xlarge", zone_b, available=True)

    releaser = threading.Thread(target=release_after_one_round, daemon=True)
    releaser.start()
    trigger = trigger_for(spec_for(subnets))
    event = first_event(trigger)
    releaser.join(timeout=5)
    assert event["status"] == "launched", event
    assert (event["instance_type"], event["zone"], event["lifecycle"]) == ("g4dn.xlarge", zone_b, "spot")
    assert event["spot_price"] is not None and event["rounds"] >= 2
    assert instances_of(trigger.run_uri) == [event["instance_id"]]
    # Airflow routes trigger logs through structlog to the console (and, in a triggerer, the task log).
    waits = [line for line in capfd.readouterr().out.splitlines() if "no spot capacity for" in line]
    assert waits and f"g5.xlarge in {zone_a} (InsufficientInstanceCapacity)" in waits[0]
    assert "next try in" in waits[0]


def test_a_capacity_wait_leaves_what_it_waits_for_in_the_ledger(cloud, subnets) -> None:
    """The run view's waiting state: each round that finds nothing writes EC2's answers and its next try
    once (sessions/N/launch-attempt.json); the UI's reader turns that into "next try in N s"."""
    from airflow_grid_resume.ledger import layout
    from airflow_grid_resume.ui import model, source

    bucket = f"wait-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    cloud.set_capacity("g5.xlarge", "*", available=False, for_seconds=6)
    trigger = trigger_for(spec_for(subnets, types=("g5.xlarge",)), run_uri=f"s3://{bucket}/run", backoff_base=2.0)
    trigger.backoff_max = 2.0
    ledger = RunLedger(boto3.client("s3"), parse_s3_uri(f"s3://{bucket}/run"))
    key = ledger.key(layout.launch_attempt(1))
    seen: list[tuple[dict, float | None]] = []

    async def go() -> dict:
        task = asyncio.ensure_future(_first(trigger))
        while not task.done():
            doc, age = await asyncio.to_thread(source.read_with_age, ledger, key)
            if doc and (not seen or seen[-1][0] != doc):
                seen.append((doc, age))
            await asyncio.sleep(0.2)
        return task.result()

    event = asyncio.run(go())
    assert event["status"] == "launched" and event["rounds"] >= 2, event
    waits = [(d, age) for d, age in seen if d["phase"] == "backing-off"]
    assert waits, seen
    doc, age = waits[0]
    assert [(a["instance_type"], a["code"]) for a in doc["answers"]] == [
        ("g5.xlarge", "InsufficientInstanceCapacity")
    ] * 2
    assert 0 < doc["next_try_in"] <= 2.0 and doc["attempt"]["token"] and age is not None and age < 5
    # one PUT per round that found nothing, plus one per attempt that differs from the last recorded (2 zones)
    assert len(seen) <= 3 * (event["rounds"] + 1)
    state = model.capacity_wait(
        {"attempt": doc, "attempt_seen": {"age": age, "read_at": time.time()}},
        {"instance_types": ["g5.xlarge"]},
        time.time(),
    )
    zones = sorted(s["AvailabilityZone"] for s in subnets)
    assert state["text"].startswith(f"waiting for spot capacity: g5.xlarge in {zones[0]} or {zones[1]}")
    assert "EC2 answered InsufficientInstanceCapacity (no capacity for it there now)" in state["text"]


async def _first(trigger: BaseTrigger) -> dict:
    async with contextlib.aclosing(trigger.run()) as events:
        async for event in events:
            return event.payload
    raise AssertionError("the trigger ended without an event")


def test_trigger_times_out(cloud, subnets) -> None:
    cloud.set_capacity("*", "*", available=False)
    event = first_event(trigger_for(spec_for(subnets), max_wait=1.5))
    assert event["status"] == "timeout" and "no spot capacity within" in event["message"]


def test_trigger_fails_at_once_on_errors_waiting_cannot_fix(cloud_env, subnets) -> None:
    event = first_event(trigger_for(spec_for(subnets, image_id="ami-0doesnotexist")))
    assert event["status"] == "error" and event["code"] == "InvalidAMIID.NotFound"
    assert "'image_id'" in event["message"]
    bad_subnet = {**spec_for(subnets), "subnet_ids": ["subnet-0nope"]}
    event = first_event(trigger_for(bad_subnet))
    assert event["status"] == "error" and "'subnet_ids'" in event["message"]


def test_restart_after_launch_creates_no_second_instance(cloud_env, subnets) -> None:
    spec = spec_for(subnets)
    first = first_event(trigger_for(spec, run_uri="s3://nowhere/restart-run"))
    # The triggerer restarts and rebuilds the trigger from its kwargs: it must reattach.
    again = first_event(trigger_for(spec, run_uri="s3://nowhere/restart-run"))
    assert again["instance_id"] == first["instance_id"] and again["reused"] is True
    # A lost answer: the launch happened, the trigger never heard. The same token brings the same instance.
    hook = SpotLaunchHook(aws_conn_id=None, region_name="us-east-1")
    pair = Pair("g5.xlarge", subnets[0]["SubnetId"], subnets[0]["AvailabilityZone"])
    attempt = dict(
        market="spot", run_uri="s3://b/lost-answer", session=4, user_data="", expires_at="2030-01-01T00:00:00Z"
    )
    launched = hook.launch(LaunchSpec.from_dict(spec), pair, **attempt)
    retried = hook.launch(LaunchSpec.from_dict(spec), pair, **attempt)
    assert retried["InstanceId"] == launched["InstanceId"]
    assert instances_of("s3://nowhere/restart-run") == [first["instance_id"]]
    assert instances_of("s3://b/lost-answer") == [launched["InstanceId"]]


def test_on_demand_fallback(cloud, subnets) -> None:
    cloud.set_capacity("*", "*", available=False, market="spot")
    trigger = trigger_for(spec_for(subnets), fallback={"after_capacity_failures": 2})
    event = first_event(trigger)
    assert event["status"] == "launched" and event["lifecycle"] == "on-demand" and event["spot_price"] is None
    assert cloud.instance(event["instance_id"])["lifecycle"] == "on-demand"


@pytest.fixture(scope="module")
def agent_pyz(tmp_path_factory) -> str:
    return build_zipapp(str(tmp_path_factory.mktemp("pyz") / "agent.pyz"))


def prepare_run(bucket: str, prefix: str, agent_pyz: str, command: list[str]) -> str:
    s3 = boto3.client("s3")
    s3.upload_file(agent_pyz, bucket, f"{prefix}/{AGENT_KEY}")
    agent_args = ["--heartbeat-interval", "1", "--log-interval", "0.5", "--imds-poll", "0.2"]
    spec = {"command": command, "agent_args": agent_args}
    s3.put_object(Bucket=bucket, Key=f"{prefix}/{SPEC_KEY}", Body=json.dumps(spec).encode())
    return f"s3://{bucket}/{prefix}"


def wait_until(predicate, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("notice", [True, False], ids=["with-notice", "hard-loss"])
def test_interruption_reaches_the_agent_on_an_emulated_instance(cloud, subnets, agent_pyz, notice: bool) -> None:
    bucket = f"cloud-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    prefix = f"run-{uuid.uuid4().hex[:6]}"
    script = "trap 'echo saving; echo saved > ckpt; exit 0' TERM; echo training; while true; do sleep 0.1; done"
    run_uri = prepare_run(bucket, prefix, agent_pyz, ["sh", "-c", script])
    event = first_event(trigger_for(spec_for(subnets), run_uri=run_uri))
    instance_id = event["instance_id"]
    ledger = RunLedger(make_s3_client(), parse_s3_uri(run_uri))
    wait_until(lambda: (heartbeat_of(ledger, 1) or {}).get("state") == "running", what="the agent running")
    assert b"training" in wait_until(lambda: ledger.read_log(1, 0)[0], what="output in the ledger")
    cloud.interrupt(instance_id, notice=notice)
    wait_until(lambda: cloud.instance(instance_id)["state"] == "terminated", what="the instance terminated")
    described = SpotLaunchHook(aws_conn_id=None, region_name="us-east-1").describe_instances([instance_id])
    assert described[instance_id]["State"]["Name"] == "terminated"
    assert described[instance_id]["StateReason"]["Code"] == "Server.SpotInstanceTermination"
    outcome = outcome_of(ledger, 1)
    if notice:
        assert outcome["status"] == "interrupted" and outcome["notice"]["source"] == "imds", outcome
        manifest = ledger.read_manifest(ledger.list_manifests()[0])
        assert [f.path for f in manifest.files] == ["ckpt"]
    else:
        assert outcome is None  # a hard loss leaves no outcome: the Airflow side sees a lost instance
    pid = cloud.instance(instance_id)["pid"]
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]


def test_emulator_leaves_nothing_behind(tmp_path: Path, agent_pyz: str) -> None:
    with LocalSpotCloud(notice_seconds=1) as c:
        state_dir = Path(c.info["state_dir"])
        env = c.aws_env()
        os.environ.update(env)
        try:
            boto3.client("s3").create_bucket(Bucket="leak-check")
            run_uri = prepare_run("leak-check", "r", agent_pyz, ["sleep", "300"])
            sub = boto3.client("ec2").describe_subnets()["Subnets"][0]
            event = first_event(trigger_for(spec_for([sub]), run_uri=run_uri))
            pid = wait_until(lambda: c.instance(event["instance_id"])["pid"], what="a fabric process")
            assert state_dir.is_dir() and Path(f"/proc/{pid}").exists()
            tree = wait_until(lambda: len(descendants(pid)) >= 3 and descendants(pid), what="agent and command")
            port = c.endpoint_url.rsplit(":", 1)[1]
            emulator_pid = c.proc.pid
        finally:
            for key in env:
                os.environ.pop(key, None)
    alive = [p for p in tree if Path(f"/proc/{p}").exists() and " Z " not in Path(f"/proc/{p}/stat").read_text()]
    assert alive == []  # bootstrap, agent and the command, whatever process group each made
    assert not Path(f"/proc/{emulator_pid}").exists()
    import socket

    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", int(port))) != 0
    assert not state_dir.exists()  # its own temp dir, instances' directories included


def test_every_trigger_survives_serialization() -> None:
    """The triggerer rebuilds each trigger from its classpath and kwargs: both must round-trip."""
    samples = {
        "RunWatchTrigger": dict(
            run_uri="s3://b/r",
            session=3,
            instance_id="i-0123",
            launched_at=1.0,
            deadline=9.0,
            log_offset=42,
            s3_write={"encryption": "aws:kms", "checksum": "CRC32"},
        ),
        "SpotCapacityTrigger": dict(
            run_uri="s3://b/r",
            session=2,
            spec={"image_id": "ami-1", "instance_types": ["g5.xlarge"], "subnet_ids": ["subnet-a"]},
            started_at=1.0,
            max_wait=60.0,
            fallback={"after_interruptions": 3},
            s3_write={"encryption": "aws:kms", "kms_key_id": "alias/k"},
        ),
    }
    found = []
    for module_info in pkgutil.iter_modules(triggers_pkg.__path__):
        module = importlib.import_module(f"{triggers_pkg.__name__}.{module_info.name}")
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseTrigger) and cls is not BaseTrigger and cls.__module__ == module.__name__:
                found.append(name)
                assert name in samples, f"add a serialization sample for {name}"
                classpath, kwargs = cls(**samples[name]).serialize()
                assert json.loads(json.dumps(kwargs)) == kwargs  # plain JSON
                module_name, class_name = classpath.rsplit(".", 1)
                rebuilt = getattr(importlib.import_module(module_name), class_name)(**kwargs)
                assert rebuilt.serialize() == (classpath, kwargs)
    assert sorted(found) == sorted(samples)


def test_triggers_serialized_by_an_earlier_release_still_load() -> None:
    """A deployment upgraded while runs wait keeps their serialized triggers: the triggerer imports them by the
    classpath and kwargs in its database. Those of the release before the house moved still load and run."""
    earlier = {
        "airflow_grid_resume.triggers.capacity.SpotCapacityTrigger": dict(
            run_id="s3://b/r",  # the run URI, also passed as run_id until then
            run_uri="s3://b/r",
            session=2,
            spec={"image_id": "ami-1", "instance_types": ["g5.xlarge"], "subnet_ids": ["subnet-a"]},
            started_at=1.0,
            max_wait=60.0,
            aws_conn_id="aws_default",
            region_name=None,
            backoff_base=15.0,
            backoff_max=300.0,
            cool_down=300.0,
            fallback=None,
            interruptions=0,
            deferred_at=1.0,
            expires_at="2030-01-01T00:00:00Z",
        ),
        "airflow_grid_resume.triggers.run.RunWatchTrigger": dict(
            run_uri="s3://b/r",
            session=3,
            instance_id="i-0123",
            launched_at=1.0,
            deadline=9.0,
            log_offset=42,
            s3_write={"encryption": "aws:kms", "checksum": "CRC32"},
        ),
    }
    for classpath, kwargs in earlier.items():
        module_name, class_name = classpath.rsplit(".", 1)
        trigger = getattr(importlib.import_module(module_name), class_name)(**kwargs)
        again, now = trigger.serialize()
        assert again == classpath
        assert now["run_uri"] == "s3://b/r" and "run_id" not in now


# -- the run trigger ---------------------------------------------------------------------------
def launch_session(subnets, agent_pyz: str, command: list[str]) -> tuple[str, str]:
    """A run whose session 1 runs ``command`` on an emulated instance: (run_uri, instance id)."""
    bucket = f"watch-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    prefix = f"run-{uuid.uuid4().hex[:6]}"
    run_uri = prepare_run(bucket, prefix, agent_pyz, command)
    event = first_event(trigger_for(spec_for(subnets), run_uri=run_uri))
    return run_uri, event["instance_id"]


def watch_for(run_uri: str, instance_id: str, **kw) -> RunWatchTrigger:
    defaults = dict(
        run_uri=run_uri,
        session=1,
        instance_id=instance_id,
        launched_at=time.time(),
        aws_conn_id=None,
        region_name="us-east-1",
        poll_interval=0.3,
        instance_check_interval=1.0,
        heartbeat_timeout=30,
    )
    defaults.update(kw)
    return RunWatchTrigger(**defaults)


def logged_lines(out: str, marker: str) -> list[str]:
    """The numbers of task-log lines that are exactly ``<marker><n>`` (the command's own lines): a record's
    first line follows its level, the others follow a line end; its last line is followed by the logger."""
    return re.findall(rf"(?:\] |\n){re.escape(marker)}(\d+)(?= +\[|\n)", out)


def test_watch_streams_every_line_once_and_reports_success(cloud, subnets, agent_pyz, capfd) -> None:
    script = "for i in 1 2 3 4 5; do echo line-$i; sleep 0.3; done"
    run_uri, instance_id = launch_session(subnets, agent_pyz, ["sh", "-c", script])
    event = first_event(watch_for(run_uri, instance_id))
    assert event["status"] == "succeeded" and event["outcome"]["exit_code"] == 0
    lines = logged_lines(capfd.readouterr().out, "line-")
    assert lines == ["1", "2", "3", "4", "5"]
    ledger = RunLedger(make_s3_client(), parse_s3_uri(run_uri))
    assert event["log_offset"] == len(ledger.read_log(1, 0)[0])


def test_watch_resumes_after_a_triggerer_restart_without_repeating(cloud, subnets, agent_pyz, capfd) -> None:
    script = "for i in $(seq 1 12); do echo tick-$i; sleep 0.25; done"
    run_uri, instance_id = launch_session(subnets, agent_pyz, ["sh", "-c", script])
    trigger = watch_for(run_uri, instance_id)

    async def cut_short() -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(first_event_async(trigger), timeout=2.0)

    asyncio.run(cut_short())  # the triggerer dies mid-stream
    event = first_event(watch_for(run_uri, instance_id))  # rebuilt from the same kwargs
    assert event["status"] == "succeeded"
    assert logged_lines(capfd.readouterr().out, "tick-") == [str(i) for i in range(1, 13)]


async def first_event_async(trigger: BaseTrigger) -> dict:
    async with contextlib.aclosing(trigger.run()) as events:
        async for event in events:
            return event.payload
    raise AssertionError("no event")


def test_watch_reports_interruption_and_loss(cloud, subnets, agent_pyz) -> None:
    script = "trap 'echo saved > ckpt; exit 0' TERM; while true; do sleep 0.1; done"
    run_uri, instance_id = launch_session(subnets, agent_pyz, ["sh", "-c", script])
    wait_until(lambda: cloud.instance(instance_id)["pid"], what="the agent")
    time.sleep(1.5)
    cloud.interrupt(instance_id, notice=True)
    assert first_event(watch_for(run_uri, instance_id))["status"] == "interrupted"
    run_uri, instance_id = launch_session(subnets, agent_pyz, ["sh", "-c", script])
    time.sleep(1.5)
    cloud.interrupt(instance_id, notice=False)
    event = first_event(watch_for(run_uri, instance_id))
    assert event["status"] == "lost" and "Server.SpotInstanceTermination" in event["reason"]


def test_the_root_device_comes_from_the_ami(cloud_env) -> None:
    from botocore.exceptions import ClientError

    hook = SpotLaunchHook(aws_conn_id=None, region_name="us-east-1")
    image = boto3.client("ec2").describe_images(ImageIds=[AMI])["Images"][0]
    assert hook.root_device_name(AMI) == image["RootDeviceName"]
    with pytest.raises(ClientError, match="InvalidAMIID"):
        hook.root_device_name("ami-00000000deadbeef")


def test_an_instance_whose_bootstrap_fails_is_a_failure_not_an_interruption(cloud, subnets, agent_pyz) -> None:
    """No agent in the ledger (as with an image without boto3, or no S3 access): the bootstrap powers
    the instance off before any session starts. Relaunching would only burn the interruption budget."""
    bucket = f"watch-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    prefix = f"run-{uuid.uuid4().hex[:6]}"
    run_uri = prepare_run(bucket, prefix, agent_pyz, ["true"])
    boto3.client("s3").delete_object(Bucket=bucket, Key=f"{prefix}/{AGENT_KEY}")
    instance_id = first_event(trigger_for(spec_for(subnets), run_uri=run_uri))["instance_id"]
    event = first_event(watch_for(run_uri, instance_id, boot_timeout=60))
    assert event["status"] == "failed", event
    assert "powered itself off before the agent started" in event["reason"]
    assert "python3 >= 3.9" in event["reason"]


def test_watch_enforces_max_run_and_terminates(cloud, subnets, agent_pyz) -> None:
    run_uri, instance_id = launch_session(subnets, agent_pyz, ["sleep", "300"])
    event = first_event(watch_for(run_uri, instance_id, deadline=time.time() + 3))
    assert event["status"] == "timeout" and "max_run" in event["reason"]
    wait_until(lambda: cloud.instance(instance_id)["state"] == "terminated", what="the instance terminated")


def test_a_newer_agents_records_stop_the_watch_and_its_instance(cloud, subnets, agent_pyz) -> None:
    """An outcome in a format newer than this provider reads is refused, never guessed at, and the
    instance does not outlive the watch that gave up on it."""
    from airflow_grid_resume.ledger import layout
    from airflow_grid_resume.ledger.errors import UnsupportedFormatError

    run_uri, instance_id = launch_session(subnets, agent_pyz, ["sleep", "300"])
    ledger = RunLedger(boto3.client("s3"), parse_s3_uri(run_uri))
    newer = {"format": "grid-resume-outcome/9", "session": 1, "status": "succeeded"}
    ledger.put_json(ledger.key(layout.outcome(1)), newer)
    with pytest.raises(UnsupportedFormatError, match=r"grid-resume-outcome/9, newer .*upgrade airflow-grid-resume"):
        first_event(watch_for(run_uri, instance_id, log_offset=1))  # a resumed watch LISTs, and sees the outcome
    wait_until(lambda: cloud.instance(instance_id)["state"] == "terminated", what="the instance terminated")


def test_an_unreadable_outcome_fails_the_session_instead_of_calling_it_lost(cloud, subnets, agent_pyz) -> None:
    """outcome.json is written once: one that cannot be read never will be. The session ended, so it is
    neither "lost" (relaunched, spending the interruption budget) nor waited on forever; the task fails
    with what was unreadable, and the instance does not outlive the watch."""
    from airflow_grid_resume.ledger import layout

    run_uri, instance_id = launch_session(subnets, agent_pyz, ["sleep", "300"])
    ledger = RunLedger(boto3.client("s3"), parse_s3_uri(run_uri))
    ledger.put_json(ledger.key(layout.outcome(1)), {"session": 1, "status": ["not", "a", "status"]})
    event = first_event(watch_for(run_uri, instance_id, log_offset=1))  # a resumed watch LISTs, and sees it
    assert event["status"] == "failed", event
    assert "unreadable outcome" in event["reason"] and "status" in event["reason"], event["reason"]
    wait_until(lambda: cloud.instance(instance_id)["state"] == "terminated", what="the instance terminated")


def test_a_newer_triggerers_watch_record_does_not_end_a_healthy_session(cloud, subnets, agent_pyz, capfd) -> None:
    """watch.json is the Airflow side's own log bookkeeping: a newer triggerer (a rolling upgrade, or a
    rollback) may have written it in a newer format. The watch then streams from its own offset; it
    neither terminates the instance of a healthy session nor fails the task."""
    from airflow_grid_resume.ledger import layout

    script = "for i in 1 2 3; do echo line-$i; sleep 0.3; done"
    run_uri, instance_id = launch_session(subnets, agent_pyz, ["sh", "-c", script])
    ledger = RunLedger(boto3.client("s3"), parse_s3_uri(run_uri))
    ledger.put_json(ledger.key(layout.watch(1)), {"format": "grid-resume-watch/2", "log_offset": 0, "at": 1.0})
    event = first_event(watch_for(run_uri, instance_id))  # before: UnsupportedFormatError, instance terminated
    assert event["status"] == "succeeded", event
    assert logged_lines(capfd.readouterr().out, "line-") == ["1", "2", "3"]


def test_watch_on_kill_terminates_the_instance(cloud, subnets, agent_pyz) -> None:
    run_uri, instance_id = launch_session(subnets, agent_pyz, ["sleep", "300"])
    asyncio.run(watch_for(run_uri, instance_id).on_kill())
    wait_until(lambda: cloud.instance(instance_id)["state"] == "terminated", what="the instance terminated")
    assert marked_processes(instance_id) == []


def test_watch_on_kill_outlives_the_triggerers_repeated_cancellation(cloud, subnets, agent_pyz) -> None:
    """Airflow 3.3.2's triggerer cancels a killed trigger again at every state sync (about 1 s) and swallows
    the CancelledError that interrupts on_kill: a termination slowed by EC2's 5xx must still happen."""
    run_uri, instance_id = launch_session(subnets, agent_pyz, ["sleep", "300"])
    trigger = watch_for(run_uri, instance_id)
    cloud.inject_fault("TerminateInstances", code="Unavailable", count=4)  # retried with backoff: seconds

    async def as_the_triggerer() -> None:
        async def run_trigger() -> None:  # the shape of run_trigger in airflow/jobs/triggerer_job_runner.py
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(trigger.on_kill(), timeout=30)
                raise

        task = asyncio.ensure_future(run_trigger())
        await asyncio.sleep(0.1)
        while not task.done():  # the cancellation, sent again at every sync until the trigger has finished
            task.cancel("__airflow_user_action__")
            await asyncio.sleep(0.2)
        for _ in range(100):  # the triggerer's event loop runs on
            if (await asyncio.to_thread(cloud.instance, instance_id))["state"] == "terminated":
                return
            await asyncio.sleep(0.2)

    asyncio.run(as_the_triggerer())
    assert cloud.instance(instance_id)["state"] == "terminated"
    assert cloud.state()["faults"]["faults"] == []  # the 5xx did slow it down


def test_operator_on_kill_on_the_worker_terminates_the_instance(cloud, subnets, agent_pyz) -> None:
    """Killed between the launch and the deferral (the worker's share of a try): same promise."""
    from airflow_grid_resume.operators import GridRunOperator
    from tests.conftest import OPERATOR_ARGS

    _, instance_id = launch_session(subnets, agent_pyz, ["sleep", "300"])
    operator = GridRunOperator(**{**OPERATOR_ARGS, "aws_conn_id": None, "region_name": "us-east-1"})
    operator.on_kill()  # nothing launched yet by this operator: nothing to do, no error
    operator._instance_id = instance_id  # what on_capacity/_watch record before deferring
    operator.on_kill()
    wait_until(lambda: cloud.instance(instance_id)["state"] == "terminated", what="the instance terminated")
    assert marked_processes(instance_id) == []  # killed while it booted: nothing of it lives on


def test_watch_calls_nothing_lost_on_eventual_consistency_throttling_and_5xx(cloud, subnets, agent_pyz) -> None:
    """A just-launched instance EC2 does not know yet, a throttled and failing DescribeInstances, and a
    slow-beating agent: no evidence that it is gone, so the healthy session runs to its end."""
    cloud.set_consistency(describe_not_found_seconds=4)
    run_uri, instance_id = launch_session(subnets, agent_pyz, ["sh", "-c", "sleep 6; echo done"])
    cloud.inject_fault("DescribeInstances", code="InternalError", count=4)
    cloud.set_throttle("DescribeInstances", burst=1, rate=0.5)
    event = first_event(watch_for(run_uri, instance_id, instance_check_interval=0.3, not_found_grace=8))
    assert event["status"] == "succeeded", event
    assert cloud.state()["counters"]["not_found"] >= 1 or cloud.state()["counters"]["throttled"] >= 1
    assert cloud.instance(instance_id)["reason"] == "Client.InstanceInitiatedShutdown"  # it ended by itself


def test_a_lost_run_instances_answer_is_replayed_into_the_same_instance(cloud, subnets) -> None:
    cloud.drop_responses("RunInstances", count=1)
    event = first_event(trigger_for(spec_for(subnets), run_uri="s3://nowhere/lost-answer-run"))
    assert event["status"] == "launched", event
    # Any state: its bootstrap finds no run at s3://nowhere and powers the instance off at once.
    assert instances_of("s3://nowhere/lost-answer-run") == [event["instance_id"]]


def test_an_unrecorded_launch_with_late_tags_is_found_by_its_client_token(cloud, subnets) -> None:
    """A launcher died after RunInstances answered and before its attempt was recorded (the PUT failed), while
    EC2 does not show the instance's tags yet: the tag lookup misses and there is no attempt to replay, and the
    pair it used had no capacity before. The next launcher finds the instance by the ClientToken filter."""
    spec = spec_for(subnets)
    run_uri = f"s3://nowhere/untracked-{uuid.uuid4().hex[:6]}"
    cloud.set_consistency(describe_not_found_seconds=0, tags_late_seconds=30)
    second_pair = Pair("g4dn.xlarge", subnets[1]["SubnetId"], subnets[1]["AvailabilityZone"])
    hook = SpotLaunchHook(aws_conn_id=None, region_name="us-east-1")
    launched = hook.launch(
        LaunchSpec.from_dict(spec),
        second_pair,
        market="spot",
        run_uri=run_uri,
        session=1,
        user_data="",
        expires_at="2030-01-01T00:00:00Z",
    )["InstanceId"]
    assert instances_of(run_uri) == []  # the tag filter does not match it yet
    before = len(cloud.instances())
    event = first_event(trigger_for(spec, run_uri=run_uri))  # g5.xlarge in the first zone has capacity now
    assert event["status"] == "launched" and event["instance_id"] == launched, event
    assert event.get("reused") is True, event
    assert len(cloud.instances()) == before, "a second instance for the session"
    other = boto3.client("ec2").describe_instances(Filters=[{"Name": "client-token", "Values": ["gr-unknown"]}])
    assert other["Reservations"] == []
    cloud.set_consistency(describe_not_found_seconds=0)


def test_late_tags_neither_launch_a_second_instance_nor_lose_the_session(cloud, subnets) -> None:
    """EC2 shows a new instance's tags late, and by the restart does not list it at all yet: a launcher restarted
    after the launch finds the session's instance neither by its tags nor by its ClientToken, so it replays the
    recorded attempt's token and gets that very instance back (here the second pair's: the first had no
    capacity, and has it again by the restart)."""
    bucket = f"late-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    spec = spec_for(subnets)
    run = dict(run_uri=f"s3://{bucket}/late-{uuid.uuid4().hex[:6]}", expires_at="2030-01-01T00:00:00Z")
    cloud.set_consistency(describe_not_found_seconds=0, tags_late_seconds=30)
    cloud.set_capacity("g5.xlarge", "*", available=False)
    first = first_event(trigger_for(spec, **run))
    assert first["instance_type"] == "g4dn.xlarge", first
    assert instances_of(run["run_uri"]) == []  # the tag filter does not match it yet
    found = boto3.client("ec2").describe_instances(Filters=[{"Name": "instance-id", "Values": [first["instance_id"]]}])
    assert "Tags" not in found["Reservations"][0]["Instances"][0]  # listed, without its tags
    cloud.set_capacity("g5.xlarge", "*", available=True)
    cloud.set_consistency(describe_not_found_seconds=30, tags_late_seconds=30)
    launched, replays = len(cloud.instances()), cloud.state()["counters"]["idempotent_replays"]
    again = first_event(trigger_for(spec, **run))  # the triggerer restarted before the event was handled
    assert again.get("instance_id") == first["instance_id"], again
    assert len(cloud.instances()) == launched, "a second instance for the session"
    assert cloud.state()["counters"]["idempotent_replays"] > replays  # the replay found it, not a describe
    cloud.set_consistency(describe_not_found_seconds=0)
    assert instances_of(run["run_uri"]) == [first["instance_id"]]
