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
  the bound on repeats is 0; tests/system/test_real_airflow.py kills real triggerers and bounds the repeats).

The schedule, the fault thread and these checks are shared with the real components' test
(tests/chaoslib.py); the worker's kill points are in tests/chaos_kills.py.

``GRID_CHAOS_SEEDS="1 2"`` (or ``make chaos SEEDS=N`` for 1..N) picks the seeds; a failure prints the
command that replays it.
"""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

import boto3
import pytest

from airflow_grid_resume.ledger.s3client import make_s3_client
from tests.chaos_kills import worker_killed_at
from tests.chaoslib import (
    FIRST_REGION_ZONES,
    SECOND_REGION_ZONES,
    Chaos,
    find_run,
    lifecycle_problems,
    reference,
    schedule_for,
)
from tests.chaoslib import seeds as seeds_from
from tests.conftest import SCRIPTS, make_dag

STEPS, STEP_SECONDS, SAVE_EVERY = 36, 0.12, 4
AMI = "ami-03cf127a"  # moto's, in every region
DEFAULT_SEEDS = "1 2"  # make test; make chaos SEEDS=N for more


def seeds() -> list[int]:
    return seeds_from("GRID_CHAOS_SEEDS", DEFAULT_SEEDS)


def test_schedules_are_seeded() -> None:
    assert schedule_for(7) == schedule_for(7)
    assert len({schedule_for(s).describe() for s in range(1, 10)}) > 5


def placements(regions: tuple[str, ...]) -> dict:
    """The operator's placement arguments for ``regions`` (none for the one-region form)."""
    if len(regions) < 2:
        return {}
    zones = {"us-east-1": FIRST_REGION_ZONES, "us-west-2": SECOND_REGION_ZONES}
    found = []
    for region in regions:
        by_zone = {
            s["AvailabilityZone"]: s["SubnetId"]
            for s in boto3.client("ec2", region_name=region).describe_subnets()["Subnets"]
        }
        found.append({"region": region, "subnet_ids": [by_zone[z] for z in zones[region]], "image_id": AMI})
    return {"image_id": None, "subnet_ids": (), "placements": found}


def chaos_dag(dag_id: str, workdir: Path, bucket: str, multi_file: bool = False, regions: tuple[str, ...] = ()):
    agent_args = ["--heartbeat-interval", "1", "--imds-poll", "0.2", "--sync-reserve", "1", "--min-grace", "1"]
    if multi_file:  # periodic syncs often enough to land inside a save
        agent_args += ["--sync-interval", "0.3"]
    return make_dag(
        dag_id,
        workdir,
        bucket,
        command=f"python3 chaos_train.py {STEPS} {STEP_SECONDS} {SAVE_EVERY}" + (" pair" if multi_file else ""),
        heartbeat_timeout=20.0,
        not_found_grace=15.0,
        agent_args=[*agent_args, "--notice-window", "3"],
        retries=3,  # the worker kills
        max_interruptions=4,
        **placements(regions),
    )


@pytest.mark.timeout(900)  # dag.test's own start-up alone can take a minute on a busy machine
@pytest.mark.parametrize("seed", seeds(), ids=lambda s: f"seed-{s}")
def test_the_lifecycle_holds_under_a_seeded_schedule_of_faults(spot_cloud, tmp_path: Path, capfd, seed: int) -> None:
    schedule = schedule_for(seed)
    replay = f'GRID_CHAOS_SEEDS="{seed}" .venv/bin/python -m pytest tests/system/test_chaos.py -k seed-{seed}'
    print(f"chaos: {schedule.describe()}\nreplay: {replay}")
    workdir = tmp_path / "training"
    workdir.mkdir()
    shutil.copy(SCRIPTS / "chaos_train.py", workdir / "chaos_train.py")
    bucket = f"chaos-{seed}-{uuid.uuid4().hex[:6]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    expected = reference(tmp_path, STEPS, SAVE_EVERY)
    dag = chaos_dag(f"chaos_{seed}_{uuid.uuid4().hex[:6]}", workdir, bucket, schedule.multi_file, schedule.regions)
    with worker_killed_at(schedule.kills) as kills, Chaos(spot_cloud, schedule, several_regions=True) as chaos:
        dagrun = dag.test()
    output = capfd.readouterr().out
    killed, calls = kills.read()["done"], kills.read()["trace"]
    print(f"chaos: the worker made {len(calls)} I/O calls; killed at {killed}")
    problems: list[str] = []
    if dagrun.state != "success":
        problems.append(f"the DAG run ended {dagrun.state}")
    if len(killed) != len(schedule.kills):
        problems.append(f"the worker kills {schedule.kills} happened: {killed}")
    problems += lifecycle_problems(
        spot_cloud,
        [boto3.client("ec2", region_name=region) for region in schedule.regions],
        find_run(make_s3_client(), bucket, "grid-runs/"),
        interrupted=chaos.interrupted,
        expected=expected,
        task_log=output,
        restore_to=tmp_path / "restored",
        pair=schedule.multi_file,
    )
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
