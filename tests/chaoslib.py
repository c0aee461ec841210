"""The chaos simulation's shared parts: the seeded schedule, the thread that carries it out on the local spot
cloud, and the invariant checks. ``tests/system/test_chaos.py`` runs seeds under ``dag.test()``;
``tests/system/test_real_airflow.py`` runs seeds on the real scheduler, triggerer and metadata DB, where the schedule
also kills those processes."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from airflow_grid_resume.agent.restore import Restorer
from airflow_grid_resume.emulator.client import LocalSpotCloud
from airflow_grid_resume.emulator.cloud import SCHEDULED_STOP, SPOT_TERMINATION
from airflow_grid_resume.ledger.store import RunLedger
from airflow_grid_resume.ledger.uri import parse_s3_uri
from tests.conftest import SCRIPTS, command_started, outcome_of

SCHEDULED_AHEAD = 4.5  # a scheduled event's NotBefore this far ahead: 1.5 s of advisory, then the 3 s notice window
# The worker's I/O calls of a run (AWS, task state store, XCom; in execute, on_capacity, on_session_end of every
# try) are its I/O boundaries; a kill picks one of the first MAX_KILL_CALL: a run with one interruption makes about
# 70 (a first try about 30: reading the ledger, the snapshot, the launch with its attempt record, launch.json, the
# verdict), so a kill can land anywhere in the first try or in the resume path of the second.
MAX_KILL_CALL = 45
# The triggerer's AWS calls: a kill at one of the first MAX_TRIGGERER_CALL lands in the capacity wait (its
# rounds of RunInstances, the attempt records) or in the run watch (describes, ledger reads, watch.json).
MAX_TRIGGERER_CALL = 40
# The zones of the first region's subnets (tests/conftest.py make_dag: the first two us-east-1 subnets by zone).
FIRST_REGION_ZONES = ("us-east-1a", "us-east-1b")
SECOND_REGION_ZONES = ("us-west-2a", "us-west-2b")
LINE = re.compile(r"CHAOS-LINE s=\d+ step=\d+;")


def seeds(variable: str, default: str) -> list[int]:
    """The seeds to run: ``variable`` in the environment ("1 2 5"), else ``default``."""
    return [int(s) for s in os.environ.get(variable, default).split()]


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
    tags_late_seconds: float = 0.0  # a new instance's tags missing from describes for that long
    # The regions the run may launch in (placements), and how long the first one has no capacity at the start.
    regions: tuple[str, ...] = ("us-east-1",)
    region_drought_seconds: float = 0.0
    # The real components only (test_real_airflow.py): the triggerer SIGKILLed (then a new one started) at its
    # k-th AWS call ("call", k) or once n lines of output reached the task log ("lines", n); the scheduler
    # SIGKILLed and restarted (with the workers it runs) once n lines reached the task log.
    triggerer_kill: tuple[str, int] | None = None
    scheduler_restart_lines: int | None = None
    # The script writes a two-file checkpoint (chaos_train.py ... pair) with markers, synced every 0.3 s: the
    # restored pair must be consistent (test_chaos.py; the real components' test ignores it).
    multi_file: bool = False

    def describe(self) -> str:
        return (
            f"seed {self.seed}: consistency {self.consistency_seconds:.1f} s, tags late {self.tags_late_seconds:.1f}"
            f" s, describe throttle {self.describe_throttle}, clock {self.clock_offset:+.0f} s, drought "
            f"{self.drought_seconds:.0f} s, worker kills {self.kills}, interruptions {self.interruptions} "
            f"(scheduled: {self.scheduled_code}), faults {self.faults}; real components only: triggerer kill "
            f"{self.triggerer_kill}, scheduler restart at line {self.scheduler_restart_lines}; multi-file "
            f"checkpoint {self.multi_file}; regions {', '.join(self.regions)} (the first without capacity for "
            f"{self.region_drought_seconds:.0f} s)"
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
    schedule = Schedule(
        seed=seed,
        consistency_seconds=rng.choice([0.0, 2.0, 5.0]),
        describe_throttle=rng.choice([None, (4.0, 2.0), (10.0, 5.0)]),
        clock_offset=rng.choice([0.0, -400.0, 400.0]),
        drought_seconds=rng.choice([0.0, 0.0, 6.0]),
        kills=tuple(
            sorted((k, rng.choice(["before", "after"])) for k in rng.sample(range(1, MAX_KILL_CALL + 1), n_kills))
        ),
        interruptions=[(round(rng.uniform(0.8, 2.0), 1), interruption(rng.random())) for _ in range(rng.randint(1, 2))],
        faults=sorted(faults, key=at_second),
        scheduled_code=rng.choice(["instance-stop", "instance-retirement", "instance-reboot", "system-reboot"]),
    )
    # Drawn after everything above, so that a seed's earlier choices stay what they were.
    schedule.tags_late_seconds = rng.choice([0.0, 0.0, 4.0])
    kind = rng.choice([None, "call", "lines", "lines"])
    if kind == "call":
        schedule.triggerer_kill = ("call", rng.randint(1, MAX_TRIGGERER_CALL))
    elif kind == "lines":
        schedule.triggerer_kill = ("lines", rng.randint(5, 60))
    schedule.scheduler_restart_lines = rng.choice([None, rng.randint(5, 60)])
    if rng.random() < 0.4:  # TerminateInstances carried out, its answer lost (the trigger must confirm, not assume)
        at = round(rng.uniform(0, 25), 1)
        schedule.faults = sorted(
            [*schedule.faults, (at, "drop", {"action": "TerminateInstances", "count": 1})], key=at_second
        )
    schedule.multi_file = rng.random() >= 0.5
    if rng.random() < 0.5:  # several regions: the run may go to the second when the first has no capacity
        schedule.regions = ("us-east-1", "us-west-2")
        # (dag.test can take a minute to start: a shorter drought could end before the first launch)
        schedule.region_drought_seconds = rng.choice([0.0, 90.0, 3600.0])
    return schedule


def at_second(fault: tuple[float, str, dict]) -> float:
    """Faults in the order they are posted (two at the same second keep their drawn order)."""
    return fault[0]


def interruption(draw: float) -> str:
    return "notice" if draw < 0.4 else "scheduled" if draw < 0.6 else "hard"


class Chaos:
    """Applies a schedule while the run goes: faults at their times, interruptions once a command trains
    (on instances of ``instance_types`` only, if given)."""

    def __init__(
        self,
        cloud: LocalSpotCloud,
        schedule: Schedule,
        instance_types: tuple[str, ...] | None = None,
        *,
        several_regions: bool = False,
    ) -> None:
        """``several_regions``: the run has the schedule's regions (placements), so the first one's drought applies."""
        self.cloud, self.schedule = cloud, schedule
        self.several_regions = several_regions and len(schedule.regions) > 1
        self.instance_types = instance_types
        self.interrupted: dict[str, str] = {}  # instance id -> "notice", "hard" or "scheduled"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Chaos:
        s, cloud = self.schedule, self.cloud
        cloud.reset_faults()
        cloud.set_throttle("defaults")  # EC2's own buckets on every API, then the seed's on describes
        cloud.set_capacity("*", "*", available=True, market="all")
        cloud.set_consistency(describe_not_found_seconds=s.consistency_seconds, tags_late_seconds=s.tags_late_seconds)
        if s.describe_throttle:
            cloud.set_throttle("Describe*", burst=s.describe_throttle[0], rate=s.describe_throttle[1])
        cloud.set_clock(offset_seconds=s.clock_offset)
        if s.drought_seconds:
            cloud.set_capacity("*", "*", available=False, for_seconds=s.drought_seconds)
        for zone in FIRST_REGION_ZONES if s.region_drought_seconds and self.several_regions else ():
            cloud.set_capacity("*", zone, available=False, for_seconds=s.region_drought_seconds)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        self.cloud.reset_faults()
        if self.several_regions:  # the first region's drought may outlast the run
            self.cloud.set_capacity("*", "*", available=True, market="all")

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
                    if self.instance_types and instance["instance_type"] not in self.instance_types:
                        continue
                    if instance_id not in running and command_started(instance):
                        running[instance_id] = now
                    if instance_id in running and now - running[instance_id] >= plan[0][0]:
                        _, kind = plan.pop(0)
                        if kind == "scheduled":  # a notice window of advisory, then the stop
                            code = self.schedule.scheduled_code
                            self.cloud.schedule_event(instance_id, code=code, in_seconds=SCHEDULED_AHEAD)
                        else:
                            self.cloud.interrupt(instance_id, notice=kind == "notice")
                        self.interrupted[instance_id] = kind
                        break
            time.sleep(0.1)


def reference(tmp_path: Path, steps: int, save_every: int) -> str:
    """The result of an uninterrupted run of the chaos training script."""
    ref = tmp_path / "reference"
    ref.mkdir()
    subprocess.run(
        [sys.executable, str(SCRIPTS / "chaos_train.py"), str(steps), "0", str(save_every)],
        cwd=ref,
        check=True,
        capture_output=True,
    )
    return (ref / "result.txt").read_text()


def find_run(client, bucket: str, prefix: str) -> RunLedger:
    """The ledger of the one run under ``s3://bucket/prefix``."""
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    run_prefix = next(k for k in keys if k.endswith("/spec.json")).rsplit("/spec.json", 1)[0]
    return RunLedger(client, parse_s3_uri(f"s3://{bucket}/{run_prefix}"))


