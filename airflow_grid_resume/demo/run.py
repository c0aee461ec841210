"""``grid-resume demo``: the auto-resume lifecycle for real, with no AWS account.

Starts the local spot cloud and a real Airflow in a throwaway home, triggers the demo DAG (a small
digits classifier trained by ``dags/demo_training/train.py``), plays a chaos schedule against it
(capacity withheld, an interruption with a notice, a hard loss), shows the run as it goes, and
ends with a summary, a timeline picture and a verdict: exit 0 only if the run finished through
its interruptions with the same final model as an uninterrupted reference run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import boto3

from airflow_grid_resume.agent.restore import Restorer
from airflow_grid_resume.demo.chaos import HARD_LOSS, ChaosSchedule
from airflow_grid_resume.demo.report import last_step, misread_sessions, steps_lost, summary_lines, verdict
from airflow_grid_resume.demo.stack import AirflowStack
from airflow_grid_resume.emulator.client import LocalSpotCloud
from airflow_grid_resume.ledger import layout
from airflow_grid_resume.ledger.store import RunLedger
from airflow_grid_resume.ledger.uri import parse_s3_uri
from airflow_grid_resume.run.ending import session_status
from airflow_grid_resume.run.summary import read_records, session_span, summarize
from airflow_grid_resume.ui.timeline import timeline_svg

DAG_ID, TASK_ID, BUCKET, AMI = "grid_resume_demo", "train_digits", "grid-demo", "ami-03cf127a"


def default_dags_folder() -> Path:
    """The repository's dags/ (the package is installed in editable mode by make), else ./dags."""
    beside = Path(__file__).resolve().parents[2] / "dags"
    return beside if (beside / "demo.py").is_file() else Path.cwd() / "dags"


def say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} ▶ {message}", flush=True)


