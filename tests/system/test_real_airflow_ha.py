"""Highly available Airflow, for real: PostgreSQL (started here), two triggerers, a scheduler that restarts.

One DAG run on the local spot cloud goes through everything a production deployment does to it: the triggerer
holding its capacity wait is SIGKILLed, then the triggerer holding its run watch mid-stream, then the scheduler.
Each time the survivors take over (a triggerer is presumed dead once its heartbeat is older than
``[triggerer] triggerer_health_check_threshold``, lowered here to keep the test short). The run must finish with
the right result, one instance (a second launch would be a second bill), and every line of the training output
in the task log, repeated at most for the window the watch had not yet recorded as written (``watch.json``).
"""

from __future__ import annotations

import math
import re
import shutil
import signal
import time
from datetime import datetime
from pathlib import Path

import boto3
import pytest

from airflow_grid_resume.agent.logship import DEFAULT_LOG_INTERVAL
from airflow_grid_resume.agent.restore import Restorer
from airflow_grid_resume.demo.stack import AirflowStack, PostgresServer, wait_for
from airflow_grid_resume.emulator.client import LocalSpotCloud
from airflow_grid_resume.ledger.store import RunLedger
from airflow_grid_resume.ledger.uri import parse_s3_uri
from airflow_grid_resume.watch.settle import SETTLE_SECONDS
from tests.conftest import TRAIN, outcome_of
from tests.test_operators import reference_result

# A whole Airflow as subprocesses: make test-stack runs these (.ci/run calls it), make test does not.
pytestmark = pytest.mark.airflow_stack

STEPS, STEP_SECONDS, POLL, OFFSET_SAVE = 300, 0.1, 0.5, 5.0
DAG_FILE = f"""
import os
from datetime import datetime, timedelta, timezone
from airflow.sdk import DAG
from airflow_grid_resume.operators import GridRunOperator

with DAG("grid_ha", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), catchup=False):
    GridRunOperator(
        task_id="train",
        command="python3 train.py {STEPS} {STEP_SECONDS}",
        instance_types=["g5.xlarge"],
        workdir=os.environ["GRID_E2E_WORKDIR"],
        artifacts_uri="s3://ha-airflow/grid-runs/",
        image_id="ami-03cf127a",
        subnet_ids=os.environ["GRID_E2E_SUBNETS"].split(","),
        aws_conn_id=None,
        region_name="us-east-1",
        poll_interval={POLL},
        log_offset_save_interval={OFFSET_SAVE},
        instance_check_interval=1.0,
        capacity_backoff=(0.5, 1.0),
        agent_args=["--heartbeat-interval", "1", "--log-interval", "0.5", "--imds-poll", "0.2", "--sync-reserve", "1"],
        retries=0,
    )
"""
# Triggerer liveness, lowered from 5 s / 30 s: a killed triggerer's triggers move after about 6 s.
HEARTBEAT, HEALTH_THRESHOLD = 1, 6
# No line is repeated beyond the output of the window in which the watch had not saved its offset yet.
REPEAT_BOUND = math.ceil((OFFSET_SAVE + POLL + 2 * DEFAULT_LOG_INTERVAL) / STEP_SECONDS)


def steps_in(text: str) -> list[int]:
    """Every ``step N`` line of the training output found in ``text`` (a task log, a session log; in a
    JSON task log a record's lines are separated by an escaped newline)."""
    return [int(n) for n in re.findall(r'(?:^|["\n\]>|] ?|\\n)step (\d+)(?=$|["\n]|\\n)', text, re.MULTILINE)]


def find_ledger(s3: object) -> RunLedger | None:
    listed = s3.list_objects_v2(Bucket="ha-airflow", Prefix="grid-runs/grid_ha/").get("Contents", [])  # type: ignore[attr-defined]
    spec = next((o["Key"] for o in listed if o["Key"].endswith("/spec.json")), None)
    return RunLedger(s3, parse_s3_uri(f"s3://ha-airflow/{spec.rsplit('/spec.json', 1)[0]}")) if spec else None


