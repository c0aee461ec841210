"""The real thing under the chaos simulation's seeded schedule: scheduler, triggerer, dag-processor and
api-server (SQLite, LocalExecutor) run a DAG with GridRunOperator on the local spot cloud through a capacity
wait, the seed's EC2 and S3 faults (eventual consistency of instances and their tags, throttling on every API,
5xx, lost answers of any action and of S3 PUTs, skewed instance clocks, droughts), its interruptions (notices,
hard losses, scheduled stops) and its process kills: the worker SIGKILLed before or after its k-th I/O call,
the triggerer SIGKILLed at its k-th AWS call or mid-stream (and a new one started), the scheduler SIGKILLed
and restarted with the workers it runs. Then the chaos test's invariants (tests/chaoslib.py) are checked.
Meanwhile a user marks another deferred run failed through the REST API. dag.test() runs triggers in-process
and hides classpath and serialization mistakes; this does not.

``GRID_CHAOS_REAL_SEEDS="273"`` (make test) or ``make chaos-real SEEDS=N`` (seeds 1..N) pick the seeds; a
failure prints the command that replays it.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import boto3
import pytest

from airflow_grid_resume.agent.logship import DEFAULT_LOG_INTERVAL
from airflow_grid_resume.demo.stack import AirflowStack, wait_for
from airflow_grid_resume.emulator.client import LocalSpotCloud
from airflow_grid_resume.ledger.s3client import make_s3_client
from tests import chaos_kills
from tests.chaoslib import LINE, Chaos, Schedule, find_run, lifecycle_problems, reference, schedule_for, seeds
from tests.conftest import SCRIPTS

# A whole Airflow as subprocesses: make test-stack runs these (.ci/run calls it), make test does not.
pytestmark = pytest.mark.airflow_stack

STEPS, STEP_SECONDS, SAVE_EVERY, POLL, OFFSET_SAVE = 80, 0.1, 4, 0.5, 5.0
# make test: most of the faults, a worker kill, the triggerer at its 12th AWS call, a scheduler restart
DEFAULT_SEEDS = "273"
# Triggerer liveness, lowered from 5 s / 30 s: a killed triggerer's triggers move after about 6 s.
HEARTBEAT, HEALTH_THRESHOLD = 1, 6
# Repeats in the task log per SIGKILLed triggerer: the output of the window whose offset the watch had not saved.
REPEAT_BOUND = math.ceil((OFFSET_SAVE + POLL + 2 * DEFAULT_LOG_INTERVAL) / STEP_SECONDS)
KILLS_DIR = str(Path(chaos_kills.__file__).parent)

DAG_FILE = f"""
import os
import sys
from datetime import datetime, timedelta, timezone
from airflow.sdk import DAG
from airflow_grid_resume.operators import GridRunOperator

sys.path.append(os.environ["GRID_CHAOS_KILLS_DIR"])
import chaos_kills  # noqa: E402  the seed's worker kills, armed in the task process

chaos_kills.arm_worker_from_env()

COMMON = dict(
    workdir=os.environ["GRID_E2E_WORKDIR"],
    artifacts_uri="s3://" + os.environ["GRID_E2E_BUCKET"] + "/grid-runs/",
    image_id="ami-03cf127a",
    subnet_ids=os.environ["GRID_E2E_SUBNETS"].split(","),
    aws_conn_id=None,
    region_name="us-east-1",
    poll_interval={POLL},
    log_offset_save_interval={OFFSET_SAVE},
    instance_check_interval=1.0,
    capacity_backoff=(0.5, 1.0),
    agent_args=["--heartbeat-interval", "1", "--imds-poll", "0.2", "--sync-reserve", "1", "--min-grace", "1",
                "--notice-window", "3"],
    retry_delay=timedelta(seconds=1),
)

with DAG("grid_real", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), catchup=False):
    GridRunOperator(
        task_id="train",
        command="python3 chaos_train.py {STEPS} {STEP_SECONDS} {SAVE_EVERY}",
        instance_types=["g5.xlarge"],
        heartbeat_timeout=20.0,
        not_found_grace=15.0,
        retries=3,  # the worker kills and a scheduler restart
        max_interruptions=4,
        **COMMON,
    )

with DAG("grid_real_stop", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), catchup=False):
    GridRunOperator(task_id="train", command="sleep 600", instance_types=["g4dn.xlarge"], retries=0, **COMMON)
"""
SITECUSTOMIZE = """
import os
import sys

if os.environ.get("GRID_CHAOS_TRIGGERER_KILL"):  # the triggerer the seed kills at its k-th AWS call
    sys.path.append(os.environ["GRID_CHAOS_KILLS_DIR"])
    import chaos_kills

    chaos_kills.arm_triggerer_from_env()
"""


def task_log(home: Path, dag_id: str = "grid_real") -> str:
    """The task's log files as the UI shows them: the worker's and every triggerer's, of every try."""
    return "".join(
        p.read_text(errors="replace") for p in sorted((home / "logs").rglob(f"dag_id={dag_id}/**/attempt=*.log*"))
    )