def reference_run(training_dir: Path, steps: int, into: Path) -> dict:
    """The same training, uninterrupted, on this machine: what the resumed run must reproduce."""
    into.mkdir(parents=True, exist_ok=True)
    shutil.copy(training_dir / "train.py", into / "train.py")
    # The environment an emulated instance gets (the local spot cloud passes PATH only): numerics depend on
    # it (an OPENBLAS_CORETYPE in this shell picks another BLAS kernel, whose sums differ in the last bit).
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(into), "PYTHONUNBUFFERED": "1"}
    subprocess.run(
        [sys.executable, "train.py", "--steps", str(steps)],
        cwd=into,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return json.loads((into / "metrics.json").read_text())


class RunView:
    """Follows the run in its ledger: streams each session's output, tracks progress."""

    def __init__(self, s3: Any) -> None:
        self.s3 = s3
        self.ledger: RunLedger | None = None
        self.offsets: dict[int, int] = {}
        self.logs: dict[int, str] = {}
        self.step = 0

    def find(self) -> RunLedger | None:
        if self.ledger is None:
            listed = self.s3.list_objects_v2(Bucket=BUCKET, Prefix=f"grid-runs/{DAG_ID}/").get("Contents", [])
            spec = next((o["Key"] for o in listed if o["Key"].endswith("/" + layout.SPEC)), None)
            if spec:
                run = spec.removesuffix("/" + layout.SPEC)
                self.ledger = RunLedger(self.s3, parse_s3_uri(f"s3://{BUCKET}/{run}"))
        return self.ledger

    def poll(self) -> int:
        """Print new output of every session; return the current session (0: none yet)."""
        ledger = self.find()
        if ledger is None:
            return 0
        sessions = ledger.list_sessions()
        for session in sessions:
            data, offset = ledger.read_log(session, self.offsets.get(session, 0))
            if not data:
                continue
            text = data.decode(errors="replace")
            complete = text[: text.rfind("\n") + 1]
            self.offsets[session] = offset - (len(data) - len(complete.encode()))
            self.logs[session] = self.logs.get(session, "") + complete
            for line in complete.splitlines():
                print(f"    s{session} │ {line}", flush=True)
            reached = last_step(complete)
            if reached is not None:
                self.step = reached
        return sessions[-1] if sessions else 0


def live_status(ti: dict, session: int, chaos_done: int, chaos_planned: int) -> str:
    """One line of the live view, in words (the REST API answers None before the task is scheduled)."""
    state = ti.get("state") or "not scheduled yet"
    tried = f"try {ti['try_number']}" if ti.get("try_number") else "no try yet"
    where = f"session {session}" if session else "no session yet"
    return f"task {state} ({tried}), {where}, chaos: {chaos_done} of {chaos_planned} planned interruptions done"


def run_demo(args: argparse.Namespace) -> int:
    home = Path(args.home).resolve()
    dags = Path(args.dags).resolve()
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    reference: dict = {}

    def compute_reference() -> None:
        reference.update(reference_run(dags / "demo_training", args.steps, home / "reference"))

    ref_thread = threading.Thread(target=compute_reference, daemon=True)
    ref_thread.start()
    chaos = ChaosSchedule.default(args.steps, args.withhold)
    say("the chaos schedule: " + "; ".join(e.describe() for e in chaos.events))
    started = time.monotonic()
    with LocalSpotCloud(notice_seconds=args.notice_seconds, state_dir=str(home / "cloud")) as cloud:
        aws = {**cloud.aws_env(), "AWS_EC2_METADATA_DISABLED": "true"}
        session = boto3.session.Session(
            aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        )
        s3 = session.client("s3", endpoint_url=cloud.endpoint_url)
        ec2 = session.client("ec2", endpoint_url=cloud.endpoint_url)
        s3.create_bucket(Bucket=BUCKET)
        subnets = sorted(ec2.describe_subnets()["Subnets"], key=lambda s: s["AvailabilityZone"])[:2]
        env = {
            **aws,
            "GRID_DEMO_BUCKET": BUCKET,
            "GRID_DEMO_AMI": AMI,
            "GRID_DEMO_SUBNETS": ",".join(s["SubnetId"] for s in subnets),
            "GRID_DEMO_STEPS": str(args.steps),
            "GRID_DEMO_STEP_SECONDS": str(args.step_seconds),
        }
        say(f"local spot cloud at {cloud.endpoint_url}; starting Airflow in {home / 'airflow'}")
        stack = AirflowStack(home / "airflow", dags, env)
        try:
            stack.start(DAG_ID)
            say(
                f"Airflow is up at {stack.url}, listening on 127.0.0.1 only "
                f"(start-up {time.monotonic() - started:.0f} s)"
            )
            withhold = chaos.withholding()
            if withhold:
                cloud.set_capacity("*", "*", available=False, for_seconds=withhold.seconds, market="all")
                say(f"chaos: {withhold.describe()}")
            run_id = stack.api.trigger(DAG_ID)
            say(f"triggered {DAG_ID} ({run_id})")
            triggered = time.monotonic()
            view = RunView(s3)
            dag_state, last_status = "queued", ""
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                current = view.poll()
                ti = stack.api.task_instance(DAG_ID, run_id, TASK_ID)
                status = live_status(ti, current, len(chaos.done), chaos.interruptions)
                if status != last_status:  # the live view: a line whenever the run changes state
                    say(f"{status}, step {view.step}/{args.steps}")
                    last_status = status
                for event in chaos.due(current, view.step):
                    launch = view.ledger.read_launch(current) if view.ledger else None
                    if launch:
                        say(f"chaos: {event.describe()} ({launch.instance_id})")
                        cloud.interrupt(launch.instance_id, notice=event.kind != HARD_LOSS)
                dag_state = stack.api.call("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
                if dag_state in ("success", "failed"):
                    view.poll()
                    break
                time.sleep(1)
            say(f"the DAG run ended: {dag_state}, {time.monotonic() - triggered:.0f} s after it was triggered")
            return finish(args, home, view, dag_state, chaos, ref_thread, reference, stack)
        finally:
            stack.stop()  # with --keep-running, finish() returns only after Ctrl-C


def finish(
    args: argparse.Namespace,
    home: Path,
    view: RunView,
    dag_state: str,
    chaos: ChaosSchedule,
    ref_thread: threading.Thread,
    reference: dict,
    stack: AirflowStack,
) -> int:
    ledger = view.find()
    if ledger is None:
        say("no run was created: see the component logs in " + str(home / "airflow"))
        return 1
    records = read_records(ledger)
    summary = summarize(records)
    logs = [
        {"session": r["session"], "status": session_status(r), "log": ledger.read_log(r["session"])[0].decode()}
        for r in records
    ]
    waited = sum(float((r["launch"] or {}).get("waited_seconds") or 0) for r in records)
    result_dir = home / "result"
    Restorer(ledger, str(result_dir)).restore()
    metrics_file = result_dir / "metrics.json"
    metric = json.loads(metrics_file.read_text()) if metrics_file.exists() else None
    ref_thread.join(300)
    manifests = ledger.list_manifests()
    rows = []
    for r in records:
        launch = r["launch"] or {}
        start, end = session_span(r)
        start = start or 0.0
        rows.append(
            {
                "session": r["session"],
                "status": session_status(r),
                "instance_type": launch.get("instance_type"),
                "lifecycle": launch.get("lifecycle"),
                "wait_start": start - float(launch.get("waited_seconds") or 0),
                "start": start,
                "end": end or start,
                "checkpoints": [m.committed_at for m in manifests if m.session == r["session"] and m.committed_at],
            }
        )
    picture = home / "timeline.svg"
    picture.write_text(timeline_svg(rows, title=f"{DAG_ID}: {summary['sessions']} spot sessions"))
    print()
    for line in summary_lines(summary, steps_lost(logs), waited_seconds=waited, metric=metric, reference=reference):
        print("  " + line)
    print(f"  timeline:        {picture}")
    problems = verdict(
        dag_state=dag_state,
        statuses=[row["status"] for row in rows],
        expected_interruptions=chaos.interruptions,
        metric=metric,
        reference=reference or None,
        misread=misread_sessions(records),
    )
    print()
    if problems:
        for problem in problems:
            print(f"  ✗ {problem}")
        print(f"  component logs: {home / 'airflow'}")
        return 1
    print("  ✓ the run survived every interruption and trained to the same model as the uninterrupted reference")
    if args.keep_running:
        print(
            f"\n  Airflow keeps running at {stack.url}, listening on 127.0.0.1 only: no login is asked (simple "
            "auth manager, every user an admin), so nobody else on the network can reach it."
        )
        print(
            f"  Open DAG {DAG_ID}, task {TASK_ID}: its 'Spot run' tab shows every try, what ended it, the cost "
            "and the checkpoints; 'Spot training' (Browse menu) lists every run; the 'Spot instance' link (Details "
            "tab) opens the instance of the try selected there, on the local spot cloud."
        )
        print("  Press Ctrl-C to stop everything.")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("\n  stopping Airflow and the local spot cloud")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM ends the demo like Ctrl-C: through the finally blocks that stop what it started."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="grid-resume demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", default=".demo", help="throwaway directory for Airflow, the cloud and results")
    parser.add_argument("--dags", default=str(default_dags_folder()), help="the dags folder holding demo.py")
    parser.add_argument("--steps", type=int, default=400, help="training steps")
    parser.add_argument("--step-seconds", type=float, default=0.1, help="pause per step, to make it watchable")
    parser.add_argument("--withhold", type=float, default=20.0, help="seconds without capacity at the start")
    parser.add_argument("--notice-seconds", type=float, default=10.0, help="spot notice lead time")
    parser.add_argument("--timeout", type=float, default=420.0, help="give up after this many seconds")
    parser.add_argument("--keep-running", action="store_true", help="leave Airflow up afterwards for the UI")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run_demo(args)
    except KeyboardInterrupt:
        print("\ndemo stopped; everything it started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
