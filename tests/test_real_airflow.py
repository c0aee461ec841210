"""The real thing: scheduler, triggerer, dag-processor and api-server (SQLite, LocalExecutor) run a
DAG with GridRunOperator through an interruption on the local spot cloud. dag.test() runs triggers
in-process and hides classpath and serialization mistakes; this does not."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3

from airflow_grid_resume.agent.restore import Restorer
from airflow_grid_resume.emulator.client import LocalSpotCloud
from airflow_grid_resume.emulator.moto_server import free_port
from tests.conftest import TRAIN
from tests.test_operator import chaos, reference_result, run_ledger

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")

DAG_FILE = """
import os
from datetime import datetime, timedelta, timezone
from airflow.sdk import DAG
from airflow_grid_resume.operators import GridRunOperator

with DAG("grid_real", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), catchup=False) as dag:
    GridRunOperator(
        task_id="train",
        command="python3 train.py 160 0.05",
        workdir=os.environ["GRID_E2E_WORKDIR"],
        artifacts_uri="s3://" + os.environ["GRID_E2E_BUCKET"] + "/grid-runs/",
        instance_types=["g5.xlarge"],
        image_id="ami-03cf127a",
        subnet_ids=os.environ["GRID_E2E_SUBNETS"].split(","),
        aws_conn_id=None,
        region_name="us-east-1",
        poll_interval=0.5,
        instance_check_interval=1.0,
        capacity_backoff=(0.5, 1.0),
        agent_args=["--heartbeat-interval", "1", "--imds-poll", "0.2", "--sync-reserve", "1", "--min-grace", "1"],
        retries=0,
        retry_delay=timedelta(seconds=1),
    )
"""


def airflow(env: dict, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True).stdout


def test_real_components_run_an_interrupted_training_to_the_end(tmp_path: Path) -> None:
    home = tmp_path / "airflow"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "grid_real.py").write_text(DAG_FILE)
    workdir = tmp_path / "training"
    workdir.mkdir()
    shutil.copy(TRAIN, workdir / "train.py")
    with LocalSpotCloud(notice_seconds=3) as cloud:
        aws = {**cloud.aws_env(), "AWS_EC2_METADATA_DISABLED": "true"}
        s3 = boto3.client(
            "s3",
            endpoint_url=cloud.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
        )
        s3.create_bucket(Bucket="real-airflow")
        ec2 = boto3.client(
            "ec2",
            endpoint_url=cloud.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
        )
        subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
            **aws,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "GRID_E2E_WORKDIR": str(workdir),
            "GRID_E2E_BUCKET": "real-airflow",
            "GRID_E2E_SUBNETS": subnet,
        }
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True)
        procs = []
        for component in COMPONENTS:
            with open(tmp_path / f"{component}.log", "wb") as log_file:  # the child keeps its own descriptor
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "airflow", component],
                        env=env,
                        stdout=log_file,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        stop_chaos = threading.Event()  # replaced by the chaos thread's own once the run is triggered
        try:
            deadline = time.monotonic() + 120
            while "grid_real" not in airflow(env, "dags", "list", "-o", "json"):
                assert time.monotonic() < deadline, "the dag-processor never parsed the DAG"
                time.sleep(2)
            airflow(env, "dags", "unpause", "grid_real")
            airflow(env, "dags", "trigger", "grid_real")
            interrupted, stop_chaos = chaos(cloud, times=1, notice=True, after=2.0)
            state = "queued"
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                lines = [
                    ln
                    for ln in airflow(env, "dags", "list-runs", "grid_real", "-o", "json").splitlines()
                    if ln.startswith("[")
                ]
                if lines and json.loads(lines[-1]):
                    state = json.loads(lines[-1])[0]["state"]
                if state in ("success", "failed"):
                    break
                time.sleep(2)
        finally:
            stop_chaos.set()
            for proc in procs:
                os.killpg(proc.pid, signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        logs = "".join((tmp_path / f"{c}.log").read_text(errors="replace")[-3000:] for c in COMPONENTS)
        assert state == "success", logs
        assert len(interrupted) == 1
        os.environ.update(aws)
        ledger = run_ledger("real-airflow")
        statuses = [(ledger.read_outcome(s) or {}).get("status") for s in ledger.list_sessions()]
        assert statuses[0] == "interrupted" and statuses[-1] == "succeeded", statuses
        restored = tmp_path / "restored"
        Restorer(ledger, str(restored)).restore()
        assert (restored / "result.txt").read_text() == reference_result(tmp_path, steps=160)
        task_logs = "".join(p.read_text(errors="replace") for p in (home / "logs").rglob("attempt=*.log*"))
        assert "saved at step" in task_logs  # the training output streamed into the task log
    assert not [p for p in procs if p.poll() is None]
