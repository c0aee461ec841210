"""A seeded simulation of the whole lifecycle on a cloud at least as unkind as EC2 (in the spirit of
FoundationDB's simulation tests and Jepsen): the real operator, triggers and agent, the local spot cloud
with eventual consistency, throttling on every API, 5xx, lost answers (EC2 and S3), skewed instance
clocks, capacity droughts, notices, hard losses and EC2 scheduled stops, and the worker killed at seeded
I/O boundaries of execute and its resume path (before or after any AWS, task state store or XCom call).

After each seed, from the ledger and the cloud's own instance list:
- exactly one instance per session, never two alive at once for the run;
- no instance running after the run ended;
- every session's verdict on the Airflow side equals the agent's outcome, and a session called lost
  was really reclaimed (no interruption spent on a healthy instance);
- the final result equals an uninterrupted reference run's;
- every output line the agent shipped reaches the task log exactly once (no triggerer restarts here:
  the bound on repeats is 0; with a SIGKILLed triggerer it is the last 10 s of output, see docs/lifecycle.md).

``GRID_CHAOS_SEEDS="1 2"`` (or ``make chaos SEEDS=N`` for 1..N) picks the seeds; a failure prints the
command that replays it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest

from airflow_grid_resume.agent.ledger import RunLedger
from airflow_grid_resume.agent.restore import Restorer
from airflow_grid_resume.agent.s3client import make_s3_client
from airflow_grid_resume.agent.uri import parse_s3_uri
from airflow_grid_resume.emulator.client import LocalSpotCloud
from airflow_grid_resume.emulator.cloud import SCHEDULED_STOP, SPOT_TERMINATION
from tests.conftest import SCRIPTS, command_started, make_dag

STEPS, STEP_SECONDS, SAVE_EVERY = 36, 0.12, 4
SCHEDULED_AHEAD = 4.5  # a scheduled event's NotBefore this far ahead: 1.5 s of advisory, then the 3 s notice window
# The worker's I/O calls of a run (AWS, task state store, XCom; in execute, on_capacity, on_session_end of every
# try) are its I/O boundaries; a kill picks one of the first MAX_KILL_CALL: a run with one interruption makes about
# 70 (a first try about 30: reading the ledger, the snapshot, the launch with its attempt record, launch.json, the
# verdict), so a kill can land anywhere in the first try or in the resume path of the second.
MAX_KILL_CALL = 45
DEFAULT_SEEDS = "1 2"  # make test; make chaos SEEDS=N for more
LINE = re.compile(r"CHAOS-LINE s=\d+ step=\d+;")


def seeds() -> list[int]:
    return [int(s) for s in os.environ.get("GRID_CHAOS_SEEDS", DEFAULT_SEEDS).split()]


@dataclass
class Schedule:
    """Everything the seed decides, before anything runs."""

    seed: int
    consistency_seconds: float
    describe_throttle: tuple[float, float] | None  # (burst, rate) for Describe* actions
    clock_offset: float
    drought_seconds: float  # spot capacity withheld at the start
    kills: tuple[tuple[int, str], ...]  # the worker dies at its k-th I/O call of the run, "before" or "after" it
    interruptions: list[tuple[float, str]]  # (seconds of training before it, "notice", "hard" or "scheduled")
    faults: list[tuple[float, str, dict]] = field(default_factory=list)  # (at second, route, body)
    scheduled_code: str = "instance-stop"  # the code of a "scheduled" interruption

    def describe(self) -> str:
        return (
            f"seed {self.seed}: consistency {self.consistency_seconds:.1f} s, describe throttle "
            f"{self.describe_throttle}, clock {self.clock_offset:+.0f} s, drought {self.drought_seconds:.0f} s, "
            f"worker kills {self.kills}, interruptions {self.interruptions} (scheduled: {self.scheduled_code}), "
            f"faults {self.faults}"
        )


def schedule_for(seed: int) -> Schedule:
    rng = random.Random(seed)
    faults = []
    for _ in range(rng.randint(2, 5)):
        at = round(rng.uniform(0, 25), 1)
        kind = rng.choice(["drop-run", "drop-put", "fault-describe", "fault-run", "fault-terminate", "drop-describe"])
        if kind == "drop-run":
            faults.append((at, "drop", {"action": "RunInstances", "count": 1}))
        elif kind == "drop-put":
            faults.append((at, "drop", {"action": "PutObject", "count": rng.randint(1, 3)}))
        elif kind == "drop-describe":
            faults.append((at, "drop", {"action": "DescribeInstances", "count": rng.randint(1, 2)}))
        else:
            api = {"fault-describe": "DescribeInstances", "fault-run": "RunInstances"}.get(kind, "TerminateInstances")
            code = rng.choice(["InternalError", "Unavailable"])
            faults.append((at, "fault", {"api": api, "code": code, "count": rng.randint(1, 3)}))
    n_kills = rng.choice([0, 1, 1, 2])
    return Schedule(
        seed=seed,
        consistency_seconds=rng.choice([0.0, 2.0, 5.0]),
        describe_throttle=rng.choice([None, (4.0, 2.0), (10.0, 5.0)]),
        clock_offset=rng.choice([0.0, -400.0, 400.0]),
        drought_seconds=rng.choice([0.0, 0.0, 6.0]),
        kills=tuple(
            sorted((k, rng.choice(["before", "after"])) for k in rng.sample(range(1, MAX_KILL_CALL + 1), n_kills))
        ),
        interruptions=[(round(rng.uniform(0.8, 2.0), 1), interruption(rng.random())) for _ in range(rng.randint(1, 2))],
        faults=sorted(faults),
        scheduled_code=rng.choice(["instance-stop", "instance-retirement", "instance-reboot", "system-reboot"]),
    )


def interruption(draw: float) -> str:
    return "notice" if draw < 0.4 else "scheduled" if draw < 0.6 else "hard"


def test_schedules_are_seeded() -> None:
    assert schedule_for(7) == schedule_for(7)
    assert len({schedule_for(s).describe() for s in range(1, 10)}) > 5


# -- the run --------------------------------------------------------------------------------------------
class WorkerKilled(Exception):
    """The worker process dying at a chosen line: Airflow fails the try and retries it."""


class Chaos:
    """Applies a schedule while the DAG runs: faults at their times, interruptions once a command trains."""

    def __init__(self, cloud: LocalSpotCloud, schedule: Schedule) -> None:
        self.cloud, self.schedule = cloud, schedule
        self.interrupted: dict[str, str] = {}  # instance id -> "notice", "hard" or "scheduled"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Chaos:
        s, cloud = self.schedule, self.cloud
        cloud.reset_faults()
        cloud.set_capacity("*", "*", available=True, market="all")
        cloud.set_consistency(describe_not_found_seconds=s.consistency_seconds)
        if s.describe_throttle:
            cloud.set_throttle("Describe*", burst=s.describe_throttle[0], rate=s.describe_throttle[1])
        cloud.set_clock(offset_seconds=s.clock_offset)
        if s.drought_seconds:
            cloud.set_capacity("*", "*", available=False, for_seconds=s.drought_seconds)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        self.cloud.reset_faults()

    def _run(self) -> None:
        started = time.monotonic()
        faults = list(self.schedule.faults)
        plan = list(self.schedule.interruptions)
        running: dict[str, float] = {}
        while not self.stop.is_set():
            now = time.monotonic()
            while faults and now - started >= faults[0][0]:
                _, route, body = faults.pop(0)
                with contextlib.suppress(Exception):
                    self.cloud._call("POST", route, body)
            with contextlib.suppress(Exception):
                for instance in self.cloud.instances() if plan else []:
                    instance_id = instance["instance_id"]
                    if instance["state"] != "running" or instance_id in self.interrupted:
                        continue
                    if instance_id not in running and command_started(instance):
                        running[instance_id] = now
                    if instance_id in running and now - running[instance_id] >= plan[0][0]:
                        _, kind = plan.pop(0)
                        if kind == "scheduled":  # a notice window of advisory, then the stop (see chaos_dag)
                            code = self.schedule.scheduled_code
                            self.cloud.schedule_event(instance_id, code=code, in_seconds=SCHEDULED_AHEAD)
                        else:
                            self.cloud.interrupt(instance_id, notice=kind == "notice")
                        self.interrupted[instance_id] = kind
                        break
            time.sleep(0.1)


def chaos_dag(dag_id: str, workdir: Path, bucket: str):
    agent_args = ["--heartbeat-interval", "1", "--imds-poll", "0.2", "--sync-reserve", "1", "--min-grace", "1"]
    return make_dag(
        dag_id,
        workdir,
        bucket,
        command=f"python3 chaos_train.py {STEPS} {STEP_SECONDS} {SAVE_EVERY}",
        heartbeat_timeout=20.0,
        not_found_grace=15.0,
        agent_args=[*agent_args, "--notice-window", "3"],
        retries=3,  # the worker kills
        max_interruptions=4,
    )


class WorkerDeath(BaseException):
    """Raised inside the worker at an I/O boundary: a BaseException, so no ``except Exception`` of the code
    under test can swallow it (a SIGKILL runs no handler either)."""


WORKER_METHODS = ("execute", "on_capacity", "on_session_end")


@contextlib.contextmanager
def worker_killed_at(kills: tuple[tuple[int, str], ...]):
    """Kill the "worker" at its k-th I/O call of the run, before the call is sent or after it was carried out
    (its answer lost with the worker), for each (k, when) of ``kills``. The I/O calls are every botocore and
    aiobotocore call (the ledger's S3 calls, the hooks' and the launcher's EC2 calls) and every read or write of
    Airflow's task state store and XCom, made while the operator's worker methods run; the triggers' calls do not
    count (dag.test runs them between the worker methods). Yields the kills that happened, as
    "k:when:operation in method", and the trace of every call."""
    import aiobotocore.client
    import botocore.client
    from airflow.sdk.execution_time.context import TaskStateStoreAccessor
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    from airflow_grid_resume.operators import GridRunOperator

    plan = dict(kills)
    done: list[str] = []
    trace: list[str] = []  # every worker call, "k:operation in method"
    calls = [0]
    current: list[str] = []  # the worker method running now (empty: not the worker)
    lock = threading.Lock()

    def boundary(operation: str, when: str) -> None:
        if not current:
            return
        with lock:
            if when == "before":
                calls[0] += 1
                trace.append(f"{calls[0]}:{operation} in {current[-1]}")
            k = calls[0]
            if plan.get(k) != when:
                return
            del plan[k]
            done.append(f"{k}:{when}:{operation} in {current[-1]}")
        raise WorkerDeath(f"worker killed {when} its I/O call {k} ({operation}, in {current[-1]})")

    def io_call(original, name_of):
        def wrapper(self, *args, **kwargs):
            name = name_of(args)
            boundary(name, "before")
            try:
                return original(self, *args, **kwargs)
            finally:  # an error answer is an answer too: the worker may die before it reads it
                boundary(name, "after")

        return wrapper

    def async_io_call(original, name_of):
        async def wrapper(self, *args, **kwargs):
            name = name_of(args)
            boundary(name, "before")
            try:
                return await original(self, *args, **kwargs)
            finally:
                boundary(name, "after")

        return wrapper

    def first_arg(args):
        return args[0]

    wrapped = [  # (owner, attribute, wrapper factory, the call's name)
        (botocore.client.BaseClient, "_make_api_call", io_call, first_arg),
        (aiobotocore.client.AioBaseClient, "_make_api_call", async_io_call, first_arg),
        (TaskStateStoreAccessor, "get", io_call, lambda args: "task_state_store.get"),
        (TaskStateStoreAccessor, "set", io_call, lambda args: "task_state_store.set"),
        (RuntimeTaskInstance, "xcom_push", io_call, lambda args: "xcom_push"),
    ]
    originals = [(owner, attr, getattr(owner, attr)) for owner, attr, *_ in wrapped]

    def worker_method(name: str):
        original = getattr(GridRunOperator, name)

        def run(self, *args, **kwargs):
            current.append(name)
            try:
                return original(self, *args, **kwargs)
            except WorkerDeath as death:
                if len(current) > 1:  # execute calls on_capacity itself: the outermost method reports it
                    raise
                raise WorkerKilled(str(death)) from None  # Airflow sees a try that died: failed, retried
            finally:
                current.pop()

        return run

    originals += [(GridRunOperator, name, getattr(GridRunOperator, name)) for name in WORKER_METHODS]
    for owner, attr, factory, name_of in wrapped:
        setattr(owner, attr, factory(getattr(owner, attr), name_of))
    for name in WORKER_METHODS:
        setattr(GridRunOperator, name, worker_method(name))
    try:
        yield done, trace
    finally:
        for owner, attr, original in originals:
            setattr(owner, attr, original)


def reference(tmp_path: Path) -> str:
    ref = tmp_path / "reference"
    ref.mkdir()
    subprocess.run(
        [sys.executable, str(SCRIPTS / "chaos_train.py"), str(STEPS), "0", str(SAVE_EVERY)],
        cwd=ref,
        check=True,
        capture_output=True,
    )
    return (ref / "result.txt").read_text()


# -- the checks -----------------------------------------------------------------------------------------
def run_instances(run_uri: str) -> list[dict]:
    ec2 = boto3.client("ec2")
    found = ec2.describe_instances(Filters=[{"Name": "tag:grid-resume:run-id", "Values": [run_uri]}])
    return [i for r in found["Reservations"] for i in r["Instances"]]


def session_of(instance: dict) -> int:
    return int({t["Key"]: t["Value"] for t in instance.get("Tags", [])}["grid-resume:session"])


@pytest.mark.timeout(900)  # dag.test's own start-up alone can take a minute on a busy machine
@pytest.mark.parametrize("seed", seeds(), ids=lambda s: f"seed-{s}")
def test_the_lifecycle_holds_under_a_seeded_schedule_of_faults(spot_cloud, tmp_path: Path, capfd, seed: int) -> None:
    schedule = schedule_for(seed)
    replay = f'GRID_CHAOS_SEEDS="{seed}" .venv/bin/python -m pytest tests/test_chaos.py -k seed-{seed}'
    print(f"chaos: {schedule.describe()}\nreplay: {replay}")
    workdir = tmp_path / "training"
    workdir.mkdir()
    shutil.copy(SCRIPTS / "chaos_train.py", workdir / "chaos_train.py")
    bucket = f"chaos-{seed}-{uuid.uuid4().hex[:6]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    expected = reference(tmp_path)
    dag = chaos_dag(f"chaos_{seed}_{uuid.uuid4().hex[:6]}", workdir, bucket)
    with worker_killed_at(schedule.kills) as (killed, calls), Chaos(spot_cloud, schedule) as chaos:
        dagrun = dag.test()
    output = capfd.readouterr().out
    print(f"chaos: the worker made {len(calls)} I/O calls; killed at {killed}")
    problems: list[str] = []

    def check(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    check(dagrun.state == "success", f"the DAG run ended {dagrun.state}")
    check(len(killed) == len(schedule.kills), f"the worker kills {schedule.kills} happened: {killed}")
    client = make_s3_client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="grid-runs/")["Contents"]]
    run_prefix = next(k for k in keys if k.endswith("/spec.json")).rsplit("/spec.json", 1)[0]
    run_uri = f"s3://{bucket}/{run_prefix}"
    ledger = RunLedger(client, parse_s3_uri(run_uri))
    instances = run_instances(run_uri)
    by_session: dict[int, list[str]] = {}
    for instance in instances:
        by_session.setdefault(session_of(instance), []).append(instance["InstanceId"])
    check(all(len(v) == 1 for v in by_session.values()), f"one instance per session: {by_session}")
    claimed = [s for s in ledger.list_sessions() if ledger.get_json(ledger.session_key(s, "session.json"))]
    check(all(s in by_session for s in claimed), f"every claimed session has its instance: {claimed} {by_session}")
    # Never two alive at once: each instance ended before the next one was launched (the cloud's clock).
    emulated = {i["instance_id"]: i for i in spot_cloud.instances()}
    spans = sorted(
        (emulated[i]["launched_at"], emulated[i]["ended_at"] or float("inf"), i) for v in by_session.values() for i in v
    )
    for (_, ended, first), (launched, _, second) in itertools.pairwise(spans):
        check(ended <= launched + 0.05, f"{first} still ran when {second} was launched")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(emulated[i]["state"] != "terminated" for *_, i in spans):
        time.sleep(0.3)
        emulated = {i["instance_id"]: i for i in spot_cloud.instances()}
    check(all(emulated[i]["state"] == "terminated" for *_, i in spans), "no instance runs after the run ended")
    for session, (instance_id,) in sorted((s, tuple(v)) for s, v in by_session.items() if len(v) == 1):
        outcome = ledger.read_outcome(session)
        closed = ledger.get_json(ledger.session_key(session, "closed.json")) or {}
        reclaimed = emulated[instance_id]["reason"] in (SPOT_TERMINATION, SCHEDULED_STOP)
        ended = (outcome or {}).get("status") or closed.get("status")
        print(f"chaos: session {session}: {ended} ({((outcome or {}).get('notice') or {}).get('source')})")
        if outcome is not None:
            check(closed.get("status") == outcome["status"], f"session {session}: {closed} but the agent {outcome}")
            if outcome["status"] == "interrupted":  # a scheduled stop: the agent powers off before NotBefore
                scheduled = chaos.interrupted.get(instance_id) == "scheduled"
                check(reclaimed or scheduled, f"session {session} interrupted although its instance was not reclaimed")
                if scheduled:
                    source = (outcome.get("notice") or {}).get("source")
                    check(source == "scheduled", f"session {session} stopped by {source}, not its scheduled event")
        else:
            check(closed.get("status") == "lost", f"session {session} has no outcome and is {closed}")
            check(reclaimed, f"session {session} called lost, its instance healthy ({emulated[instance_id]['reason']})")
    restored = tmp_path / "restored"
    Restorer(ledger, str(restored)).restore()
    result = (restored / "result.txt").read_text() if (restored / "result.txt").exists() else "(none)"
    check(result == expected, f"result {result!r} differs from the reference {expected!r}")
    for session in claimed:
        shipped = ledger.read_log(session, 0)[0].decode(errors="replace")
        for line in sorted(set(LINE.findall(shipped))):
            logged, sent = output.count(line), shipped.count(line)
            check(logged == sent, f"{line!r}: shipped {sent} times, in the task log {logged} times")
    if problems:
        log_file = tmp_path / "task-log.txt"
        log_file.write_text(output)
        errors = [line for line in output.splitlines() if re.search(r"\b(error|ERROR|failed|Traceback)\b", line)]
        print("\n".join(errors[-40:]))
        print("the worker's I/O calls:", " ".join(calls))
        pytest.fail(
            f"the run's output: {log_file}\n"
            f"{schedule.describe()}\ninterrupted: {chaos.interrupted}\n- " + "\n- ".join(problems[:15]) + f"\n"
            f"replay: {replay}"
        )
