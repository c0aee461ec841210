"""The real thing: scheduler, triggerer, dag-processor and api-server (SQLite, LocalExecutor) run a
DAG with GridRunOperator through a capacity wait and an interruption on the local spot cloud, and a
user marks another deferred run failed through the REST API. dag.test() runs triggers in-process
and hides classpath and serialization mistakes; this does not."""

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
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3

from airflow_grid_resume.agent.ledger import RunLedger
from airflow_grid_resume.agent.restore import Restorer
from airflow_grid_resume.agent.s3client import make_s3_client
from airflow_grid_resume.agent.uri import parse_s3_uri
from airflow_grid_resume.emulator.client import LocalSpotCloud
from airflow_grid_resume.emulator.moto_server import free_port
from tests.conftest import TRAIN
from tests.test_operator import reference_result

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")

DAG_FILE = """
import os
from datetime import datetime, timedelta, timezone
from airflow.sdk import DAG
from airflow_grid_resume.operators import GridRunOperator

COMMON = dict(
    workdir=os.environ["GRID_E2E_WORKDIR"],
    artifacts_uri="s3://" + os.environ["GRID_E2E_BUCKET"] + "/grid-runs/",
    image_id="ami-03cf127a",
    subnet_ids=os.environ["GRID_E2E_SUBNETS"].split(","),
    aws_conn_id=None,
    region_name="us-east-1",
    poll_interval=0.5,
    instance_check_interval=1.0,
    capacity_backoff=(0.5, 1.0),
    agent_args=["--heartbeat-interval", "1", "--imds-poll", "0.2", "--sync-reserve", "1", "--min-grace", "1"],
    retries=0,
    retry_delay=timedelta(hours=1),
)

with DAG("grid_real", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), catchup=False):
    GridRunOperator(task_id="train", command="python3 train.py 160 0.05", instance_types=["g5.xlarge"], **COMMON)

with DAG("grid_real_stop", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), catchup=False):
    GridRunOperator(task_id="train", command="sleep 600", instance_types=["g4dn.xlarge"], **COMMON)
"""


