"""A ``deadline=`` run end to end: a real GridRunOperator (dag.test), the real agent on the local spot cloud, whose
spot capacity and interruptions replay a trace time-compressed (POST /_emulator/trace). The run meets its deadline
on spot where the trace allowed, and its cost matches what ``grid-resume simulate`` (the same policy code, the same
trace, the run's own measured work and changeover) says, within what the compression explains."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import pytest

from airflow_grid_resume.emulator.client import LocalSpotCloud
from airflow_grid_resume.ledger import records
from airflow_grid_resume.policy.simulate import simulate
from airflow_grid_resume.policy.traces import Trace
from airflow_grid_resume.run.pace import measure
from airflow_grid_resume.run.pacestore import pace_uri, read_prior
from airflow_grid_resume.run.summary import read_records, session_span
from tests.conftest import AMI, TRAIN
from tests.test_operators import run_ledger, summary_of

GAP = 600.0  # seconds of a trace tick (the public traces' 10 minutes)
TICK = 3.0  # real seconds per tick: a compression of 200
COMPRESSION = GAP / TICK
STEPS, STEP_SECONDS = 48, 0.5  # 24 s of training: 1.3 h at the trace's scale
# Real seconds from the first try: 11 h at the trace's scale, room to wait for spot. (A session start costs about
# 10 s here, a large share of the work: the policy keeps several changeovers of slack in reserve.)
DEADLINE = 200.0
# Spot for 8 ticks (80 min), then none for 8 (longer than a retry takes here), then spot to the end.
TRACE = [1] * 8 + [0] * 8 + [1] * 60


def deadline_dag(
    dag_id: str,
    workdir: Path,
    bucket: str,
    subnet: dict,
    *,
    steps: int = STEPS,
    deadline: float = DEADLINE,
    changeover: float = 4.0,
    agent_args: tuple[str, ...] = (),
    **extra: object,
):
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.sdk import DAG

    from airflow_grid_resume.operators import GridRunOperator

    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc)) as dag:
        GridRunOperator(
            task_id="train",
            command=f"python3 train.py {steps} {STEP_SECONDS} --save-every 1 --progress 1",
            workdir=str(workdir),
            artifacts_uri=f"s3://{bucket}/grid-runs/",
            instance_types=["g5.xlarge"],
            image_id=AMI,
            subnet_ids=[subnet["SubnetId"]],
            aws_conn_id=None,
            region_name="us-east-1",
            poll_interval=0.3,
            instance_check_interval=1.0,
            capacity_backoff=(0.5, 1.0),
            agent_args=[
                *("--heartbeat-interval", "1", "--log-interval", "0.5", "--imds-poll", "0.2"),
                *("--sync-reserve", "1", "--min-grace", "1"),
                *agent_args,
            ],
            retries=0,
            max_interruptions=3,
            retry_delay=timedelta(hours=1),  # an interruption must not wait it
            deadline=timedelta(seconds=deadline),
            expected_runtime=timedelta(seconds=steps * STEP_SECONDS),
            expected_changeover=timedelta(seconds=changeover),
            **extra,
        )
    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
    return dag


def replay_from_first_launch(cloud: LocalSpotCloud, zone: str, done: threading.Event) -> threading.Thread:
    """Start the trace when the run's first instance appears: the trace's tick 0 is the first launch decision,
    as in the simulation (whatever the Airflow start-up took on this machine)."""

    def loop() -> None:
        while not done.is_set():
            if cloud.instances():
                cloud.replay_trace("g5.xlarge", zone, TRACE, tick_seconds=TICK)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def test_a_deadline_run_meets_its_deadline_on_spot_through_a_replayed_trace_at_the_simulated_cost(
    spot_cloud: LocalSpotCloud, tmp_path: Path
) -> None:
    workdir = tmp_path / "training"
    workdir.mkdir()
    shutil.copy(TRAIN, workdir / "train.py")
    bucket = f"dl-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    subnet = sorted(boto3.client("ec2").describe_subnets()["Subnets"], key=lambda s: s["AvailabilityZone"])[0]
    zone = subnet["AvailabilityZone"]
    dag = deadline_dag(f"grid_deadline_{uuid.uuid4().hex[:6]}", workdir, bucket, subnet)
    done = threading.Event()
    replayer = replay_from_first_launch(spot_cloud, zone, done)
    try:
        dagrun = dag.test()
    finally:
        done.set()
        replayer.join(timeout=5)
        spot_cloud.replay_trace("g5.xlarge", zone, None, tick_seconds=TICK)
    assert dagrun.state == "success"

    ledger = run_ledger(bucket)
    summary = summary_of(dagrun)
    details = summary["session_details"]
    # On spot where the trace allowed: the 0 ticks reclaimed the first session, the policy waited (it was ahead
    # of the line), and the run finished on spot once the trace had spot again; never on-demand.
    assert [d["lifecycle"] for d in details] == ["spot", "spot"], details
    assert [d["status"] for d in details] == ["interrupted", "succeeded"]
    assert summary["on_demand_seconds"] == 0.0
    # Session 2 asked for spot in the 0 ticks and was refused, and waited (on-demand was there all along: a policy
    # that chose it would have launched it at once).
    attempt = ledger.read_record(records.LaunchAttempt, 2)
    assert attempt is not None and attempt.answers, attempt
    assert {(a["lifecycle"], a["code"]) for a in attempt.answers} == {("spot", "InsufficientInstanceCapacity")}
    assert attempt.lifecycle == "wait"  # what the policy decided in the round that asked last
    deadline = summary["deadline"]
    assert deadline["met"] is True and deadline["finished_at"] <= deadline["deadline_at"]
    stored = ledger.read_record(records.Deadline)
    assert stored is not None and stored.deadline_at == pytest.approx(stored.first_started_at + DEADLINE)

    # The same trace through `grid-resume simulate`'s code, with the run's own measured work and changeover at
    # the trace's scale (hours here are real hours times the compression).
    run = read_records(ledger)
    pace = measure(run, expected_hours=STEPS * STEP_SECONDS / 3600, now=time.time())
    assert pace.changeover_measured and pace.steps_per_hour
    # The task's next runs start from what this one measured (the pace record beside its runs).
    prior = read_prior(boto3.client("s3"), pace_uri(f"s3://{bucket}/grid-runs/", dag.dag_id, "train"))
    assert prior is not None and prior.runs == 1 and prior.total_steps == STEPS
    assert prior.steps_per_hour == pytest.approx(pace.steps_per_hour)
    assert prior.changeover_hours == pytest.approx(pace.changeover_hours)
    price = float(details[0]["estimated_cost_usd"]) / (details[0]["seconds"] / 3600)
    sim = simulate(
        [Trace(zone, GAP, tuple(TRACE))],
        work=pace.work_hours * COMPRESSION,
        deadline=(stored.deadline_at - stored.first_started_at) / 3600 * COMPRESSION,
        changeover=pace.changeover_hours * COMPRESSION,
        spot_prices={zone: price},
        on_demand_price=3 * price,
        start=0,
    )
    assert sim.deadline_met and sim.changeovers == 2 and sim.on_demand_hours == 0.0, sim
    assert sim.cost is not None
    # What the compression explains: the simulation bills a session from its start to its last step, while the
    # run also pays, per session, the seconds from its last progress line to its end (the notice's save and sync,
    # the final sync, the instance seen gone), which do not shrink with the trace; and its first and last steps
    # fall between progress lines (one step each). At the trace's scale each real second weighs 200.
    overhead = 0.0
    for record in run:
        last_at = record["outcome"]["progress"]["last_at"]
        overhead += session_span(record)[1] - last_at + 2 * STEP_SECONDS
    bound = price * overhead * COMPRESSION / 3600
    live = summary["estimated_cost_usd"] * COMPRESSION
    assert abs(live - sim.cost) <= bound, (live, sim.cost, bound, overhead)
    assert bound < 0.5 * sim.cost  # the bound is no blank cheque


def test_an_on_demand_session_makes_a_planned_stop_and_the_run_goes_back_to_spot(
    spot_cloud: LocalSpotCloud, tmp_path: Path
) -> None:
    """No spot at the start and the policy runs on-demand. Once EC2's placement scores say
    spot is back, the run watch asks the agent for a planned stop (its checkpoint saved), the session ends
    ``stopped``, and the same Airflow try launches the next session, on spot, which finishes the run."""
    from tests.conftest import command_started

    workdir = tmp_path / "training"
    workdir.mkdir()
    shutil.copy(TRAIN, workdir / "train.py")
    bucket = f"dl-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    subnet = sorted(boto3.client("ec2").describe_subnets()["Subnets"], key=lambda s: s["AvailabilityZone"])[0]
    zone = subnet["AvailabilityZone"]
    # 40 s of work, 100 s to do it, under Uniform Progress (the paper's policy, one of simulate's baselines): with no
    # spot it runs on-demand at once, and goes back to spot once it is ahead of its line and spot is there. (The
    # default policy leaves on-demand only with more slack than a test of a few minutes can give it.)
    dag = deadline_dag(
        f"grid_back_{uuid.uuid4().hex[:6]}",
        workdir,
        bucket,
        subnet,
        steps=80,
        deadline=100.0,
        changeover=5.0,
        deadline_policy="uniform-progress",
    )
    spot_cloud.set_capacity("g5.xlarge", zone, available=False, market="spot")
    done = threading.Event()

    def spot_back_once_on_demand_trains() -> None:
        while not done.is_set():
            running = [i for i in spot_cloud.instances() if i["lifecycle"] == "on-demand" and command_started(i)]
            if running:
                time.sleep(2.0)
                spot_cloud.set_capacity("g5.xlarge", zone, available=True, market="spot")
                return
            time.sleep(0.2)

    releaser = threading.Thread(target=spot_back_once_on_demand_trains, daemon=True)
    releaser.start()
    try:
        dagrun = dag.test()
    finally:
        done.set()
        releaser.join(timeout=5)
        spot_cloud.set_capacity("*", "*", available=True, market="all")
    assert dagrun.state == "success"
    ledger = run_ledger(bucket)
    summary = summary_of(dagrun)
    details = summary["session_details"]
    assert [(d["lifecycle"], d["status"]) for d in details] == [("on-demand", "stopped"), ("spot", "succeeded")]
    assert summary["interruptions"] == 0 and summary["failures"] == 0  # a planned stop spends nothing
    stop = ledger.read_record(records.Decision, 1)
    assert stop is not None and stop.action == "stop" and stop.point == "watch", stop
    assert stop.pool == zone  # the pool EC2's placement scores said had spot again
    outcome = ledger.read_record(records.Outcome, 1)
    assert outcome is not None and outcome.clean and (outcome.notice or {}).get("source") == "planned"
    resumed = ledger.read_record(records.Outcome, 2)
    assert resumed is not None and resumed.progress and resumed.progress["first"] > 1  # from the saved checkpoint
    assert [ti.try_number for ti in dagrun.get_task_instances()] == [1]  # one try: the stop spent no retry
    assert summary["deadline"]["met"] is True
