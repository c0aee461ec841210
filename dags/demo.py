"""The demo: train a small digits classifier on (emulated) spot capacity, through interruptions.

`make demo` runs this DAG on the local spot cloud with a real scheduler, triggerer, dag-processor
and api-server; the `GRID_DEMO_*` variables it sets say where the cloud is. Parsed anywhere else
(the DAG test, a curious `airflow dags list`), it uses placeholders and touches nothing.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

from airflow.sdk import DAG, task

from airflow_grid_resume.operators import GridRunOperator

TRAINING_DIR = Path(__file__).resolve().parent / "demo_training"
STEPS = int(os.environ.get("GRID_DEMO_STEPS", "400"))
STEP_SECONDS = float(os.environ.get("GRID_DEMO_STEP_SECONDS", "0.1"))

with DAG(
    "grid_resume_demo",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    tags=["grid-resume", "demo"],
    doc_md=__doc__,
):
    train = GridRunOperator(
        task_id="train_digits",
        command=f"python3 train.py --steps {STEPS} --step-seconds {STEP_SECONDS} --save-every 20",
        workdir=str(TRAINING_DIR),
        artifacts_uri=f"s3://{os.environ.get('GRID_DEMO_BUCKET', 'grid-demo')}/grid-runs/",
        instance_types=["g5.xlarge", "g4dn.xlarge"],
        image_id=os.environ.get("GRID_DEMO_AMI", "ami-00000000"),
        subnet_ids=os.environ.get("GRID_DEMO_SUBNETS", "subnet-00000000").split(","),
        aws_conn_id=None,  # the local spot cloud's endpoint and keys come from the environment
        region_name="us-east-1",
        max_interruptions=5,
        retries=1,
        retry_delay=timedelta(seconds=30),
        capacity_wait=timedelta(minutes=10),
        max_run=timedelta(minutes=15),
        capacity_backoff=(2.0, 5.0),
        poll_interval=1.0,
        keep_checkpoints=None,  # the demo's timeline draws every checkpoint the run committed
        instance_check_interval=2.0,
        heartbeat_timeout=8.0,
        # The demo's console and chaos schedule read the output from S3: it lands there every few seconds (no less often
        # than --log-interval, 3 s), not once a minute.
        agent_args=[
            *("--heartbeat-interval", "2", "--sync-interval", "5", "--imds-poll", "0.5", "--sync-reserve", "2"),
            *("--durable-log-interval", "1"),
        ],
    )

    @task
    def report(summary: dict) -> None:
        """The run summary the operator returned, as a downstream task sees it."""
        print(
            f"{summary['sessions']} sessions, {summary['interruptions']} interruptions, "
            f"{summary['spot_seconds']:.0f} s on spot, estimated cost {summary['estimated_cost_usd']} USD "
            f"(on demand: {summary['on_demand_cost_usd']} USD)"
        )

    report(train.output)