def run_instances(ec2, run_uri: str) -> list[dict]:
    """The run's instances, in every region whose EC2 client is given (one client, or a list of them)."""
    found = []
    for client in ec2 if isinstance(ec2, (list, tuple)) else [ec2]:
        answer = client.describe_instances(Filters=[{"Name": "tag:grid-resume:run-id", "Values": [run_uri]}])
        found += [i for r in answer["Reservations"] for i in r["Instances"]]
    return found


def session_of(instance: dict) -> int:
    return int({t["Key"]: t["Value"] for t in instance.get("Tags", [])}["grid-resume:session"])


def lifecycle_problems(
    cloud: LocalSpotCloud,
    ec2,
    ledger: RunLedger,
    *,
    interrupted: dict[str, str],
    expected: str,
    task_log: str,
    restore_to: Path,
    repeat_bound: int = 0,
    pair: bool = False,
) -> list[str]:
    """Every invariant of docs/lifecycle.md a finished run must show, from the ledger, the cloud's own
    instance list and the task log; the list of what broke (empty: all held)."""
    problems: list[str] = []

    def check(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    by_session: dict[int, list[str]] = {}
    for instance in run_instances(ec2, str(ledger.location)):
        by_session.setdefault(session_of(instance), []).append(instance["InstanceId"])
    check(all(len(v) == 1 for v in by_session.values()), f"one instance per session: {by_session}")
    claimed = [s for s in ledger.list_sessions() if ledger.get_json(ledger.session_key(s, "session.json"))]
    check(all(s in by_session for s in claimed), f"every claimed session has its instance: {claimed} {by_session}")
    # Never two alive at once: each instance ended before the next one was launched (the cloud's clock).
    emulated = {i["instance_id"]: i for i in cloud.instances()}
    spans = sorted(
        (emulated[i]["launched_at"], emulated[i]["ended_at"] or float("inf"), i) for v in by_session.values() for i in v
    )
    for (_, ended, first), (launched, _, second) in itertools.pairwise(spans):
        check(ended <= launched + 0.05, f"{first} still ran when {second} was launched")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(emulated[i]["state"] != "terminated" for *_, i in spans):
        time.sleep(0.3)
        emulated = {i["instance_id"]: i for i in cloud.instances()}
    check(all(emulated[i]["state"] == "terminated" for *_, i in spans), "no instance runs after the run ended")
    for session, (instance_id,) in sorted((s, tuple(v)) for s, v in by_session.items() if len(v) == 1):
        outcome = outcome_of(ledger, session)
        closed = ledger.get_json(ledger.session_key(session, "closed.json")) or {}
        reclaimed = emulated[instance_id]["reason"] in (SPOT_TERMINATION, SCHEDULED_STOP)
        ended = (outcome or {}).get("status") or closed.get("status")
        source = ((outcome or {}).get("notice") or {}).get("source")
        print(f"chaos: session {session}: {ended} ({source}) in {emulated[instance_id].get('zone')}")
        if outcome is not None:
            check(closed.get("status") == outcome["status"], f"session {session}: {closed} but the agent {outcome}")
            if outcome["status"] == "interrupted":  # a scheduled stop: the agent powers off before NotBefore
                scheduled = interrupted.get(instance_id) == "scheduled"
                check(reclaimed or scheduled, f"session {session} interrupted although its instance was not reclaimed")
                if scheduled:
                    source = (outcome.get("notice") or {}).get("source")
                    check(source == "scheduled", f"session {session} stopped by {source}, not its scheduled event")
        else:
            check(closed.get("status") == "lost", f"session {session} has no outcome and is {closed}")
            check(reclaimed, f"session {session} called lost, its instance healthy ({emulated[instance_id]['reason']})")
    Restorer(ledger, str(restore_to)).restore()
    result = (restore_to / "result.txt").read_text() if (restore_to / "result.txt").exists() else "(none)"
    check(result == expected, f"result {result!r} differs from the reference {expected!r}")
    if pair:  # the multi-file checkpoint: the restored pair is from one step, and no session resumed a torn one
        steps = [
            json.loads(p.read_text())["step"] if p.exists() else None
            for p in (restore_to / "ckpt.json", restore_to / "ckpt-b.json")
        ]
        check(steps[0] == steps[1], f"the restored pair is torn: ckpt.json {steps[0]}, ckpt-b.json {steps[1]}")
    repeated = 0
    for session in claimed:
        shipped = ledger.read_log(session, 0)[0].decode(errors="replace")
        for line in sorted(set(LINE.findall(shipped))):
            logged, sent = task_log.count(line), shipped.count(line)
            check(logged >= sent, f"{line!r}: shipped {sent} times, in the task log {logged} times")
            repeated += max(0, logged - sent)
        torn = re.findall(r"CHAOS-TORN [^;]*;", shipped)
        check(not torn, f"session {session} restored a torn checkpoint pair: {torn}")
    check(repeated <= repeat_bound, f"{repeated} lines repeated in the task log (bound {repeat_bound})")
    return problems
