"""GridRunOperator with dag.test() against the local spot cloud: real agents on emulated instances."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import pytest

from airflow_grid_resume.agent.ledger import RunLedger
from airflow_grid_resume.agent.s3client import make_s3_client
from airflow_grid_resume.agent.uri import parse_s3_uri
from airflow_grid_resume.emulator.client import LocalSpotCloud
from tests.conftest import TRAIN

AMI = "ami-03cf127a"


@pytest.fixture(scope="module")
def airflow_db() -> None:
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)


@pytest.fixture(scope="module")
def spot_cloud(airflow_db):
    with LocalSpotCloud(notice_seconds=3) as cloud:
        saved = {k: os.environ.get(k) for k in cloud.aws_env()}
        os.environ.update(cloud.aws_env())
        os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
        yield cloud
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def make_dag(dag_id: str, workdir: Path, bucket: str, **op_kwargs):
    from airflow.sdk import DAG

    from airflow_grid_resume.operators import GridRunOperator

    subnets = sorted(boto3.client("ec2").describe_subnets()["Subnets"], key=lambda s: s["AvailabilityZone"])[:2]
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc)) as dag:
        GridRunOperator(
            task_id="train",
            command=op_kwargs.pop("command", "python3 train.py 80 0.05"),
            workdir=str(workdir),
            artifacts_uri=f"s3://{bucket}/grid-runs/",
            instance_types=["g5.xlarge", "g4dn.xlarge"],
            image_id=AMI,
            subnet_ids=[s["SubnetId"] for s in subnets],
            aws_conn_id=None,
            region_name="us-east-1",
            poll_interval=0.3,
            instance_check_interval=1.0,
            capacity_backoff=(0.5, 1.0),
            agent_args=op_kwargs.pop(
                "agent_args",
                ["--heartbeat-interval", "1", "--imds-poll", "0.2", "--sync-reserve", "1", "--min-grace", "1"],
            ),
            retry_delay=timedelta(seconds=1),
            **op_kwargs,
        )
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
    return dag


@pytest.fixture
def training_dir(tmp_path: Path) -> Path:
    workdir = tmp_path / "training"
    workdir.mkdir()
    shutil.copy(TRAIN, workdir / "train.py")
    return workdir


def reference_result(tmp_path: Path, steps: int = 80) -> str:
    ref = tmp_path / f"reference-{steps}"
    ref.mkdir(exist_ok=True)
    subprocess.run([sys.executable, TRAIN, str(steps), "0.0"], cwd=ref, check=True, capture_output=True)
    return (ref / "result.txt").read_text()


def run_ledger(bucket: str) -> RunLedger:
    client = make_s3_client()
    runs = {
        o["Key"].rsplit("/spec.json", 1)[0]
        for o in client.list_objects_v2(Bucket=bucket)["Contents"]
        if o["Key"].endswith("/spec.json")
    }
    assert len(runs) == 1, runs
    return RunLedger(client, parse_s3_uri(f"s3://{bucket}/{runs.pop()}"))


def result_of(ledger: RunLedger, tmp_path: Path) -> str:
    from airflow_grid_resume.agent.restore import Restorer

    out = tmp_path / f"restored-{uuid.uuid4().hex[:6]}"
    Restorer(ledger, str(out)).restore()
    return (out / "result.txt").read_text()


def test_a_run_without_interruption(spot_cloud, training_dir: Path, tmp_path: Path) -> None:
    bucket = f"op-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    dag = make_dag(f"grid_plain_{uuid.uuid4().hex[:6]}", training_dir, bucket, retries=0)
    dagrun = dag.test()
    assert dagrun.state == "success"
    ledger = run_ledger(bucket)
    assert ledger.list_sessions() == [1]
    assert ledger.read_outcome(1)["status"] == "succeeded"
    assert result_of(ledger, tmp_path) == reference_result(tmp_path)


def test_two_interruptions_resume_to_the_same_result(spot_cloud, training_dir: Path, tmp_path: Path) -> None:
    bucket = f"op-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    interrupted: list[str] = []
    stop = threading.Event()

    def chaos() -> None:
        """Interrupt the first two sessions once they have trained for a while."""
        while not stop.is_set() and len(interrupted) < 2:
            for instance in spot_cloud.instances():
                if instance["state"] != "running" or instance["instance_id"] in interrupted or not instance["pid"]:
                    continue
                if time.time() - instance["launched_at"] > 1.5:
                    spot_cloud.interrupt(instance["instance_id"], notice=True)
                    interrupted.append(instance["instance_id"])
            time.sleep(0.2)

    thread = threading.Thread(target=chaos, daemon=True)
    thread.start()
    try:
        dag = make_dag(f"grid_chaos_{uuid.uuid4().hex[:6]}", training_dir, bucket, retries=0, max_interruptions=3)
        dagrun = dag.test()
    finally:
        stop.set()
        thread.join(5)
    assert len(interrupted) == 2
    assert dagrun.state == "success"
    ledger = run_ledger(bucket)
    statuses = [ledger.read_outcome(s)["status"] for s in ledger.list_sessions()]
    assert statuses == ["interrupted", "interrupted", "succeeded"]  # no failure retry spent (retries=0)
    assert result_of(ledger, tmp_path) == reference_result(tmp_path)


def new_bucket() -> str:
    bucket = f"op-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return bucket


def chaos(cloud: LocalSpotCloud, *, times: int, notice: bool, after: float = 1.5) -> tuple[list[str], threading.Event]:
    """Interrupt the next ``times`` instances once each has run ``after`` seconds."""
    interrupted: list[str] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set() and len(interrupted) < times:
            for instance in cloud.instances():
                ready = (
                    instance["state"] == "running" and instance["pid"] and time.time() - instance["launched_at"] > after
                )
                if ready and instance["instance_id"] not in interrupted:
                    cloud.interrupt(instance["instance_id"], notice=notice)
                    interrupted.append(instance["instance_id"])
            time.sleep(0.2)

    threading.Thread(target=loop, daemon=True).start()
    return interrupted, stop


def test_script_failure_is_retried_then_fails_naming_the_budget(spot_cloud, training_dir, capfd) -> None:
    bucket = new_bucket()
    dag = make_dag(
        f"grid_fail_{uuid.uuid4().hex[:6]}",
        training_dir,
        bucket,
        retries=1,
        command="echo 'CUDA out of memory' >&2; exit 3",
    )
    assert dag.test().state == "failed"
    ledger = run_ledger(bucket)
    assert [ledger.read_outcome(s)["status"] for s in ledger.list_sessions()] == ["failed", "failed"]
    out = capfd.readouterr().out
    assert "script failure budget exhausted: 2 failures > retries=1" in out
    assert "CUDA out of memory" in out


def test_interruption_budget_exhausted(spot_cloud, training_dir, capfd) -> None:
    bucket = new_bucket()
    _, stop = chaos(spot_cloud, times=5, notice=True)
    try:
        dag = make_dag(
            f"grid_budget_{uuid.uuid4().hex[:6]}",
            training_dir,
            bucket,
            retries=0,
            max_interruptions=1,
            command="python3 train.py 400 0.05",
        )
        assert dag.test().state == "failed"
    finally:
        stop.set()
    assert "interruption budget exhausted: 2 interruptions > max_interruptions=1" in capfd.readouterr().out
    ledger = run_ledger(bucket)
    assert [ledger.read_outcome(s)["status"] for s in ledger.list_sessions()] == ["interrupted", "interrupted"]


def test_lost_instance_resumes_from_the_last_checkpoint(spot_cloud, training_dir, tmp_path) -> None:
    bucket = new_bucket()
    interrupted, stop = chaos(spot_cloud, times=1, notice=False, after=2.5)
    try:
        dag = make_dag(
            f"grid_lost_{uuid.uuid4().hex[:6]}",
            training_dir,
            bucket,
            retries=0,
            heartbeat_timeout=3,
            agent_args=["--heartbeat-interval", "1", "--sync-interval", "1"],
        )
        assert dag.test().state == "success"
    finally:
        stop.set()
    assert len(interrupted) == 1
    ledger = run_ledger(bucket)
    assert ledger.read_outcome(1) is None  # a hard loss: the agent never wrote an outcome
    assert ledger.read_outcome(2)["status"] == "succeeded"
    assert result_of(ledger, tmp_path) == reference_result(tmp_path)


def test_max_run_terminates_the_instance(spot_cloud, training_dir, capfd) -> None:
    bucket = new_bucket()
    dag = make_dag(
        f"grid_maxrun_{uuid.uuid4().hex[:6]}", training_dir, bucket, retries=2, max_run=4, command="sleep 300"
    )
    before = {i["instance_id"] for i in spot_cloud.instances()}
    assert dag.test().state == "failed"
    assert "max_run (4 s) reached in session 1" in capfd.readouterr().out
    mine = [i for i in spot_cloud.instances() if i["instance_id"] not in before]
    assert len(mine) == 1
    wait = time.monotonic() + 10
    while spot_cloud.instance(mine[0]["instance_id"])["state"] != "terminated" and time.monotonic() < wait:
        time.sleep(0.2)
    assert spot_cloud.instance(mine[0]["instance_id"])["state"] == "terminated"


def test_capacity_withheld_then_released(spot_cloud, training_dir, tmp_path, capfd) -> None:
    bucket = new_bucket()
    dag = make_dag(f"grid_drought_{uuid.uuid4().hex[:6]}", training_dir, bucket, retries=0)
    spot_cloud.set_capacity("*", "*", available=False, for_seconds=5)
    try:
        assert dag.test().state == "success"
    finally:
        spot_cloud.set_capacity("*", "*", available=True, market="all")
    out = capfd.readouterr().out
    assert "no spot capacity for g5.xlarge in" in out
    assert re.search(r"session 1: waited \d+ s for capacity over \d+ rounds", out)  # kept in the task's own log
    assert result_of(run_ledger(bucket), tmp_path) == reference_result(tmp_path)


def test_parameters_are_validated_with_their_names() -> None:
    from airflow_grid_resume.operators import GridRunOperator

    base = dict(
        task_id="t",
        command="python train.py",
        artifacts_uri="s3://b/runs",
        instance_types=["g5.xlarge"],
        image_id="ami-1",
        subnet_ids=["subnet-1"],
    )
    cases = [
        ({"artifacts_uri": "/local/path"}, "artifacts_uri"),
        ({"command": "  "}, "command"),
        ({"instance_types": []}, "instance_types"),
        ({"max_interruptions": -1}, "max_interruptions"),
        ({"max_run": -5}, "max_run"),
        ({"capacity_wait": timedelta(0)}, "capacity_wait"),
        ({"image_id": "ubuntu-22"}, "image_id"),
    ]
    for change, name in cases:
        with pytest.raises(ValueError, match=name):
            GridRunOperator(**{**base, **change})
