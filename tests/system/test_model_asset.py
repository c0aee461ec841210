"""The trained model as an Asset, and the run's lineage, on a real Airflow (scheduler, dag-processor, triggerer,
api-server; LocalExecutor): a GridRunOperator with ``model_asset`` trains through a spot interruption; its
success emits an asset event; a second DAG, scheduled on that asset, runs on its own and restores the model from
the event's metadata; the OpenLineage provider (file transport, no server) writes the run's lineage. And a
late DAG run fires the deadline alert a GridRunOperator registered (``deadline_alert=``): the scheduler sees the
deadline missed, the triggerer runs the team's callback.

dag.test() would not do: it runs no scheduler, so no DAG is ever scheduled on an asset event.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from airflow_grid_resume.demo.stack import AirflowStack, wait_for
from airflow_grid_resume.emulator.client import LocalSpotCloud
from airflow_grid_resume.ledger.s3client import make_s3_client
from airflow_grid_resume.ledger.store import RunLedger
from airflow_grid_resume.ledger.uri import parse_s3_uri
from airflow_grid_resume.operators import run_key
from tests.conftest import TRAIN, command_started

# A whole Airflow as subprocesses: make test-stack runs these (.ci/run calls it), make test does not.
pytestmark = pytest.mark.airflow_stack

pytest.importorskip("airflow.providers.openlineage", reason="the lineage extra is not installed")

BUCKET = "model-asset"
MODEL_URI = f"s3://{BUCKET}/models/digits"
STEPS = 40
LATE_ALERT_MODULE = "grid_late_alert"
DAG_FILE = f"""
import os
from datetime import datetime, timedelta, timezone

from airflow.sdk import DAG, Asset, AsyncCallback, task

from airflow_grid_resume.operators import GridRunOperator
from airflow_grid_resume.run.asset import model_from_event, restore_model

MODEL = Asset("{MODEL_URI}")
# What both training tasks run, and where (the local spot cloud).
TRAINING = dict(
    command="python3 train.py {STEPS} 0.1",
    workdir=os.environ["GRID_E2E_WORKDIR"],
    artifacts_uri="s3://{BUCKET}/grid-runs/",
    image_id="ami-03cf127a",
    instance_types=["g5.xlarge"],
    subnet_ids=os.environ["GRID_E2E_SUBNETS"].split(","),
    aws_conn_id=None,
    region_name="us-east-1",
)

with DAG("grid_model", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), catchup=False):
    GridRunOperator(
        task_id="train",
        **TRAINING,
        poll_interval=0.5,
        instance_check_interval=1.0,
        capacity_backoff=(0.5, 1.0),
        agent_args=["--heartbeat-interval", "1", "--log-interval", "0.5", "--imds-poll", "0.2",
                    "--sync-reserve", "1", "--min-grace", "1"],
        retries=0,
        max_interruptions=2,
        retry_delay=timedelta(seconds=1),
        model_asset=MODEL,
    )

with DAG("evaluate_model", schedule=[MODEL], start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), catchup=False):

    @task
    def evaluate(*, triggering_asset_events=None) -> dict:
        import tempfile

        event = triggering_asset_events[MODEL][-1]
        model = model_from_event(event.extra)
        with tempfile.TemporaryDirectory() as out:  # the restore is read here and left nowhere
            restored = restore_model(model, out)
            with open(os.path.join(out, "result.txt")) as fh:
                result = fh.read()
        return {{"extra": dict(event.extra), "source": event.source_dag_id, "result": result, "restored": restored}}

    evaluate()

with DAG("grid_late", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), catchup=False):

    @task(retries=0)
    def upstream_data() -> None:
        import time

        # Late data: past the training's deadline, until the alert fired; then nothing to train on.
        until = time.monotonic() + 150
        while not os.path.exists(os.environ["GRID_LATE_ALERT_FILE"]) and time.monotonic() < until:
            time.sleep(1)
        raise RuntimeError("the upstream data did not come")

    upstream_data() >> GridRunOperator(
        task_id="train",
        **TRAINING,
        deadline=timedelta(seconds=5),
        expected_runtime=timedelta(seconds=4),
        deadline_alert=AsyncCallback("{LATE_ALERT_MODULE}.page_the_team"),
    )
