"""The CeleryExecutor and remote logging to S3, for real: the way Airflow's official compose file runs Airflow.

Redis (Debian's ``redis-server``) and PostgreSQL are started here; an ``airflow celery worker`` runs the tasks; two
triggerers; ``[logging] remote_logging`` to the local spot cloud's S3. One DAG run goes through:

- **the Celery worker SIGKILLed mid-``execute``**, with its pool and the task's processes, as a lost node would
  kill it: right after its RunInstances call was carried out (the answer lost with the worker). A new worker
  starts; the scheduler finds the try's heartbeat gone and retries it; the retry must watch the instance already
  launched for session 1, not launch a second (one instance per session);
- **a spot interruption** of session 1 (with a notice): session 2 resumes from its checkpoint;
- **the triggerer streaming session 2 SIGKILLed**: the other takes the watch over. A killed triggerer uploads no
  log, so what it wrote into the task log must already be in the remote log (``watch/remotecopy.py``), and the
  api-server's task log endpoint must show it from there once the local log files are gone.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import time
from pathlib import Path

import boto3
import psutil
import pytest

from airflow_grid_resume.agent.restore import Restorer
from airflow_grid_resume.demo.stack import CELERY_WORKER, AirflowStack, PostgresServer, RedisServer, wait_for
from airflow_grid_resume.emulator.client import LocalSpotCloud
from airflow_grid_resume.ledger.store import RunLedger
from airflow_grid_resume.ledger.uri import parse_s3_uri
from airflow_grid_resume.run.ending import session_status
from airflow_grid_resume.run.summary import read_records
from tests import chaos_kills
from tests.conftest import TRAIN
from tests.system.test_real_airflow_ha import steps_in
from tests.test_operators import reference_result

# A whole Airflow as subprocesses: make test-stack runs these (.ci/run calls it), make test does not.
pytestmark = pytest.mark.airflow_stack

# Long enough (60 s) that session 1 still trains once the retry of the killed try watches it.
STEPS, STEP_SECONDS, POLL, OFFSET_SAVE = 600, 0.1, 0.5, 3.0
BUCKET, LOGS_BUCKET, DAG_ID = "celery-runs", "celery-logs", "grid_celery"
KILLS_DIR = str(Path(chaos_kills.__file__).parent)
DAG_FILE = f"""
import os
import sys
from datetime import datetime, timedelta, timezone
from airflow.sdk import DAG
from airflow_grid_resume.operators import GridRunOperator

sys.path.append(os.environ["GRID_CHAOS_KILLS_DIR"])
import chaos_kills  # noqa: E402  the worker hangs after its first RunInstances, for the test to kill it

chaos_kills.arm_worker_hold_from_env()

with DAG("{DAG_ID}", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), catchup=False):
    GridRunOperator(
        task_id="train",
        command="python3 train.py {STEPS} {STEP_SECONDS}",
        instance_types=["g5.xlarge"],
        workdir=os.environ["GRID_E2E_WORKDIR"],
        artifacts_uri="s3://{BUCKET}/grid-runs/",
        image_id="ami-03cf127a",
        subnet_ids=os.environ["GRID_E2E_SUBNETS"].split(","),
        aws_conn_id=None,
        region_name="us-east-1",
        poll_interval={POLL},
        log_offset_save_interval={OFFSET_SAVE},
        instance_check_interval=1.0,
        capacity_backoff=(0.5, 1.0),
        agent_args=["--heartbeat-interval", "1", "--log-interval", "0.5", "--imds-poll", "0.2", "--sync-reserve", "1",
                    "--min-grace", "1", "--notice-window", "3"],
        retries=3,
        retry_delay=timedelta(seconds=1),
    )
