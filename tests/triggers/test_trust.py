"""The trust boundary between the instances and the Airflow side, on the local spot cloud with the real bootstrap:
a forged agent or spec is refused by the instance, and two runs whose URIs differ only past the tag limit never
touch each other's instances (docs/security.md)."""
# ruff: noqa: F811 (the spot cloud's fixtures, imported from its test module, are the tests' arguments)

from __future__ import annotations

import asyncio
import time
import uuid
import zipfile
from pathlib import Path

import boto3
import pytest

from airflow_grid_resume.agent.bundle import agent_zipapp
from airflow_grid_resume.ec2.bootstrap import REFUSED_MARKER
from airflow_grid_resume.ec2.launch import LaunchSpec
from airflow_grid_resume.hooks.spot import SpotLaunchHook
from airflow_grid_resume.ledger import records
from airflow_grid_resume.ledger.s3client import make_s3_client
from airflow_grid_resume.ledger.store import RunLedger
from airflow_grid_resume.ledger.uri import parse_s3_uri
from airflow_grid_resume.run.budgets import Budgets
from airflow_grid_resume.run.ledgerio import ensure_agent, ensure_spec
from airflow_grid_resume.run.verdict import FAIL_RUN, session_verdict
from tests.triggers.test_spot_cloud import (  # noqa: F401 (fixtures)
    agent_pyz,
    cloud,
    cloud_env,
    first_event,
    spec_for,
    subnets,
    trigger_for,
    wait_until,
    watch_for,
)


def prepared_run(agent_pyz: str, command: list[str]) -> tuple[RunLedger, str, dict]:
    """A run whose agent and spec the Airflow side's own functions wrote: (ledger, run URI, their digests)."""
    bucket = f"trust-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    run_uri = f"s3://{bucket}/run-{uuid.uuid4().hex[:6]}"
    ledger = RunLedger(make_s3_client(), parse_s3_uri(run_uri))
    agent = ensure_agent(ledger, None, lambda: Path(agent_pyz).read_bytes())
    agent_args = ["--heartbeat-interval", "1", "--log-interval", "0.5", "--imds-poll", "0.2"]
    spec, _ = ensure_spec(ledger, records.Spec(command=command, agent_args=agent_args, run_uri=run_uri))
    return ledger, run_uri, {"agent_sha256": agent, "spec_sha256": spec}


def launch_spec(subnets: list[dict], digests: dict) -> dict:
    return {**spec_for(subnets), **digests}


def evil_zipapp(marker: Path) -> bytes:
    """A zipapp that leaves ``marker`` behind if it ever runs."""
    path = marker.with_suffix(".pyz")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("__main__.py", f"open({str(marker)!r}, 'w').write('ran')\n")
    return path.read_bytes()


def console_of(cloud, instance_id: str) -> str:
    out = boto3.client("ec2", region_name="us-east-1").get_console_output(InstanceId=instance_id)
    return str(out.get("Output") or "")


def refused_session(cloud, subnets, run_uri: str, digests: dict) -> tuple[dict, str]:
    instance_id = first_event(trigger_for(launch_spec(subnets, digests), run_uri=run_uri))["instance_id"]
    event = first_event(watch_for(run_uri, instance_id, boot_timeout=60))
    return event, instance_id


def test_a_forged_agent_zipapp_is_refused_and_the_session_fails(cloud, subnets, agent_pyz, tmp_path) -> None:
    ledger, run_uri, digests = prepared_run(agent_pyz, ["true"])
    marker = tmp_path / "forged-agent-ran"
    ledger.put(ledger.key("agent/grid-resume-agent.pyz"), evil_zipapp(marker))  # what another instance could do
    event, instance_id = refused_session(cloud, subnets, run_uri, digests)
    assert event["status"] == "failed", event
    assert event["outcome"]["cause"] == records.CAUSE_TAMPERED, event
    assert event["reason"].startswith(f"{REFUSED_MARKER}: agent zipapp in S3 (agent/grid-resume-agent.pyz"), event
    assert f"does not match the sha256 this session was launched with ({digests['agent_sha256']})" in event["reason"]
    assert "changed after upload" in event["reason"]
    assert not marker.exists()  # the forged agent never ran
    assert REFUSED_MARKER in console_of(cloud, instance_id)  # the instance's own console says it
    assert ledger.read_record(records.SessionStart, 1) is None  # no session was claimed
    wait_until(lambda: cloud.instance(instance_id)["state"] == "terminated", what="the instance terminated")
    # The operator's verdict: the run fails at once, with the cause; not an interruption, no retry.
    verdict = session_verdict(
        event["status"], 1, event["outcome"], closed_reason=event["reason"], interruptions=0, failures=1,
        budgets=Budgets(True, 20, 3), max_run=None,
    )  # fmt: skip
    assert verdict.action == FAIL_RUN and verdict.message.startswith("session 1 refused to start: "), verdict