"""
# The team's alert, importable by the triggerer (the plugins folder is on its sys.path).
LATE_ALERT = """
import json
import os


async def page_the_team(context=None, **kwargs):
    with open(os.environ["GRID_LATE_ALERT_FILE"], "a") as fh:
        run = context["dag_run"]
        fh.write(json.dumps({"dag_id": run["dag_id"], "run_id": run["dag_run_id"]}) + "\\n")
"""


def xcom(api, dag_id: str, run_id: str, task_id: str) -> dict:
    entry = api.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value")
    value = entry["value"]
    return json.loads(value) if isinstance(value, str) else value


@pytest.mark.timeout(600)
def test_a_succeeded_run_announces_its_model_and_lineage_and_the_evaluation_dag_runs(tmp_path: Path) -> None:
    home = tmp_path / "airflow"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "grid_model.py").write_text(DAG_FILE)
    (home / "plugins").mkdir()
    (home / "plugins" / f"{LATE_ALERT_MODULE}.py").write_text(LATE_ALERT)
    late_alerts = tmp_path / "late-alerts.jsonl"
    workdir = tmp_path / "training"
    workdir.mkdir()
    shutil.copy(TRAIN, workdir / "train.py")
    reference = tmp_path / "reference"
    reference.mkdir()
    subprocess.run([sys.executable, TRAIN, str(STEPS), "0.0"], cwd=reference, check=True, capture_output=True)
    lineage_file = tmp_path / "openlineage.jsonl"
    with LocalSpotCloud(notice_seconds=3) as cloud:
        aws = {**cloud.aws_env(), "AWS_EC2_METADATA_DISABLED": "true"}
        session = boto3.session.Session(aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1")
        session.client("s3", endpoint_url=cloud.endpoint_url).create_bucket(Bucket=BUCKET)
        subnet = session.client("ec2", endpoint_url=cloud.endpoint_url).describe_subnets()["Subnets"][0]["SubnetId"]
        stack = AirflowStack(
            home,
            home / "dags",
            {
                **aws,
                "GRID_E2E_WORKDIR": str(workdir),
                "GRID_E2E_SUBNETS": subnet,
                "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
                    {"type": "file", "log_file_path": str(lineage_file), "append": True}
                ),
                "AIRFLOW__OPENLINEAGE__NAMESPACE": "grid-test",
                "GRID_LATE_ALERT_FILE": str(late_alerts),
            },
        )
        try:
            stack.start("evaluate_model")
            api = stack.api
            api.call("PATCH", "/dags/evaluate_model", {"is_paused": False})
            run_id = api.trigger("grid_model")
            late_run_id = api.trigger("grid_late")
            # One interruption with a notice, once the command runs: the event must count it.
            first = wait_for(
                "the first session's command to run",
                lambda: [i for i in cloud.instances() if i["state"] == "running" and command_started(i)],
                180,
                0.5,
            )[0]
            cloud.interrupt(first["instance_id"], notice=True)
            state = wait_for(
                "grid_model to finish",
                lambda: (
                    (s := api.call("GET", f"/dags/grid_model/dagRuns/{run_id}")["state"]) in ("success", "failed") and s
                ),
                300,
                2,
            )
            assert state == "success", stack.log_tails()
            evaluations = wait_for(
                "the evaluate_model DAG to run on the model's asset event",
                lambda: [
                    r
                    for r in api.call("GET", "/dags/evaluate_model/dagRuns")["dag_runs"]
                    if r["state"] in ("success", "failed")
                ],
                120,
                2,
            )
            events = api.call("GET", "/assets/events?source_dag_id=grid_model")["asset_events"]
            late_state = wait_for(
                "grid_late to end",
                lambda: (
                    (s := api.call("GET", f"/dags/grid_late/dagRuns/{late_run_id}")["state"]) in ("success", "failed")
                    and s
                ),
                180,
                2,
            )
            late_train = api.task_instance("grid_late", late_run_id, "train")
            evaluation = xcom(api, "evaluate_model", evaluations[0]["dag_run_id"], "evaluate")
        except BaseException:
            print(stack.log_tails())
            raise
        finally:
            stack.stop()
        os.environ.update(aws)
        client = make_s3_client()
        # The asset event: one, on the model's URI, carrying where the final checkpoint is and what it took.
        assert len(events) == 1, events
        extra = events[0]["extra"]
        assert events[0]["uri"] == MODEL_URI
        run_uri = extra["run_uri"]
        assert run_uri == f"s3://{BUCKET}/grid-runs/{run_key('grid_model', 'train', run_id, -1)}"
        ledger = RunLedger(client, parse_s3_uri(run_uri))
        newest = ledger.list_manifests()[0]
        manifest = ledger.read_manifest(newest)
        checkpoint = extra["checkpoint"]
        assert checkpoint["manifest"] == newest.name
        assert checkpoint["manifest_uri"] == f"s3://{BUCKET}/{newest.key}"
        assert checkpoint["bytes"] == manifest.total_bytes > 0 and checkpoint["files"] == len(manifest.files)
        assert (extra["sessions"], extra["interruptions"], extra["failures"]) == (2, 1, 0)
        assert ledger.list_sessions() == [1, 2]
        assert 0 < extra["estimated_cost_usd"] < extra["on_demand_cost_usd"]
        # The downstream DAG ran on that event, read the same metadata and restored the trained model from it.
        assert len(evaluations) == 1 and evaluations[0]["state"] == "success", evaluations
        assert evaluation["source"] == "grid_model" and evaluation["extra"] == extra
        assert evaluation["result"] == (reference / "result.txt").read_text()
        assert evaluation["restored"] == newest.name
        # The late run: its deadline passed while its upstream data was late; Airflow called the team's alert once,
        # with that run; the training never started (no instance for it).
        alerts = [json.loads(line) for line in late_alerts.read_text().splitlines()] if late_alerts.exists() else []
        assert alerts == [{"dag_id": "grid_late", "run_id": late_run_id}], alerts
        assert late_state == "failed" and late_train["state"] == "upstream_failed", late_train
        assert len(cloud.instances()) == 2, "only grid_model's two sessions ran"
        # Lineage: the COMPLETE event of the task that succeeded, with the workdir's upload in, the run out.
    events_ol = [json.loads(line) for line in lineage_file.read_text().splitlines() if line.strip()]
    complete = [e for e in events_ol if e["eventType"] == "COMPLETE" and e["job"]["name"] == "grid_model.train"]
    assert complete, [(e["eventType"], e["job"]["name"]) for e in events_ol]
    done = complete[-1]
    inputs = {(d["namespace"], d["name"]) for d in done["inputs"]}
    outputs = {(d["namespace"], d["name"]) for d in done["outputs"]}
    run_prefix = run_uri.removeprefix(f"s3://{BUCKET}/")
    assert (f"s3://{BUCKET}", f"{run_prefix}/manifests/000000-000001.json") in inputs
    assert {(f"s3://{BUCKET}", run_prefix), (f"s3://{BUCKET}", "models/digits")} <= outputs
    facet = done["run"]["facets"]["gridResumeRun"]
    assert (facet["sessions"], facet["interruptions"], facet["runUri"]) == (2, 1, run_uri)
    assert facet["estimatedCostUsd"] == extra["estimated_cost_usd"]
    assert facet["finalCheckpoint"] == f"{run_uri}/manifests/{newest.name}"