def task_log(home: Path) -> str:
    """The task's log files as the UI shows them: the worker's and every triggerer's."""
    return "".join(
        p.read_text(errors="replace") for p in sorted((home / "logs").rglob("dag_id=grid_ha/**/attempt=*.log*"))
    )


def defer_exit_gaps(home: Path) -> list[float]:
    """Seconds from each deferral (the worker's "Pausing task as DEFERRED") to the scheduler reading the executor's
    report of that workload's exit: the window in which an early trigger event hits Airflow's race (settle.py)."""
    worker = next((home / "logs").rglob("dag_id=grid_ha/**/attempt=1.log")).read_text(errors="replace")
    deferred = [
        datetime.fromisoformat(t.replace("Z", "+00:00"))
        for t in re.findall(r'"timestamp":"([^"]+)","level":"info","event":"Pausing task as DEFERRED', worker)
    ]
    scheduler = (home / "scheduler.log").read_text(errors="replace")
    reported = [
        datetime.fromisoformat(t.replace("Z", "+00:00"))
        for t in re.findall(r"^(\S+Z) \[info\s*\] Received executor event with state success", scheduler, re.M)
    ]
    return [round(min((r - d).total_seconds() for r in reported if r > d), 2) for d in deferred]


@pytest.mark.timeout(480)
def test_ha_triggerers_and_a_scheduler_restart_on_postgres(tmp_path: Path) -> None:
    home = tmp_path / "airflow"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "grid_ha.py").write_text(DAG_FILE)
    workdir = tmp_path / "training"
    workdir.mkdir()
    shutil.copy(TRAIN, workdir / "train.py")
    with PostgresServer() as pg, LocalSpotCloud(notice_seconds=3) as cloud:
        aws = {**cloud.aws_env(), "AWS_EC2_METADATA_DISABLED": "true"}
        session = boto3.session.Session(aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1")
        s3 = session.client("s3", endpoint_url=cloud.endpoint_url)
        s3.create_bucket(Bucket="ha-airflow")
        subnet = session.client("ec2", endpoint_url=cloud.endpoint_url).describe_subnets()["Subnets"][0]["SubnetId"]
        stack = AirflowStack(
            home,
            home / "dags",
            {
                **aws,
                "GRID_E2E_WORKDIR": str(workdir),
                "GRID_E2E_SUBNETS": subnet,
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": str(HEARTBEAT),
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(HEALTH_THRESHOLD),
            },
            components=("api-server", "scheduler", "dag-processor", "log-server", "triggerer-1", "triggerer-2"),
            database_url=pg.url,
        )
        api = stack.api
        run_id = ""
        replaced: list[str] = []
        started = time.monotonic()
        phases: list[str] = []  # where the test's time goes, printed at the end

        def mark(label: str) -> None:
            phases.append(f"{label} {time.monotonic() - started:.0f} s")

        def ti() -> dict:
            return api.task_instance("grid_ha", run_id, "train")

        def triggerer_of_task() -> int | None:
            """The id of the triggerer job running the task's trigger now (None: unassigned)."""
            return ((ti().get("triggerer_job") or {}).get("id")) or None

        def alive_triggerers() -> dict[int, str]:
            jobs = api.call("GET", "/jobs?job_type=TriggererJob&is_alive=true&limit=20")["jobs"]
            return {int(j["id"]): j for j in jobs}

        def kill_holder(names: dict[int, str], why: str, replace: bool) -> None:
            """SIGKILL the triggerer process running the task's trigger (a fresh one takes its name if ``replace``);
            return once another triggerer runs the trigger."""
            holder = wait_for(f"the trigger of {why} to be assigned", triggerer_of_task, 60, 0.5)
            if holder not in names:  # the replacement started after the last kill: the one id not known yet
                (unknown,) = set(alive_triggerers()) - set(names)
                names[unknown] = replaced.pop()
            name = names[holder]
            stack.kill(name, signal.SIGKILL)
            if replace:
                stack.launch(name)
                replaced.append(name)
            wait_for(
                f"another triggerer to take over {why}",
                lambda: triggerer_of_task() not in (None, holder),
                60,
                0.5,
            )

        try:
            stack.start("grid_ha", only=("api-server", "scheduler", "dag-processor", "log-server"))
            names: dict[int, str] = {}  # triggerer job id -> process: started one at a time to tell them apart
            for name in ("triggerer-1", "triggerer-2"):
                before = set(alive_triggerers())
                stack.launch(name)
                names[wait_for(f"{name} to start", lambda b=before: set(alive_triggerers()) - b, 90, 1).pop()] = name
            mark("stack up")
            api.call("PATCH", "/dags/grid_ha", {"is_paused": False})
            cloud.set_capacity("g5.xlarge", "*", available=False)
            run_id = api.call("POST", "/dags/grid_ha/dagRuns", {"logical_date": None})["dag_run_id"]
            wait_for("the capacity wait", lambda: ti()["state"] == "deferred", 90, 0.5)
            mark("capacity wait")
            kill_holder(names, "the capacity wait", replace=True)
            mark("capacity wait taken over")
            errors = cloud.state()["counters"]["capacity_errors"]
            wait_for("the new holder to try", lambda: cloud.state()["counters"]["capacity_errors"] > errors, 60, 0.5)
            cloud.set_capacity("g5.xlarge", "*", available=True)

            ledger = wait_for("the run's ledger", lambda: find_ledger(s3), 120, 1)
            wait_for("the output to stream", lambda: len(steps_in(task_log(home))) >= 30, 120, 0.5)
            mark("streaming")
            kill_holder(names, "the run watch", replace=False)
            mark("run watch taken over")
            streamed = len(steps_in(task_log(home)))
            wait_for("the output to stream again", lambda: len(steps_in(task_log(home))) > streamed + 20, 90, 0.5)
            mark("streaming again")
            stack.kill("scheduler", signal.SIGKILL)
            time.sleep(2)
            stack.launch("scheduler")
            state = wait_for(
                "grid_ha to finish",
                lambda: (
                    (s := api.call("GET", f"/dags/grid_ha/dagRuns/{run_id}")["state"]) in ("success", "failed") and s
                ),
                240,
                1,
            )
            mark("run ended")
        finally:
            stack.stop()
        assert state == "success", stack.log_tails()
        instances = cloud.instances()
        assert len(instances) == 1, f"one session, so one instance: {instances}"
        assert ledger.list_sessions() == [1]
        assert (outcome_of(ledger, 1) or {}).get("status") == "succeeded"
        session_steps = steps_in(ledger.read_log(1)[0].decode())
        assert session_steps == list(range(1, STEPS + 1))
        logged = steps_in(task_log(home))
        missing = set(session_steps) - set(logged)
        repeated = len(logged) - len(set(logged))
        assert not missing, f"{len(missing)} lines of output never reached the task log: {sorted(missing)[:20]}"
        assert repeated <= REPEAT_BOUND, f"{repeated} lines repeated in the task log (bound {REPEAT_BOUND})"
        assert "done" in task_log(home)
        scheduler_log = (home / "scheduler.log").read_text(errors="replace")
        # The race the event hold (watch/settle.py) is there for; on PostgreSQL too it must never show.
        assert "finished with state success, but the task instance's state attribute is" not in scheduler_log
        gaps = defer_exit_gaps(home)
        print(
            f"\nHA on PostgreSQL: {len(logged)} step lines in the task log, {repeated} repeated "
            f"(bound {REPEAT_BOUND}); deferral to executor report: {gaps} s (event hold {SETTLE_SECONDS} s)\n"
            f"phases: {', '.join(phases)}"
        )
        # Two deferrals, each reported by the executor; the gaps are printed, not asserted: they grow with the
        # machine's load (0.57 to 0.74 s, but 5.74 and 6.51 s for the first deferral of two runs, on 2 cores at
        # load 4-15). What must hold is the assertion above.
        assert len(gaps) == 2, gaps
        restored = tmp_path / "restored"
        Restorer(ledger, str(restored)).restore()
        assert (restored / "result.txt").read_text() == reference_result(tmp_path, steps=STEPS)
    assert not [p for p in stack.procs if p.poll() is None]