class ProcessChaos:
    """The seed's kills of Airflow's own processes, once the run streams output: the triggerer SIGKILLed after
    n lines (or, armed at its start, by itself at its k-th AWS call; either way a new one is started), and the
    scheduler SIGKILLed, with the workers it runs, and restarted."""

    def __init__(self, stack: AirflowStack, schedule: Schedule, home: Path) -> None:
        self.stack, self.schedule, self.home = stack, schedule, home
        self.done: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        kill = self.schedule.triggerer_kill
        restart = self.schedule.scheduler_restart_lines
        while not self.stop.wait(0.5):
            lines = len(LINE.findall(task_log(self.home)))
            if kill and kill[0] == "call" and self.stack.running["triggerer"].poll() is not None:
                self.stack.kill("triggerer")
                self.stack.launch("triggerer")  # unarmed: one kill per seed
                self.done.append(f"triggerer SIGKILLed itself at its AWS call {kill[1]} (line {lines})")
                kill = None
            if kill and kill[0] == "lines" and lines >= kill[1]:
                self.stack.kill("triggerer", signal.SIGKILL)
                self.stack.launch("triggerer")
                self.done.append(f"triggerer SIGKILLed at line {lines}")
                kill = None
            if restart and lines >= restart:
                self.stack.kill("scheduler", signal.SIGKILL)
                time.sleep(2)
                self.stack.launch("scheduler")
                self.done.append(f"scheduler SIGKILLed and restarted at line {lines}")
                restart = None

    def __enter__(self) -> ProcessChaos:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("seed", seeds("GRID_CHAOS_REAL_SEEDS", DEFAULT_SEEDS), ids=lambda s: f"seed-{s}")