"""
# Triggerer liveness lowered from 5 s / 30 s, and a try whose worker died is failed after 10 s instead of 300 s.
HEARTBEAT, HEALTH_THRESHOLD, TI_HEARTBEAT_TIMEOUT = 1, 6, 10


def find_ledger(s3: object) -> RunLedger | None:
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"grid-runs/{DAG_ID}/").get("Contents", [])  # type: ignore[attr-defined]
    spec = next((o["Key"] for o in listed if o["Key"].endswith("/spec.json")), None)
    return RunLedger(s3, parse_s3_uri(f"s3://{BUCKET}/{spec.rsplit('/spec.json', 1)[0]}")) if spec else None


def kill_tree(stack: AirflowStack, name: str) -> int:
    """SIGKILL component ``name`` and every process under it (a Celery worker's pool, the task supervisor and the
    task process, whatever their process groups), as a lost node would. Returns how many processes died."""
    root = psutil.Process(stack.running[name].pid)
    tree = [root, *root.children(recursive=True)]
    for proc in tree:
        proc.send_signal(signal.SIGKILL)
    stack.kill(name, signal.SIGKILL)  # the group, and reap it
    psutil.wait_procs(tree, timeout=10)
    return len(tree)


@pytest.mark.timeout(600)
def test_celery_worker_killed_mid_execute_and_remote_logs_survive_a_triggerer_kill(tmp_path: Path) -> None:
    home = tmp_path / "airflow"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / f"{DAG_ID}.py").write_text(DAG_FILE)
    workdir = tmp_path / "training"
    workdir.mkdir()
    shutil.copy(TRAIN, workdir / "train.py")
    held = tmp_path / "worker-held"
    with PostgresServer() as pg, RedisServer() as redis, LocalSpotCloud(notice_seconds=3) as cloud:
        aws = {**cloud.aws_env(), "AWS_EC2_METADATA_DISABLED": "true"}
        session = boto3.session.Session(aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1")
        s3 = session.client("s3", endpoint_url=cloud.endpoint_url)
        for bucket in (BUCKET, LOGS_BUCKET):
            s3.create_bucket(Bucket=bucket)
        subnet = session.client("ec2", endpoint_url=cloud.endpoint_url).describe_subnets()["Subnets"][0]["SubnetId"]
        remote_conn = {
            "conn_type": "aws",
            "login": "x",
            "password": "x",
            "extra": {"endpoint_url": cloud.endpoint_url, "region_name": "us-east-1"},
        }
        stack = AirflowStack(
            home,
            home / "dags",
            {
                **aws,
                "GRID_E2E_WORKDIR": str(workdir),
                "GRID_E2E_SUBNETS": subnet,
                "GRID_CHAOS_KILLS_DIR": KILLS_DIR,
                chaos_kills.WORKER_HOLD_ENV: f"RunInstances:{held}",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": str(HEARTBEAT),
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(HEALTH_THRESHOLD),
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(TI_HEARTBEAT_TIMEOUT),
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
                # remote logging to the local spot cloud's S3, through a connection as a deployment has it
                "AIRFLOW__LOGGING__REMOTE_LOGGING": "True",
                "AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER": f"s3://{LOGS_BUCKET}/airflow-logs",
                "AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID": "spot_cloud_logs",
                "AIRFLOW_CONN_SPOT_CLOUD_LOGS": json.dumps(remote_conn),
            },
            components=("api-server", "scheduler", "dag-processor", "log-server", CELERY_WORKER),
            database_url=pg.url,
            celery_broker=redis.url,
        )
        api = stack.api
        run_id = ""
        phases: list[str] = []
        started = time.monotonic()

        def mark(label: str) -> None:
            phases.append(f"{label} {time.monotonic() - started:.0f} s")

        def ti() -> dict:
            return api.task_instance(DAG_ID, run_id, "train")

        def alive_triggerers() -> set[int]:
            jobs = api.call("GET", "/jobs?job_type=TriggererJob&is_alive=true&limit=20")["jobs"]
            return {int(j["id"]) for j in jobs}

        try:
            stack.start(DAG_ID)
            names: dict[int, str] = {}  # triggerer job id -> its process name: started one at a time
            for name in ("triggerer-1", "triggerer-2"):
                before = alive_triggerers()
                stack.launch(name)
                names[wait_for(f"{name} to start", lambda b=before: alive_triggerers() - b, 90, 1).pop()] = name
            mark("stack up")
            run_id = api.trigger(DAG_ID)

            # 1. The Celery worker dies mid-execute, right after RunInstances was carried out.
            wait_for("the worker to launch session 1 and hang", held.exists, 120, 0.5)
            assert len(cloud.instances()) == 1
            killed_processes = kill_tree(stack, CELERY_WORKER)
            mark(f"worker killed ({killed_processes} processes)")
            stack.launch(CELERY_WORKER)
            ledger = wait_for("the run's ledger", lambda: find_ledger(s3), 60, 1)

            # 2. The retry watches session 1; a spot interruption with a notice ends it.
            wait_for("session 1 to stream", lambda: len(steps_in(local_task_log(home))) >= 40, 150, 0.5)
            mark("session 1 streaming")
            (first,) = cloud.instances()
            cloud.interrupt(first["instance_id"], notice=True)

            # 3. Session 2 streams; the triggerer watching it is SIGKILLed.
            wait_for("session 2 to start", lambda: 2 in ledger.list_sessions(), 120, 0.5)
            wait_for(
                "session 2 to stream",
                lambda: ti()["state"] == "deferred" and "session 2" in local_task_log(home) and ti()["triggerer_job"],
                120,
                0.5,
            )
            wait_for(
                "session 2's output in the watch's log", lambda: len(steps_in(watch_log(home, ti()))) >= 60, 120, 0.5
            )
            watching = ti()
            holder = int(watching["triggerer_job"]["id"])
            stack.kill(names[holder], signal.SIGKILL)
            written_by_killed = watch_log(home, watching)  # everything it wrote: it is dead
            mark("triggerer killed")
            wait_for(
                "the other triggerer to take the watch over",
                lambda: (ti().get("triggerer_job") or {}).get("id") not in (None, holder),
                60,
                0.5,
            )
            state = wait_for(
                f"{DAG_ID} to finish",
                lambda: (
                    (s := api.call("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")["state"]) in ("success", "failed") and s
                ),
                180,
                1,
            )
            mark("run ended")
            final = ti()
            # The worker uploads the try's log once its process has exited, just after the run's state is set.
            last_log = f"airflow-logs/dag_id={DAG_ID}/run_id={run_id}/task_id=train/attempt={final['try_number']}.log"
            wait_for(
                "the worker to upload the last try's log",
                lambda: b"run summary" in remote_object(s3, last_log),
                60,
                1,
            )
            # The pods are gone: only the remote log is left for the UI to show.
            shutil.rmtree(home / "logs")
            shown = {n: api_log(api, run_id, n) for n in range(1, int(final["try_number"]) + 1)}
            remote_keys = [o["Key"] for o in s3.list_objects_v2(Bucket=LOGS_BUCKET).get("Contents", [])]
        except BaseException:
            print(f"{stack.log_tails()}\nphases: {phases}")
            raise
        finally:
            stack.stop()
        print(f"phases: {', '.join(phases)}\nremote log objects: {remote_keys}")
        assert state == "success", stack.log_tails()

        # One instance per session, whatever the worker's death: the retry found session 1's instance.
        statuses = [session_status(r).value for r in read_records(ledger)]
        assert statuses == ["interrupted", "succeeded"], statuses
        instances = cloud.instances()
        assert len(instances) == 2, f"two sessions, so two instances: {instances}"
        assert all(i["state"] == "terminated" for i in instances), instances
        restored = tmp_path / "restored"
        Restorer(ledger, str(restored)).restore()
        assert (restored / "result.txt").read_text() == reference_result(tmp_path, steps=STEPS)

        # The tasks ran on the Celery worker: the first try died with it, the retries ran on its successor.
        worker_log = (home / f"{CELERY_WORKER}.log").read_text(errors="replace")
        assert len(re.findall(r"execute_workload\[[0-9a-f-]+\] received", worker_log)) >= 3, worker_log[-3000:]
        assert int(final["try_number"]) >= 3, final

        # The whole story in the task log, as the api-server shows it from the remote log.
        story = "\n".join(shown.values())
        for expected in (
            "spot interruption: session 1 ended: spot interruption notice",
            "resumed at step",
            "run summary: 2 sessions, 1 interruptions, 0 failures; succeeded",
        ):
            assert expected in story, f"{expected!r} is not in the task log:\n{story[-6000:]}"
        assert f"s3://{LOGS_BUCKET}/airflow-logs/" in story, "the log did not come from the remote log"
        # What the killed triggerer wrote is in the remote log (it uploaded nothing itself), and shown.
        killed_steps = set(steps_in(written_by_killed))
        assert len(killed_steps) >= 60, written_by_killed[-2000:]
        missing = killed_steps - set(steps_in(story))
        assert not missing, f"{len(missing)} lines the killed triggerer wrote are not in the remote log"
        # Every line of the output is there: session 1's, what the killed triggerer wrote of session 2's, and what
        # its successor wrote after.
        never_shown = set(range(1, STEPS + 1)) - set(steps_in(story))
        assert not never_shown, (
            f"{len(never_shown)} lines of the output are not in the task log: {sorted(never_shown)[:20]}"
        )
    assert not [p for p in stack.procs if p.poll() is None]


def remote_object(s3: object, key: str) -> bytes:
    """An object of the remote log, or b"" while there is none."""
    try:
        return s3.get_object(Bucket=LOGS_BUCKET, Key=key)["Body"].read()  # type: ignore[attr-defined]
    except s3.exceptions.NoSuchKey:  # type: ignore[attr-defined]
        return b""


def local_task_log(home: Path) -> str:
    return "".join(
        p.read_text(errors="replace") for p in sorted((home / "logs").rglob(f"dag_id={DAG_ID}/**/attempt=*.log*"))
    )


def watch_log(home: Path, ti: dict) -> str:
    """The log file of the triggerer running the task's trigger now, for the task's current try ("" if none)."""
    job = (ti.get("triggerer_job") or {}).get("id")
    path = (
        home / "logs" / f"dag_id={DAG_ID}/run_id={ti['dag_run_id']}/task_id=train/attempt={ti['try_number']}.log"
        f".trigger.{job}.log"
    )
    return path.read_text(errors="replace") if job and path.exists() else ""


def api_log(api, run_id: str, try_number: int) -> str:
    """A try's whole log as the UI gets it from the api-server."""
    path = f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/train/logs/{try_number}?full_content=true"
    return json.dumps(api.call("GET", path))
