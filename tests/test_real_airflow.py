"""The real thing: scheduler, triggerer, dag-processor and api-server (SQLite, LocalExecutor) run a
DAG with GridRunOperator through a capacity wait and an interruption on the local spot cloud, with
EC2's throttling, its eventual consistency, 503s and a lost RunInstances answer, and a user marks
another deferred run failed through the REST API. dag.test() runs triggers in-process
and hides classpath and serialization mistakes; this does not."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import boto3

from airflow_grid_resume.agent.ledger import RunLedger
from airflow_grid_resume.agent.restore import Restorer
from airflow_grid_resume.agent.s3client import make_s3_client
from airflow_grid_resume.agent.uri import parse_s3_uri
from airflow_grid_resume.demo.stack import AirflowStack, wait_for
from airflow_grid_resume.emulator.client import LocalSpotCloud
from tests.conftest import TRAIN
from tests.test_operator import reference_result

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
        stack = AirflowStack(
            home,
            home / "dags",
            {**aws, "GRID_E2E_WORKDIR": str(workdir), "GRID_E2E_BUCKET": "real-airflow", "GRID_E2E_SUBNETS": subnet},
        )
        api = stack.api
        try:
            stack.start("grid_real_stop")
            for dag_id in ("grid_real", "grid_real_stop"):
                api.call("PATCH", f"/dags/{dag_id}", {"is_paused": False})
            # No g5 capacity at first: the first try waits in the capacity trigger, then watches the run
            # in the run trigger: two deferrals in one try, whose story must all reach the task log.
            cloud.set_capacity("g5.xlarge", "*", available=False)
            # And an EC2 as unkind as the real one, for the real scheduler and triggerer too: EC2's throttling
            # buckets on every API, new instances unknown to DescribeInstances for their first 3 s, 503s.
            cloud.set_throttle("defaults")
            cloud.set_consistency(describe_not_found_seconds=3.0)
            cloud.inject_fault("DescribeInstances", code="Unavailable", count=3)
            run_id = api.call("POST", "/dags/grid_real/dagRuns", {"logical_date": None})["dag_run_id"]
            stop_id = api.call("POST", "/dags/grid_real_stop/dagRuns", {"logical_date": None})["dag_run_id"]
            wait_for(
                "grid_real to wait for capacity",
                lambda: api.task_instance("grid_real", run_id, "train")["state"] == "deferred",
                90,
            )
            # the worker's own launch attempt failed once; wait for two rounds of the capacity trigger
            wait_for("the capacity trigger to try", lambda: cloud.state()["counters"]["capacity_errors"] >= 3, 60, 0.5)
            cloud.set_capacity("g5.xlarge", "*", available=True)
            cloud.drop_responses("RunInstances", count=1)  # the launch that follows happens; its answer is lost
            interrupted: list[str] = []
            threading.Thread(target=interrupt_after_a_checkpoint, args=(cloud, s3, interrupted), daemon=True).start()

            # A user marks the deferred task failed: the trigger's on_kill terminates its instance.
            stopped = wait_for(
                "grid_real_stop's instance to run while its task is deferred",
                lambda: (
                    api.task_instance("grid_real_stop", stop_id, "train")["state"] == "deferred"
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
            # the local spot cloud's own pages (the AWS console cannot show it)
            instance_page = f"{cloud.endpoint_url}/_emulator/pages/instances/{stopped['instance_id']}"
            assert links["extra_links"]["Spot instance"] == instance_page, links
            assert links["extra_links"]["Run artifacts"].startswith(
                f"{cloud.endpoint_url}/_emulator/pages/ledger?bucket=real-airflow&prefix=grid-runs%2Fgrid_real_stop%2Ftrain%2F"
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
            stack.stop()
        logs = stack.log_tails()
        assert state == "success", logs
        assert len(interrupted) == 1
        os.environ.update(aws)
        client = make_s3_client()
        spec_keys = [o["Key"] for o in client.list_objects_v2(Bucket="real-airflow")["Contents"]]
        real_run = next(k for k in spec_keys if k.endswith("/spec.json") and "/grid_real/" in k)
        ledger = RunLedger(client, parse_s3_uri("s3://real-airflow/" + real_run.rsplit("/spec.json", 1)[0]))
        statuses = [(ledger.read_outcome(s) or {}).get("status") for s in ledger.list_sessions()]
        assert statuses[0] == "interrupted" and statuses[-1] == "succeeded", statuses
        launched = [i for i in cloud.instances() if i["instance_type"] == "g5.xlarge"]
        assert len(launched) == len(statuses), f"one instance per session, lost answer or not: {launched}"
        assert not [i for i in cloud.instances() if i["state"] in ("pending", "running")], cloud.instances()
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
        # the interruption in one line, no traceback; the last try ends with the run summary
        assert "spot interruption: session 1 ended by a spot notice; the next try resumes from checkpoint" in first_try
        assert "Traceback" not in first_try
        second_try = "".join(p.read_text(errors="replace") for p in sorted(try_dir.glob("attempt=2.log*")))
        assert "resumed at step" in second_try and "done" in second_try
        assert "run summary: 2 sessions, 1 interruptions, 0 failures; succeeded" in second_try
        assert "newest checkpoint: s3://real-airflow/grid-runs/grid_real/train/" in second_try
    assert not [p for p in stack.procs if p.poll() is None]