def test_a_forged_spec_is_refused(cloud, subnets, agent_pyz, tmp_path) -> None:
    ledger, run_uri, digests = prepared_run(agent_pyz, ["true"])
    marker = tmp_path / "forged-command-ran"
    forged = records.Spec(command=["sh", "-c", f"echo owned > {marker}"], run_uri=run_uri)
    ledger.write_record(forged)
    event, _instance_id = refused_session(cloud, subnets, run_uri, digests)
    assert event["status"] == "failed" and event["outcome"]["cause"] == records.CAUSE_TAMPERED, event
    assert event["reason"].startswith(f"{REFUSED_MARKER}: run spec in S3 (spec.json, sha256 "), event
    assert not marker.exists()
    boot = ledger.read_record(records.Boot, 1)
    assert boot is not None and boot.problem == "tampered_spec"


def test_the_agent_and_spec_the_airflow_side_wrote_run(cloud, subnets, agent_pyz, tmp_path) -> None:
    """The control: with the digests of what was written, the bootstrap starts the agent and the session succeeds.
    A later try finds its own agent still there (no second upload) and rewrites a spec that was changed."""
    ledger, run_uri, digests = prepared_run(agent_pyz, ["sh", "-c", "echo fine"])
    event, _ = refused_session(cloud, subnets, run_uri, digests)
    assert event["status"] == "succeeded", event

    def no_build() -> bytes:
        raise AssertionError("rebuilt although S3 holds the agent this task uploaded")

    assert ensure_agent(ledger, digests["agent_sha256"], no_build) == digests["agent_sha256"]
    ledger.put(ledger.key("agent/grid-resume-agent.pyz"), b"forged")
    rebuilt = ensure_agent(ledger, digests["agent_sha256"], agent_zipapp)
    assert ledger.get(ledger.key("agent/grid-resume-agent.pyz")) != b"forged" and len(rebuilt) == 64
    spec = records.Spec(command=["sh", "-c", "echo fine"], agent_args=ledger.read_spec().agent_args, run_uri=run_uri)
    ledger.write_record(records.Spec(command=["evil"], run_uri=run_uri))
    again, changed = ensure_spec(ledger, spec)
    assert again == digests["spec_sha256"] and changed
    assert ledger.read_spec().command == ["sh", "-c", "echo fine"]


# -- two runs whose URIs differ only past the 256 characters of the run tag ----------------------------------
def long_runs() -> tuple[str, str, str]:
    bucket = f"long-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    stem = f"s3://{bucket}/grid-runs/" + "mapped_dag/train/" + "x" * 280
    return bucket, f"{stem}/0", f"{stem}/1"


def sleeping(run_uri: str, agent_pyz: str) -> None:
    ledger = RunLedger(make_s3_client(), parse_s3_uri(run_uri))
    ensure_agent(ledger, None, lambda: Path(agent_pyz).read_bytes())
    ensure_spec(ledger, records.Spec(command=["sleep", "60"], agent_args=["--heartbeat-interval", "1"]))


def test_runs_whose_uris_differ_past_the_tag_limit_never_adopt_each_others_instances(cloud, subnets, agent_pyz) -> None:
    _, run_a, run_b = long_runs()
    assert run_a[:256] == run_b[:256] and len(run_a) > 300
    for run in (run_a, run_b):  # both instances stay up (a run with no agent would power off at once)
        sleeping(run, agent_pyz)
    spec = LaunchSpec.from_dict(spec_for(subnets)).as_dict()
    first_b = first_event(trigger_for(spec, run_uri=run_b))
    assert first_b["status"] == "launched" and not first_b.get("reused"), first_b
    before = len(cloud.instances())
    first_a = first_event(trigger_for(spec, run_uri=run_a))  # a different run: it must launch its own
    assert first_a["status"] == "launched" and not first_a.get("reused"), first_a
    assert first_a["instance_id"] != first_b["instance_id"]
    assert len(cloud.instances()) == before + 1
    again_b = first_event(trigger_for(spec, run_uri=run_b))  # B restarted: it finds its own instance, not A's
    assert again_b.get("instance_id") == first_b["instance_id"] and again_b.get("reused") is True, again_b
    again_a = first_event(trigger_for(spec, run_uri=run_a))
    assert again_a.get("instance_id") == first_a["instance_id"] and again_a.get("reused") is True, again_a
    assert {cloud.instance(i)["state"] for i in (first_a["instance_id"], first_b["instance_id"])} == {"running"}
    SpotLaunchHook(aws_conn_id=None, region_name="us-east-1").terminate(
        [first_a["instance_id"], first_b["instance_id"]]
    )