class Api:
    """The api-server's public REST API, as a user's script or the UI calls it."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.token: str | None = None

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        if self.token is None:
            with urllib.request.urlopen(f"{self.base}/auth/token", timeout=10) as resp:  # all-admins mode
                self.token = json.loads(resp.read())["access_token"]
        req = urllib.request.Request(
            f"{self.base}/api/v2{path}",
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def task(self, dag_id: str, run_id: str) -> dict:
        return self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/train")


def interrupt_after_a_checkpoint(cloud: LocalSpotCloud, s3: Any, interrupted: list[str]) -> None:
    """Interrupt (with a notice) grid_real's first session once it has trained past its first checkpoints."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        listed = s3.list_objects_v2(Bucket="real-airflow", Prefix="grid-runs/grid_real/").get("Contents", [])
        if any("/sessions/000001/logs/" in o["Key"] for o in listed):
            run = next(o["Key"] for o in listed if o["Key"].endswith("/spec.json")).rsplit("/spec.json", 1)[0]
            text, _ = RunLedger(s3, parse_s3_uri(f"s3://real-airflow/{run}")).read_log(1)
            running = [i for i in cloud.instances() if i["instance_type"] == "g5.xlarge" and i["state"] == "running"]
            if b"step 10\n" in text and running:
                cloud.interrupt(running[0]["instance_id"], notice=True)
                interrupted.append(running[0]["instance_id"])
                return
        time.sleep(0.5)


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except (OSError, ValueError, KeyError):
            result = None
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


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
        api = Api(port)
        try:
            wait_for("the api-server", lambda: api.call("GET", "/version"), 120)
            wait_for("the DAGs to be parsed", lambda: api.call("GET", "/dags/grid_real_stop")["dag_id"], 120, 2)
            for dag_id in ("grid_real", "grid_real_stop"):
                api.call("PATCH", f"/dags/{dag_id}", {"is_paused": False})
            # No g5 capacity at first: the first try waits in the capacity trigger, then watches the run
            # in the run trigger: two deferrals in one try, whose story must all reach the task log.
            cloud.set_capacity("g5.xlarge", "*", available=False)
            run_id = api.call("POST", "/dags/grid_real/dagRuns", {"logical_date": None})["dag_run_id"]
            stop_id = api.call("POST", "/dags/grid_real_stop/dagRuns", {"logical_date": None})["dag_run_id"]
            wait_for("grid_real to wait for capacity", lambda: api.task("grid_real", run_id)["state"] == "deferred", 90)
            time.sleep(3)  # a few rounds of the capacity trigger
            cloud.set_capacity("g5.xlarge", "*", available=True)
            interrupted: list[str] = []
            threading.Thread(target=interrupt_after_a_checkpoint, args=(cloud, s3, interrupted), daemon=True).start()

            # A user marks the deferred task failed: the trigger's on_kill terminates its instance.
            stopped = wait_for(
                "grid_real_stop's instance to run while its task is deferred",
                lambda: (
                    api.task("grid_real_stop", stop_id)["state"] == "deferred"
                    and [i for i in cloud.instances() if i["instance_type"] == "g4dn.xlarge" and i["pid"]]
                ),
                120,
            )[0]
            # Wait until the run trigger really runs in the triggerer (it writes watch.json at once): a task
            # marked failed before that loses its trigger without on_kill, and only the agent's own
            # unwatched timeout (tested in test_agent.py) would end the instance.
            wait_for(
                "the run trigger of grid_real_stop to start watching",
                lambda: [
                    o
                    for o in s3.list_objects_v2(Bucket="real-airflow", Prefix="grid-runs/grid_real_stop/")["Contents"]
                    if o["Key"].endswith("/sessions/000001/watch.json")
                ],
                60,
            )
            links = api.call("GET", f"/dags/grid_real_stop/dagRuns/{stop_id}/taskInstances/train/links")
            assert links["extra_links"]["Spot instance"].endswith("instanceId=" + stopped["instance_id"]), links
            assert (
                "/s3/buckets/real-airflow?region=us-east-1&prefix=grid-runs/grid_real_stop/train/"
                in (links["extra_links"]["Run artifacts"])
            ), links
            api.call(
                "PATCH",
                f"/dags/grid_real_stop/dagRuns/{stop_id}/taskInstances/train",
                {"new_state": "failed"},
            )
            wait_for(
                "the instance of the task marked failed to be terminated",
                lambda: cloud.instance(stopped["instance_id"])["state"] == "terminated",
                60,
            )

            state = wait_for(
                "grid_real to finish",
                lambda: (
                    (s := api.call("GET", f"/dags/grid_real/dagRuns/{run_id}")["state"]) in ("success", "failed") and s
                ),
                240,
                2,
            )
        finally:
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
        client = make_s3_client()
        spec_keys = [o["Key"] for o in client.list_objects_v2(Bucket="real-airflow")["Contents"]]
        real_run = next(k for k in spec_keys if k.endswith("/spec.json") and "/grid_real/" in k)
        ledger = RunLedger(client, parse_s3_uri("s3://real-airflow/" + real_run.rsplit("/spec.json", 1)[0]))
        statuses = [(ledger.read_outcome(s) or {}).get("status") for s in ledger.list_sessions()]
        assert statuses[0] == "interrupted" and statuses[-1] == "succeeded", statuses
        restored = tmp_path / "restored"
        Restorer(ledger, str(restored)).restore()
        assert (restored / "result.txt").read_text() == reference_result(tmp_path, steps=160)
        # The first try's story, in its log files: the capacity wait (replayed into the worker's log,
        # since the run trigger's log replaces the capacity trigger's), the launch, the streamed output.
        try_dir = next((home / "logs").rglob("dag_id=grid_real/**/task_id=train"))
        first_try = "".join(p.read_text(errors="replace") for p in sorted(try_dir.glob("attempt=1.log*")))
        assert "capacity wait: no spot capacity for g5.xlarge" in first_try
        assert "session 1: launched spot instance" in first_try
        assert "saved at step" in first_try  # the training output streamed into the task log
        assert "was interrupted" in first_try
        second_try = "".join(p.read_text(errors="replace") for p in sorted(try_dir.glob("attempt=2.log*")))
        assert "resumed at step" in second_try and "done" in second_try
    assert not [p for p in procs if p.poll() is None]