def test_real_components_hold_the_lifecycle_under_a_seeded_schedule(tmp_path: Path, seed: int) -> None:
    schedule = schedule_for(seed)
    replay = (
        f'GRID_CHAOS_REAL_SEEDS="{seed}" .venv/bin/python -m pytest tests/system/test_real_airflow.py -k seed-{seed}'
    )
    print(f"chaos: {schedule.describe()}\nreplay: {replay}")
    home = tmp_path / "airflow"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "grid_real.py").write_text(DAG_FILE)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    workdir = tmp_path / "training"
    workdir.mkdir()
    shutil.copy(SCRIPTS / "chaos_train.py", workdir / "chaos_train.py")
    kill_state = str(tmp_path / "worker-kills.json")
    expected = reference(tmp_path, STEPS, SAVE_EVERY)
    with LocalSpotCloud(notice_seconds=3) as cloud:
        aws = {**cloud.aws_env(), "AWS_EC2_METADATA_DISABLED": "true"}
        session = boto3.session.Session(aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1")
        s3 = session.client("s3", endpoint_url=cloud.endpoint_url)
        ec2 = session.client("ec2", endpoint_url=cloud.endpoint_url)
        s3.create_bucket(Bucket="real-airflow")
        subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
        stack = AirflowStack(
            home,
            home / "dags",
            {
                **aws,
                "GRID_E2E_WORKDIR": str(workdir),
                "GRID_E2E_BUCKET": "real-airflow",
                "GRID_E2E_SUBNETS": subnet,
                "GRID_CHAOS_KILLS_DIR": KILLS_DIR,
                chaos_kills.WORKER_KILLS_ENV: chaos_kills.format_kills(schedule.kills),
                chaos_kills.STATE_ENV: kill_state,
                chaos_kills.DAG_ENV: "grid_real",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": str(HEARTBEAT),
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(HEALTH_THRESHOLD),
                # a scheduler killed while a worker ran: that try is failed (and retried) after 20 s, not 300 s
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
            },
        )
        api = stack.api
        process_chaos = ProcessChaos(stack, schedule, home)
        try:
            stack.start("grid_real_stop", only=tuple(c for c in stack.components if c != "triggerer"))
            kill = schedule.triggerer_kill
            if kill and kill[0] == "call":  # armed: it SIGKILLs itself at its k-th AWS call
                stack.launch("triggerer", env={"PYTHONPATH": str(site), chaos_kills.TRIGGERER_KILL_ENV: str(kill[1])})
            else:
                stack.launch("triggerer")
            for dag_id in ("grid_real", "grid_real_stop"):
                api.call("PATCH", f"/dags/{dag_id}", {"is_paused": False})
            with Chaos(cloud, schedule, instance_types=("g5.xlarge",)) as chaos:
                # No g5 capacity at first: the first try waits in the capacity trigger, then watches the run
                # in the run trigger: two deferrals in one try, whose story must all reach the task log.
                cloud.set_capacity("g5.xlarge", "*", available=False)
                run_id = api.call("POST", "/dags/grid_real/dagRuns", {"logical_date": None})["dag_run_id"]
                stop_id = api.call("POST", "/dags/grid_real_stop/dagRuns", {"logical_date": None})["dag_run_id"]
                wait_for(
                    "grid_real to wait for capacity",
                    lambda: api.task_instance("grid_real", run_id, "train")["state"] == "deferred",
                    120,
                )
                wait_for("the capacity trigger to try", lambda: cloud.state()["counters"]["capacity_errors"] >= 3, 60)
                stopped = mark_failed_while_deferred(api, cloud, s3, stop_id)
                cloud.set_capacity("g5.xlarge", "*", available=True)
                Path(kill_state + chaos_kills.GO_SUFFIX).touch()  # the triggerer's AWS calls count from now
                with process_chaos:
                    state = wait_for(
                        "grid_real to finish",
                        lambda: (
                            (s := api.call("GET", f"/dags/grid_real/dagRuns/{run_id}")["state"])
                            in ("success", "failed")
                            and s
                        ),
                        420,
                        2,
                    )
        except BaseException:
            print(
                f"{stack.log_tails()}\n--- the task logs\n{task_log(home)[-6000:]}\n"
                f"{task_log(home, 'grid_real_stop')[-3000:]}"
            )
            raise
        finally:
            process_chaos.stop.set()
            stack.stop()
        log = task_log(home)
        killed = chaos_kills.KillLedger(kill_state).read()
        triggerer_killed = chaos_kills.KillLedger(kill_state + ".triggerer").read()["done"] if kill else []
        print(
            f"chaos: the worker made {killed['calls']} I/O calls; killed at {killed['done']}; triggerer "
            f"{triggerer_killed}; {process_chaos.done}"
        )
        os.environ.update(aws)
        ledger = find_run(make_s3_client(), "real-airflow", "grid-runs/grid_real/")
        problems = [] if state == "success" else [f"the DAG run ended {state}"]
        missed = [
            k
            for k, _ in schedule.kills
            if k <= killed["calls"] and not any(d.startswith(f"{k}:") for d in killed["done"])
        ]
        if missed:
            problems.append(f"the worker kills at {missed} did not happen: {killed['done']}")
        problems += lifecycle_problems(
            cloud,
            ec2,
            ledger,
            interrupted=chaos.interrupted,
            expected=expected,
            task_log=log,
            restore_to=tmp_path / "restored",
            repeat_bound=REPEAT_BOUND * sum("triggerer" in d for d in process_chaos.done),
        )
        # The task log tells the run's story: the capacity wait, the launch, the end in one line, no traceback.
        sessions = len(ledger.list_sessions())
        for needle in (
            "capacity wait: no spot capacity for g5.xlarge",
            "session 1: launched spot instance",
            f"run summary: {sessions} sessions",
        ):
            if needle not in log:
                problems.append(f"the task log lacks {needle!r}")
        # Each session before the last ended in one line of its try's log; unless that try's worker died in
        # on_session_end between recording the verdict (closed.json) and logging it: the run summary then tells.
        killed_in_end = any(" in on_session_end" in d for d in killed["done"])
        for n in [] if killed_in_end else ledger.list_sessions()[:-1]:
            if f"spot interruption: session {n} " not in log and f"session {n} ended (" not in log:
                problems.append(f"the task log does not say how session {n} ended")
        if "Traceback" in log:
            problems.append("a traceback in the task log")
        if problems:
            pytest.fail(
                f"{stack.log_tails()}\n{schedule.describe()}\ninterrupted: {chaos.interrupted}\n"
                f"kills: {killed['done']} {triggerer_killed} {process_chaos.done}\n- "
                + "\n- ".join(problems[:15])
                + f"\nreplay: {replay}"
            )
        assert cloud.instance(stopped)["state"] == "terminated"
    assert not [p for p in stack.procs if p.poll() is None]


def mark_failed_while_deferred(api, cloud: LocalSpotCloud, s3, stop_id: str) -> str:
    """A user marks grid_real_stop's deferred task failed: the trigger's on_kill terminates its instance.
    Returns the instance's id."""
    stopped = wait_for(
        "grid_real_stop's instance to run while its task is deferred",
        lambda: (
            api.task_instance("grid_real_stop", stop_id, "train")["state"] == "deferred"
            and [i for i in cloud.instances() if i["instance_type"] == "g4dn.xlarge" and i["pid"]]
        ),
        120,
    )[0]
    # Wait until the run trigger really runs in the triggerer (it writes watch.json at once): a task marked
    # failed before that loses its trigger without on_kill, and only the agent's own unwatched timeout
    # (tested in test_agent.py) would end the instance.
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
    api.call("PATCH", f"/dags/grid_real_stop/dagRuns/{stop_id}/taskInstances/train", {"new_state": "failed"})
    try:
        wait_for(
            "the instance of the task marked failed to be terminated",
            lambda: cloud.instance(stopped["instance_id"])["state"] == "terminated",
            60,
        )
    except TimeoutError:
        assert cloud.proc is not None
        os.kill(cloud.proc.pid, signal.SIGUSR1)  # the cloud's threads' stacks, on stderr
        time.sleep(1)
        console = Path(stopped["directory"], "console.log")
        print(f"{cloud.state()}\n{cloud.instance(stopped['instance_id'])}\n{console.read_text()[-3000:]}")
        raise
    return str(stopped["instance_id"])