def test_a_launch_json_naming_another_runs_instance_is_not_adopted_or_terminated(cloud, subnets, agent_pyz) -> None:
    """Run B's healthy instance, named in run A's launch.json (as a compromised instance could write it): the
    operator's check refuses it, and a watch of run A never runs on it, so B's instance outlives A's boot_timeout."""
    from airflow_grid_resume.ec2.identity import why_not

    _, run_a, run_b = long_runs()
    sleeping(run_b, agent_pyz)
    b_instance = first_event(trigger_for(spec_for(subnets), run_uri=run_b))["instance_id"]
    hook = SpotLaunchHook(aws_conn_id=None, region_name="us-east-1")
    described = wait_until(lambda: hook.describe_instances([b_instance]).get(b_instance), what="B listed")
    assert why_not(described, run_b, 1) is None
    refused = why_not(described, run_a, 1)
    assert refused is not None and "do not name session 1 of this run" in refused
    assert why_not(described, run_b, 2) is not None  # another session of the same run: refused too
    # A's session is looked up the way the operator and the launcher do: B's instance is never found.
    assert hook.find_session_instance(run_a, 1) is None
    assert asyncio.run(hook.a_find_session_instance(run_a, 1)) is None
    assert hook.find_session_instance(run_b, 1)["InstanceId"] == b_instance
    # The operator's own check, and the close of an "unwatched" session whose launch.json was forged.
    from airflow_grid_resume.operators import GridRunOperator
    from tests.conftest import OPERATOR_ARGS

    op = GridRunOperator(**{**OPERATOR_ARGS, "aws_conn_id": None, "region_name": "us-east-1"})
    assert op._refused_instance(run_b, 1, b_instance) is None
    assert (op._refused_instance(run_a, 1, b_instance) or "").startswith("refused: its ClientToken and tags")
    ledger_a = RunLedger(make_s3_client(), parse_s3_uri(run_a))
    ledger_a.write_record(records.Launch(instance_id=b_instance), 1)  # what a compromised instance could write
    ledger_a.write_record(records.Outcome(session=1, status="failed"), 1)
    op._close_if_unwatched(ledger_a, run_a, 1)
    closed = ledger_a.read_closed(1)
    assert closed is not None and closed.unwatched and closed.instance_id is None
    # A watch of run A handed B's instance (by a forged launch.json the operator could not check: EC2 did not list
    # the instance yet, or by an older release's lookup) ends A's session as lost before A's boot_timeout would
    # call it dead, and terminates nothing; nor does a user's kill of that watch.
    event = first_event(watch_for(run_a, b_instance, boot_timeout=2, instance_check_interval=0.5))
    assert event["status"] == "lost" and "is not this session's" in event["reason"], event
    asyncio.run(watch_for(run_a, b_instance).on_kill())
    time.sleep(3.0)  # a termination takes the local spot cloud 2 s
    assert cloud.instance(b_instance)["state"] == "running"
    hook.terminate([b_instance])


@pytest.mark.parametrize("limit", [1, 2])
def test_the_hop_limit_reaches_run_instances(cloud, cloud_env, subnets, limit: int) -> None:
    from airflow_grid_resume.ec2.launch import Pair

    spec = LaunchSpec.from_dict({**spec_for(subnets), "metadata_hop_limit": limit})
    pair = Pair("g5.xlarge", subnets[0]["SubnetId"], subnets[0]["AvailabilityZone"])
    hook = SpotLaunchHook(aws_conn_id=None, region_name="us-east-1")
    launched = hook.launch(
        spec, pair, market="spot", run_uri=f"s3://nowhere/hop-{limit}-{uuid.uuid4().hex[:6]}", session=1,
        user_data="", expires_at="2030-01-01T00:00:00Z",
    )  # fmt: skip
    found = boto3.client("ec2").describe_instances(InstanceIds=[launched["InstanceId"]])
    options = found["Reservations"][0]["Instances"][0]["MetadataOptions"]
    assert options["HttpPutResponseHopLimit"] == limit and options["HttpTokens"] == "required"
    assert cloud.instance(launched["InstanceId"])["imds_hop_limit"] == limit  # the emulated metadata service's
    hook.terminate([launched["InstanceId"]])


def test_the_reaper_does_not_take_a_forged_final_json_at_face_value(cloud, subnets, agent_pyz) -> None:
    """A live instance whose run's final.json says the run ended (as an instance could write it under a looser
    bucket policy): the reaper terminates it only once the Airflow side closed its session."""
    from airflow_grid_resume.reaper import reap

    bucket = f"reap-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    run_uri = f"s3://{bucket}/grid-runs/dag/task/run-{uuid.uuid4().hex[:6]}"
    sleeping(run_uri, agent_pyz)
    instance_id = first_event(trigger_for(spec_for(subnets), run_uri=run_uri))["instance_id"]
    ledger = RunLedger(make_s3_client(), parse_s3_uri(run_uri))
    ledger.write_record(records.Final(status="succeeded", session=1, reason="forged", at=time.time()))
    ec2, s3 = boto3.client("ec2"), boto3.client("s3")
    report = reap(ec2, s3, apply=True)
    assert instance_id not in [item["instance_id"] for item in report["reapable"]]
    time.sleep(3.0)
    assert cloud.instance(instance_id)["state"] == "running"
    ledger.write_record(records.Closed(status="succeeded", instance_id=instance_id, at=time.time()), 1)
    report = reap(ec2, s3, apply=True)  # the Airflow side closed the session: now the run really ended
    assert instance_id in report["terminated"], report
    wait_until(lambda: cloud.instance(instance_id)["state"] == "terminated", what="the instance terminated")
