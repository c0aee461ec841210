"""make docker-test's checks against the compose stack (scripts/docker-test.sh brings it up and down).

Through the stack's published ports only, as a user would: the demo DAG is triggered through the REST API, its
first spot session is interrupted with a notice at 30 % of the training through the local spot cloud's control
route, the triggerer watching the run is killed, and the run must end in success with every session accounted for:
one instance per session, the task run by the Celery worker, the agent the image built uploaded as is, the output in
the task log.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import boto3

from airflow_grid_resume.demo.run import BUCKET, DAG_ID, TASK_ID, RunView
from airflow_grid_resume.demo.stack import AirflowApi, wait_for
from airflow_grid_resume.ec2.bootstrap import AGENT_KEY
from airflow_grid_resume.run.ending import session_status
from airflow_grid_resume.run.summary import read_records


def say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} ▶ {message}", flush=True)


def control(cloud: str, method: str, name: str, body: dict | None = None) -> Any:
    req = urllib.request.Request(
        f"{cloud}/_emulator/{name}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def task_log(api: AirflowApi, run_id: str, tries: int) -> str:
    """Every try's log as the UI gets it, as one string."""
    path = f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{TASK_ID}/logs"
    return "\n".join(json.dumps(api.call("GET", f"{path}/{n}?full_content=true")) for n in range(1, tries + 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--api", required=True, help="the api-server's published address")
    parser.add_argument("--cloud", required=True, help="the local spot cloud's published address")
    parser.add_argument("--steps", type=int, required=True, help="GRID_DEMO_STEPS the stack runs with")
    parser.add_argument("--compose", required=True, help="the compose command line of the stack")
    parser.add_argument("--timeout", type=float, default=420)
    args = parser.parse_args(argv)
    compose = shlex.split(args.compose)
    api = AirflowApi(args.api)
    wait_for("the api-server", lambda: api.call("GET", "/version"), 300, 2)
    wait_for(f"{DAG_ID} to be parsed", lambda: api.call("GET", f"/dags/{DAG_ID}"), 180, 2)
    alive = wait_for(
        "two live triggerers",
        lambda: (
            len(jobs := api.call("GET", "/jobs?job_type=TriggererJob&is_alive=true&limit=10")["jobs"]) >= 2 and jobs
        ),
        120,
        2,
    )
    say(f"Airflow is up at {args.api}: triggerers on {', '.join(j['hostname'] for j in alive)}")
    s3 = boto3.client(
        "s3",
        endpoint_url=args.cloud,
        region_name="us-east-1",
        aws_access_key_id="emulated",
        aws_secret_access_key="emulated",
    )
    run_id = api.trigger(DAG_ID)
    say(f"triggered {DAG_ID} ({run_id})")
    view = RunView(s3)
    interrupted: str | None = None
    killed: str | None = None
    state = "queued"
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        time.sleep(1)
        try:  # a slow answer from a loaded machine is no failure: ask again
            session = view.poll()
            if interrupted is None and session == 1 and view.step >= args.steps * 0.3 and view.ledger:
                interrupted = view.ledger.get_json(view.ledger.session_key(1, "launch.json"))["instance_id"]
                control(args.cloud, "POST", "interrupt", {"instance_id": interrupted, "notice": True})
                say(f"interrupted {interrupted} with a notice at step {view.step}")
            holder = (api.task_instance(DAG_ID, run_id, TASK_ID).get("triggerer_job") or {}).get("hostname")
            if killed is None and session == 2 and view.step >= args.steps * 0.6 and holder:
                # the container's hostname is its id: SIGKILL the triggerer running the run's watch
                subprocess.run([os.environ.get("DOCKER", "docker"), "kill", holder], check=True, capture_output=True)
                killed = holder
                say(f"killed the triggerer {holder} watching session 2 at step {view.step}")
            state = api.call("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
        except (OSError, urllib.error.URLError) as exc:
            say(f"(retrying: {exc})")
            continue
        if state in ("success", "failed"):
            view.poll()
            break
    say(f"the DAG run ended: {state}")
    ti = api.task_instance(DAG_ID, run_id, TASK_ID)
    assert state == "success", f"the demo run ended {state}: {ti}"
    assert interrupted and killed, "the run ended before the interruption and the triggerer kill could happen"
    assert view.ledger is not None
    statuses = [session_status(r).value for r in read_records(view.ledger)]
    assert statuses[0] == "interrupted" and statuses[-1] == "succeeded" and len(statuses) == 2, statuses
    instances = control(args.cloud, "GET", "instances")["instances"]
    assert len(instances) == len(statuses), f"{len(instances)} instances for {len(statuses)} sessions: {instances}"
    assert all(i["state"] == "terminated" for i in instances), instances
    uploaded = view.ledger.client.get_object(Bucket=BUCKET, Key=view.ledger.key(AGENT_KEY))["Body"].read()
    # CeleryExecutor: the task ran in the Celery worker's container (its hostname is the container's id)
    worker = subprocess.run([*compose, "ps", "-q", "celery-worker"], check=True, capture_output=True, text=True)
    assert ti["hostname"] and worker.stdout.strip().startswith(ti["hostname"]), (ti["hostname"], worker.stdout)
    built = subprocess.run(
        [*compose, "exec", "-T", "celery-worker", "bash", "-c", 'cat "$GRID_RESUME_AGENT_ZIPAPP"'],
        check=True,
        capture_output=True,
    ).stdout
    assert hashlib.sha256(uploaded).digest() == hashlib.sha256(built).digest(), "the agent uploaded is not the image's"
    expected = (
        "spot interruption: session 1 ended: spot interruption notice",
        "resumed from checkpoint at step",
        "done: test accuracy",
        "run summary: 2 sessions, 1 interruptions, 0 failures; succeeded",
        "s3://grid-demo-logs/airflow/",  # the log comes from the remote log
    )
    # The worker uploads the last try's log once its process has exited, just after the run's state is set.
    try:
        log = wait_for(
            "the whole story in the task log",
            lambda: all(e in (text := task_log(api, run_id, int(ti["try_number"]))) for e in expected) and text,
            90,
            3,
        )
    except TimeoutError:
        log = task_log(api, run_id, int(ti["try_number"]))
        raise AssertionError(f"{[e for e in expected if e not in log]} not in the task log: {log[-4000:]}") from None
    say(
        f"success: sessions {statuses}, one instance each, the task run by the Celery worker {ti['hostname']}, "
        "the image's agent, the whole story in the task log from the remote log"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
