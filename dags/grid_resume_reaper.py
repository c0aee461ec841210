"""Maintenance: terminate EC2 instances that outlived their grid-resume run, every hour.

The run triggers terminate every instance they see end; this DAG is the safety net for what they
cannot see (a triggerer outage longer than a session, a trigger deleted without ``on_kill``). It
terminates only instances carrying the ``grid-resume:run-id`` tag whose ``grid-resume:expires-at``
has passed or whose run's ledger says the run ended. The IAM policy it needs is in
docs/user-guide.md ("Reaping instances that outlived their run").

Nothing talks to AWS while this file is parsed.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG, task

AWS_CONN_ID = os.environ.get("GRID_REAPER_AWS_CONN_ID", "aws_default")
REGION = os.environ.get("GRID_REAPER_REGION") or None

with DAG(
    dag_id="grid_resume_reaper",
    schedule=timedelta(hours=1),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["grid-resume", "maintenance"],
    doc_md=__doc__,
):

    @task(retries=2, retry_delay=timedelta(minutes=5))
    def reap_expired_instances() -> dict:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        from airflow_grid_resume.hooks.spot import SpotLaunchHook
        from airflow_grid_resume.reaper import reap

        ec2 = SpotLaunchHook(aws_conn_id=AWS_CONN_ID, region_name=REGION).conn
        s3 = S3Hook(aws_conn_id=AWS_CONN_ID, region_name=REGION).get_conn()
        report = reap(ec2, s3, apply=True)
        for item in report["reapable"]:
            print(
                f"terminated {item['instance_id']} (run {item['run_id']}, session {item['session']}): {item['reason']}"
            )
        for note in report["notes"]:
            print(f"note: {note}")
        return report

    reap_expired_instances()
