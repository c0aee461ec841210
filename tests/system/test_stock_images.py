"""The agent on a stock image: a python3 3.9 (Amazon Linux 2023's, Debian 11's) with no boto3 and no pip.

The zipapp brings its own libraries; the bootstrap picks the first python3 >= 3.9 and says which; an image
with none gets the image problem recorded, and the run fails with the fix instead of spending its budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import glob
import json
import logging
import os
import shutil
import signal
import subprocess
import time
import types
import uuid
from pathlib import Path

import boto3
import pytest
from airflow.exceptions import AirflowFailException

from airflow_grid_resume.agent.bundle import build_zipapp
from airflow_grid_resume.ec2.bootstrap import AGENT_KEY, SPEC_KEY
from airflow_grid_resume.ec2.launch import LaunchSpec, ssm_parameter
from airflow_grid_resume.emulator.client import LocalSpotCloud
from airflow_grid_resume.hooks.spot import SpotLaunchHook
from airflow_grid_resume.ledger import records
from airflow_grid_resume.ledger.s3client import make_s3_client
from airflow_grid_resume.ledger.store import RunLedger
from airflow_grid_resume.ledger.uri import parse_s3_uri
from airflow_grid_resume.ledger.writeoptions import S3WriteOptions
from airflow_grid_resume.run.budgets import Budgets
from airflow_grid_resume.triggers.capacity import SpotCapacityTrigger
from tests.conftest import heartbeat_of, outcome_of
from tests.triggers.test_spot_cloud import watch_for

AMI = "ami-03cf127a"  # one of the AMIs moto ships with
SAVE_ON_TERM = "trap 'echo step-7 > ckpt; echo saved; exit 0' TERM; echo started; while true; do sleep 0.1; done"
SHELL_SAVE = ["sh", "-c", SAVE_ON_TERM]


def interpreter(version: str) -> str:
    """A CPython of ``version`` (3.9: Amazon Linux 2023's system Python) on this machine: pyenv's or on PATH."""
    pyenv = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}")))
    for candidate in [*pyenv, shutil.which(f"python{version}")]:
        if not candidate:
            continue
        probe = subprocess.run(
            [candidate, "-I", "-c", "import sys; print(sys.executable); print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
        )
        lines = probe.stdout.split()
        if probe.returncode == 0 and lines[1:] == [version]:
            return lines[0]
    pytest.fail(f"no python{version} on this machine: install it (pyenv install {version}) to run this test")


def wait_until(predicate, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def agent_pyz(tmp_path_factory) -> str:
    return build_zipapp(str(tmp_path_factory.mktemp("pyz") / "agent.pyz"))


def test_zipapp_runs_on_python39_without_boto3(agent_pyz: str, aws_env, run_uri: str, ledger: RunLedger, tmp_path):
    """Restore, run, SIGTERM, final sync and outcome with python3.9 -I: no site-packages, so no boto3 but the
    zipapp's own."""
    python = interpreter("3.9")
    bare = subprocess.run([python, "-I", "-c", "import boto3"], capture_output=True, text=True)
    assert bare.returncode != 0 and "No module named 'boto3'" in bare.stderr  # the image has no boto3
    env = {**aws_env, "PATH": os.environ["PATH"], "TMPDIR": str(tmp_path)}
    args = ["--run-uri", run_uri, "--no-imds", "--heartbeat-interval", "1", "--min-grace", "1", "--sync-reserve", "1"]
    first = subprocess.Popen(
        [python, "-I", "-X", "utf8", agent_pyz, *args, "--workdir", str(tmp_path / "i1"), "--", *SHELL_SAVE],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: (heartbeat_of(ledger, 1) or {}).get("state") == "running", what="the agent running")
        first.send_signal(signal.SIGTERM)
        out, err = first.communicate(timeout=60)
    finally:
        first.kill()
    assert first.returncode == 0, err
    assert "saved" in out
    outcome = outcome_of(ledger, 1)
    assert outcome["status"] == "interrupted" and outcome["notice"]["source"] == "signal", outcome
    manifest = ledger.read_manifest(ledger.list_manifests()[0])
    assert [f.path for f in manifest.files] == ["ckpt"]
    second = subprocess.run(
        [python, "-I", "-X", "utf8", agent_pyz, *args, "--workdir", str(tmp_path / "i2"), "--", "cat", "ckpt"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode == 0, second.stderr
    assert "step-7" in second.stdout  # restored from session 1's checkpoint
    assert outcome_of(ledger, 2)["status"] == "succeeded"


def test_zipapp_on_a_too_old_python_says_what_it_needs(agent_pyz: str, tmp_path: Path) -> None:
    python = interpreter("3.8")
    proc = subprocess.run([python, "-I", agent_pyz, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 78
    assert "needs python3 >= 3.9" in proc.stderr and "3.8" in proc.stderr


def first_event(trigger) -> dict:
    async def first() -> dict:
        async with contextlib.aclosing(trigger.run()) as events:
            async for event in events:
                return event.payload
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(first())


def launch(
    cloud: LocalSpotCloud,
    agent_pyz: str,
    command: list[str],
    *,
    run_uri: str | None = None,
    session: int = 1,
    write: S3WriteOptions | None = None,
) -> tuple[str, str]:
    """A run prepared in the cloud's S3 as the operator does (or ``run_uri``'s, its command replaced), and its
    ``session`` launched by the capacity trigger: (run URI, instance id). With ``write``, on a strict bucket
    (SSE-KMS required, Object Lock, versioning) and every write carrying those options."""
    write = write or S3WriteOptions()
    ec2 = boto3.client("ec2")
    subnets = sorted(ec2.describe_subnets()["Subnets"], key=lambda s: s["AvailabilityZone"])[:1]
    s3 = boto3.client("s3")
    if run_uri is None:
        bucket = f"stock-{uuid.uuid4().hex[:10]}"
        s3.create_bucket(Bucket=bucket)
        if not write.empty:
            cloud.make_strict(bucket)
        run_id = f"run-{uuid.uuid4().hex[:6]}"
        s3.put_object(
            Bucket=bucket, Key=f"{run_id}/{AGENT_KEY}", Body=Path(agent_pyz).read_bytes(), **write.put_kwargs()
        )
        run_uri = f"s3://{bucket}/{run_id}"
    bucket, _, run_id = run_uri[len("s3://") :].partition("/")
    agent_args = ["--heartbeat-interval", "1", "--log-interval", "0.5", "--imds-poll", "0.2"]
    spec = {"command": command, "agent_args": agent_args, **({"s3_write": write.to_json()} if not write.empty else {})}
    s3.put_object(Bucket=bucket, Key=f"{run_id}/{SPEC_KEY}", Body=json.dumps(spec).encode(), **write.put_kwargs())
    launch_spec = LaunchSpec(image_id=AMI, instance_types=("m5.large",), subnet_ids=(subnets[0]["SubnetId"],))
    trigger = SpotCapacityTrigger(
        run_id=run_id,
        run_uri=run_uri,
        session=session,
        spec=launch_spec.as_dict(),
        started_at=time.time(),
        max_wait=60,
        aws_conn_id=None,
        region_name="us-east-1",
        backoff_base=0.3,
        backoff_max=1.0,
        s3_write=write.to_json(),
    )

    event = first_event(trigger)
    assert event["status"] == "launched", event
    return run_uri, event["instance_id"]


@pytest.fixture
def image_cloud(monkeypatch: pytest.MonkeyPatch):
    """``image_cloud(pythons)``: a local spot cloud whose instances' image has exactly these interpreters."""
    started: list[LocalSpotCloud] = []

    def start(pythons: str) -> LocalSpotCloud:
        monkeypatch.setenv("GRID_RESUME_PYTHONS", pythons)
        cloud = LocalSpotCloud(notice_seconds=3).start()
        started.append(cloud)
        for key, value in cloud.aws_env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        return cloud

    yield start
    for cloud in started:
        cloud.stop()


def test_the_bootstrap_starts_the_agent_with_the_first_python39_and_says_which(image_cloud, agent_pyz: str) -> None:
    """An image whose only usable python3 is 3.9 (and no boto3): the agent runs through a spot notice to its
    outcome, and boot.json names the interpreter."""
    python = interpreter("3.9")
    cloud = image_cloud(f"/nonexistent/python3 {interpreter('3.8')} {python}")
    run_uri, instance_id = launch(cloud, agent_pyz, ["sh", "-c", SAVE_ON_TERM])
    ledger = RunLedger(make_s3_client(), parse_s3_uri(run_uri))
    wait_until(lambda: (heartbeat_of(ledger, 1) or {}).get("state") == "running", what="the agent running")
    boot = ledger.read_record(records.Boot, 1)
    assert boot is not None and boot.python == python and boot.python_version.startswith("3.9."), boot
    assert boot.problem is None and any("3.8" in c for c in boot.candidates), boot
    cloud.interrupt(instance_id, notice=True)
    wait_until(lambda: cloud.instance(instance_id)["state"] == "terminated", what="the instance terminated")
    outcome = outcome_of(ledger, 1)
    assert outcome["status"] == "interrupted" and outcome["notice"]["source"] == "imds", outcome
    assert [f.path for f in ledger.read_manifest(ledger.list_manifests()[0]).files] == ["ckpt"]
    assert b"started" in ledger.read_log(1, 0)[0]


def test_an_image_without_a_usable_python_records_the_image_problem(image_cloud, agent_pyz: str) -> None:
    """Only a python3.8: nothing runs, the instance powers itself off, and boot.json says what to fix, which the
    run's budget rules turn into an immediate failure of the run (no failure retry spent on it)."""
    old = interpreter("3.8")
    cloud = image_cloud(old)
    run_uri, instance_id = launch(cloud, agent_pyz, ["sh", "-c", "echo never > ran"])
    ledger = RunLedger(make_s3_client(), parse_s3_uri(run_uri))
    watch = watch_for(run_uri, instance_id, boot_timeout=60)
    event = first_event(watch)  # what the operator's on_session_end gets
    assert event["status"] == "failed" and event["outcome"]["cause"] == records.CAUSE_IMAGE, event
    assert "no usable Python on this image" in event["reason"]
    assert cloud.instance(instance_id)["state"] == "terminated"
    boot = ledger.read_record(records.Boot, 1)
    assert boot is not None and boot.problem == records.BOOT_NO_PYTHON, boot
    assert "python3 >= 3.9" in boot.message and f"{old} (3.8." in boot.message, boot.message
    assert ledger.read_record(records.SessionStart, 1) is None and not ledger.list_manifests()
    verdict = Budgets(auto_resume=True, max_interruptions=5, failure_retries=3).exhausted(
        "failed", 1, 0, 1, reason=boot.message, cause=records.CAUSE_IMAGE
    )
    assert verdict is not None and "could not start on this image" in verdict and "python3 >= 3.9" in verdict


def test_the_bootstrap_writes_its_record_as_a_strict_bucket_requires(image_cloud, agent_pyz: str) -> None:
    """On a bucket that denies uploads without SSE-KMS and has Object Lock, the bootstrap's own PUT of boot.json
    (signed by ec2/bootpy.py, not botocore) carries the spec's s3_write: the image problem is recorded."""
    cloud = image_cloud(interpreter("3.8"))
    write = S3WriteOptions("aws:kms", "alias/training", "SHA256")
    run_uri, _ = launch(cloud, agent_pyz, ["sh", "-c", "echo never > ran"], write=write)
    ledger = RunLedger(make_s3_client(), parse_s3_uri(run_uri))
    boot = wait_until(lambda: ledger.read_record(records.Boot, 1), what="boot.json")
    assert boot.problem == records.BOOT_NO_PYTHON, boot
    head = boto3.client("s3").head_object(Bucket=ledger.location.bucket, Key=ledger.session_key(1, "boot.json"))
    assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"].endswith("alias/training")
    assert cloud.state()["bucket_rules"]["refused"] == 0


AL2023 = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"


def test_image_id_names_an_ssm_parameter() -> None:
    spec = LaunchSpec(image_id=f"resolve:ssm:{AL2023}", instance_types=("g5.xlarge",), subnet_ids=("subnet-1",))
    assert ssm_parameter(spec.image_id) == AL2023 and ssm_parameter("ami-0123") is None
    with pytest.raises(ValueError, match="or an SSM parameter like 'resolve:ssm:/aws/service/"):
        LaunchSpec(image_id="al2023", instance_types=("g5.xlarge",), subnet_ids=("subnet-1",))


def test_an_ssm_image_id_resolves_to_an_ami_with_its_root_device(aws_env) -> None:
    """What the operator does before launching (operators._resolved_spec): GetParameter, then DescribeImages for
    the root device, since DescribeImages cannot take the parameter; an unknown parameter says what to fix."""
    from airflow_grid_resume.operators import GridRunOperator

    spec = LaunchSpec(
        image_id=f"resolve:ssm:{AL2023}", instance_types=("g5.xlarge",), subnet_ids=("subnet-1",), root_volume_gb=200
    )
    hook = SpotLaunchHook(aws_conn_id=None, region_name="us-east-1")
    op = types.SimpleNamespace(spec=spec, spot_hook=hook, log=logging.getLogger("test"))  # what it reads
    op._resolved_in = functools.partial(GridRunOperator._resolved_in, op)
    resolved = GridRunOperator._resolved_spec(op)
    expected = boto3.client("ssm").get_parameter(Name=AL2023)["Parameter"]["Value"]
    assert resolved.image_id == expected and expected.startswith("ami-")
    assert resolved.root_device_name == "/dev/xvda"
    op.spec = dataclasses.replace(spec, image_id="resolve:ssm:/aws/service/no/such/parameter")
    with pytest.raises(AirflowFailException, match="ParameterNotFound: the SSM parameter does not exist"):
        GridRunOperator._resolved_spec(op)


def test_the_launchers_boot_record_is_the_ledgers() -> None:
    """ec2/bootpy.py writes boot.json without the project's code: what it writes must read as ``records.Boot``."""
    from airflow_grid_resume.ec2 import bootpy

    seen = ["/usr/bin/python3 (3.8.10)"]
    ok = records.Boot.from_json(bootpy.boot_record(4, "/usr/bin/python3.11", seen))
    assert (ok.session, ok.python, ok.problem, ok.candidates) == (4, "/usr/bin/python3.11", None, seen)
    bad = records.Boot.from_json(bootpy.boot_record(4, None, seen, records.BOOT_NO_PYTHON, "fix the image"))
    assert (bad.problem, bad.message, bad.python) == (records.BOOT_NO_PYTHON, "fix the image", None)


def test_an_image_without_any_python3_is_told_from_the_console(image_cloud, agent_pyz: str) -> None:
    """No python3 at all: nothing can write boot.json, so the run trigger reads the bootstrap's line from the
    instance's console output (GetConsoleOutput) and fails the session as the image's problem."""
    cloud = image_cloud("/nonexistent/python3")
    run_uri, instance_id = launch(cloud, agent_pyz, ["sh", "-c", "echo never > ran"])
    event = first_event(watch_for(run_uri, instance_id, boot_timeout=60))
    assert event["status"] == "failed" and event["outcome"]["cause"] == records.CAUSE_IMAGE, event
    assert event["reason"].startswith("grid-resume: no usable Python on this image: the agent needs python3 >= 3.9")
    assert "found: none" in event["reason"]
    ledger = RunLedger(make_s3_client(), parse_s3_uri(run_uri))
    assert ledger.read_record(records.Boot, 1) is None and ledger.read_record(records.SessionStart, 1) is None
