"""The UI plugin in a real browser: Chromium (Debian's, driven by Playwright) against a real Airflow
(api-server with a login, scheduler, triggerer, dag-processor) running a training that a spot notice
interrupts on the local spot cloud. The user opens the task instance's "Spot run" tab and the
"Spot training" page as they would, through Airflow's own pages; screenshots are kept on failure."""

from __future__ import annotations

import contextlib
import re
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
import pytest

from airflow_grid_resume.demo.stack import AirflowStack, wait_for
from airflow_grid_resume.emulator.client import LocalSpotCloud
from airflow_grid_resume.ledger import layout
from airflow_grid_resume.ledger.store import RunLedger
from airflow_grid_resume.ledger.uri import parse_s3_uri
from tests.conftest import heartbeat_of

# A whole Airflow as subprocesses: make test-stack runs these (.ci/run calls it), make test does not.
pytestmark = pytest.mark.airflow_stack

CHROMIUM = "/usr/bin/chromium"  # Debian's package (scripts/system-packages.txt); Playwright downloads nothing
HEADLESS_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BUCKET, LOGIN = "ui-browser", ("grid-admin", "correct-horse-battery")
STEPS = 80

SCRIPT = f"""
import json, os, signal, sys, time
stop = False
signal.signal(signal.SIGTERM, lambda *a: globals().update(stop=True))
step = json.load(open("ckpt.json"))["step"] if os.path.exists("ckpt.json") else 0
def save():
    with open("ckpt.tmp", "w") as fh:
        json.dump({{"step": step}}, fh)
    os.replace("ckpt.tmp", "ckpt.json")
while step < {STEPS}:
    if stop:
        save(); print("saved at step", step, flush=True); sys.exit(0)
    # session 1 trains slowly (the test looks at it live, then interrupts it); the resumed session hurries
    for _ in range(10 if os.environ.get("GRID_RESUME_SESSION") == "1" else 1):
        if not stop:
            time.sleep(0.1 if os.environ.get("GRID_RESUME_SESSION") == "1" else 0.05)
    step += 1
    for part in range(4):  # a tqdm-style bar on stderr: carriage returns, no newline
        print(f"\\rstep {{step}}: {{25 * part}} %", end="", file=sys.stderr, flush=True)
    print(f"grid-resume: progress {{step}}/{STEPS}", flush=True)
    if step % 5 == 0:
        save()
save()
print("done", flush=True)
"""

DAG_FILE = """
import os
from datetime import datetime, timedelta, timezone
from airflow.sdk import DAG
from airflow_grid_resume.operators import GridRunOperator

with DAG("grid_ui", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), catchup=False):
    GridRunOperator(
        task_id="train",
        command="python3 train.py",
        workdir=os.environ["GRID_UI_WORKDIR"],
        artifacts_uri="s3://ui-browser/grid-runs/",
        instance_types=["g5.xlarge"],
        image_id="ami-03cf127a",
        subnet_ids=[os.environ["GRID_UI_SUBNET"]],
        aws_conn_id=None,
        region_name="us-east-1",
        poll_interval=0.5,
        instance_check_interval=1.0,
        capacity_backoff=(4.0, 4.0),
        agent_args=["--heartbeat-interval", "1", "--log-interval", "0.5", "--imds-poll", "0.2", "--sync-reserve", "1",
                    "--min-grace", "1"],
        max_interruptions=3,
        retries=1,
        retry_delay=timedelta(hours=1),
    )
"""


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=HEADLESS_FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _get(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _ledger(s3: Any) -> RunLedger | None:
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="grid-runs/grid_ui/").get("Contents", [])
    spec = next((o["Key"] for o in listed if o["Key"].endswith("/spec.json")), None)
    return RunLedger(s3, parse_s3_uri(f"s3://{BUCKET}/{spec.rsplit('/spec.json', 1)[0]}")) if spec else None


def test_run_view_and_dashboard_tell_an_interruption_from_a_failure(browser: Any, tmp_path: Path) -> None:
    home = tmp_path / "airflow"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "grid_ui.py").write_text(DAG_FILE)
    workdir = tmp_path / "training"
    workdir.mkdir()
    (workdir / "train.py").write_text(textwrap.dedent(SCRIPT))
    shots = tmp_path / "screenshots"
    page = None
    with LocalSpotCloud(notice_seconds=2) as cloud:
        aws = {**cloud.aws_env(), "AWS_EC2_METADATA_DISABLED": "true"}
        kw = dict(endpoint_url=cloud.endpoint_url, region_name="us-east-1")
        s3 = boto3.client("s3", aws_access_key_id="x", aws_secret_access_key="x", **kw)
        ec2 = boto3.client("ec2", aws_access_key_id="x", aws_secret_access_key="x", **kw)
        s3.create_bucket(Bucket=BUCKET)
        subnet, zone = (lambda s: (s["SubnetId"], s["AvailabilityZone"]))(ec2.describe_subnets()["Subnets"][0])
        env = {**aws, "GRID_UI_WORKDIR": str(workdir), "GRID_UI_SUBNET": subnet}
        stack = AirflowStack(home, home / "dags", env, login=LOGIN)
        cloud.set_capacity("g5.xlarge", "*", available=False)  # session 1 first waits for capacity
        try:
            stack.start("grid_ui")
            api, url = stack.api, stack.url
            run_id = api.trigger("grid_ui")
            token = api.get_token()
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            context.add_cookies([{"name": "_token", "value": token, "url": url}])
            page = context.new_page()
            ti_view = f"{url}/dags/grid_ui/runs/{quote(run_id, safe='')}/tasks/train/plugin/grid-resume-run"

            # While the capacity trigger waits: what for, EC2's answer, the next try.
            ledger = wait_for("the run's ledger", lambda: _ledger(s3), 90, 0.5)
            attempt_key = ledger.key(layout.launch_attempt(1))
            wait_for(
                "a capacity round to end",
                lambda: (ledger.get_json(attempt_key) or {}).get("phase") == "backing-off",
                90,
                0.5,
            )
            page.goto(ti_view)
            frame = page.frame_locator("iframe")
            state = frame.get_by_test_id("state")
            state.wait_for(timeout=30_000)
            text = state.inner_text()
            assert text.startswith(f"waiting for spot capacity: g5.xlarge in {zone}, next try"), text
            assert "EC2 answered InsufficientInstanceCapacity (no capacity for it there now)" in text, text
            assert "InsufficientInstanceCapacity" in frame.get_by_test_id("capacity-answers").inner_text()
            cloud.set_capacity("g5.xlarge", "*", available=True)

            # While session 1 trains: the live state, from its heartbeat.
            wait_for(
                "session 1 to train a few steps",
                lambda: ((heartbeat_of(ledger, 1) or {}).get("progress") or {}).get("done", 0) >= 3,
                90,
                0.5,
            )
            page.goto(ti_view)
            frame = page.frame_locator("iframe")
            state = frame.get_by_test_id("state")
            state.wait_for(timeout=30_000)
            assert "running on g5.xlarge" in state.inner_text()
            assert "heartbeat" in state.inner_text()
            assert f"of {STEPS}" in state.inner_text()  # the agent's heartbeat carries the script's progress
            assert frame.get_by_test_id("progress").inner_text().startswith("step ")

            # Airflow's own log view of the deferred try: served live by the stack's loopback log server
            # (the watch writes output into it once per uploaded chunk, seconds after the heartbeat showed it)
            logs_url = f"/dags/grid_ui/dagRuns/{quote(run_id, safe='')}/taskInstances/train/logs/1"
            live_log = api.call("GET", logs_url)
            with contextlib.suppress(TimeoutError):
                live_log = wait_for(
                    "the script's output in the live task log",
                    lambda: "grid-resume: progress" in str((log := api.call("GET", logs_url))["content"]) and log,
                    30,
                    1,
                )
            assert "grid-resume: progress" in str(live_log["content"]), str(live_log)[-2000:]
            assert f"http://127.0.0.1:{stack.log_port}/log/" in str(live_log), str(live_log)[:2000]
            assert "Could not read served logs" not in str(live_log)

            instance_id = ledger.get_json(ledger.session_key(1, "launch.json"))["instance_id"]
            cloud.interrupt(instance_id, notice=True)
            final = wait_for(
                "the DAG run to finish",
                lambda: (
                    (s := api.call("GET", f"/dags/grid_ui/dagRuns/{run_id}")["state"]) in ("success", "failed") and s
                ),
                150,
                1,
            )
            assert final == "success", stack.log_tails()

            page.goto(ti_view)
            frame = page.frame_locator("iframe")
            tries = frame.get_by_test_id("tries")
            tries.wait_for(timeout=30_000)
            rows = tries.locator("tr").all_inner_texts()[1:]
            assert len(rows) == 2, rows  # one row per Airflow try
            assert "⚡ spot interruption notice" in rows[0] and instance_id in rows[0], rows
            assert "succeeded" in rows[1] and "failed" not in rows[1], rows
            assert "interruption" in (tries.locator("tr").nth(1).get_attribute("class") or "")
            assert frame.get_by_test_id("state").inner_text() == "succeeded in session 2"
            cost = frame.get_by_test_id("cost").inner_text()
            assert " USD against " in cost and "on demand" in cost, cost
            checkpoints = frame.get_by_test_id("checkpoints").inner_text()
            assert f"s3://{BUCKET}/grid-runs/grid_ui/train/" in checkpoints and "/manifests/000002-" in checkpoints
            assert "interruptions: 1 used, 2 of 3 left" in frame.get_by_test_id("budgets").inner_text()
            sessions = frame.get_by_test_id("sessions").inner_text()
            assert "us-east-1" in sessions and "spot" in sessions

            # Each try's row links its own instance, and so does Airflow's own extra link of each try (the UI
            # asks for the try it shows; the plugin's link resolves an older try from the ledger).
            second = ledger.get_json(ledger.session_key(2, "launch.json"))["instance_id"]
            pages = f"{cloud.endpoint_url}/_emulator/pages/instances"
            links = f"/dags/grid_ui/dagRuns/{quote(run_id, safe='')}/taskInstances/train/links"
            assert api.call("GET", links)["extra_links"]["Spot instance"] == f"{pages}/{second}"
            assert api.call("GET", links + "?try_number=2")["extra_links"]["Spot instance"] == f"{pages}/{second}"
            assert api.call("GET", links + "?try_number=1")["extra_links"]["Spot instance"] == f"{pages}/{instance_id}"
            page.goto(f"{url}/dags/grid_ui/runs/{quote(run_id, safe='')}/tasks/train/details?try_number=1")
            airflow_link = page.get_by_role("link", name="Spot instance")
            airflow_link.wait_for(timeout=30_000)
            assert airflow_link.get_attribute("href") == f"{pages}/{instance_id}"
            page.goto(ti_view)
            frame = page.frame_locator("iframe")
            tries = frame.get_by_test_id("tries")
            tries.wait_for(timeout=30_000)
            first_link = tries.locator("tr").nth(1).get_by_role("link", name=instance_id).get_attribute("href")
            assert first_link == f"{cloud.endpoint_url}/_emulator/pages/instances/{instance_id}"
            page.goto(first_link)
            assert "terminated" in page.get_by_test_id("instance").inner_text()

            page.goto(f"{url}/plugin/grid-resume-fleet")
            frame = page.frame_locator("iframe")
            runs = frame.get_by_test_id("runs")
            runs.wait_for(timeout=30_000)
            row = runs.locator("tr", has_text="grid_ui").inner_text()
            assert run_id in row and "succeeded in session 2" in row, row
            assert "1 interruptions" in frame.get_by_test_id("fleet-totals").inner_text()
            assert "g5.xlarge" in frame.get_by_test_id("by-pair").inner_text()
            # the pictures above the tables: this run last night (no deadline: its finish time), its pool's
            # interruption, its cost on today's bar
            night = frame.get_by_test_id("chart-deadlines")
            assert night.locator('rect[data-run="grid_ui.train"]').get_attribute("data-status") == "succeeded"
            assert "grid_ui.train" in night.inner_text() and "finished" in night.inner_text()
            pool = frame.get_by_test_id("chart-pools").locator(f'rect[data-pool="g5.xlarge {zone}"]')
            assert (
                pool.first.get_attribute("data-series") == "interruptions"
                and pool.first.get_attribute("data-value") == "1"
            )
            assert (
                float(
                    frame.get_by_test_id("chart-cost")
                    .locator("rect[data-series=spot]")
                    .last.get_attribute("data-value")
                )
                > 0
            )

            # The api-server's auth protects the plugin: no token, no data; the user's token, the page.
            run_view = f"{url}/grid-resume/run?dag_id=grid_ui&run_id={quote(run_id, safe='')}&task_id=train"
            assert _get(run_view) == 401
            assert _get(f"{url}/grid-resume/") == 401
            assert _get(f"{url}/grid-resume/run.json?dag_id=grid_ui&run_id=x&task_id=train", "forged") == 403
            assert _get(run_view, token) == 200
        except BaseException:
            if page is not None:
                shots.mkdir(exist_ok=True)
                page.screenshot(path=str(shots / "failure.png"), full_page=True)
                print(f"screenshot: {shots / 'failure.png'}")
            raise
        finally:
            stack.stop()

        assert not [p for p in stack.procs if p.poll() is None]
    # Airflow's own pages: the interrupted try's log says why in one line, the last one ends with the summary.
    try_dir = next((home / "logs").rglob("dag_id=grid_ui/**/task_id=train"))
    first = "".join(p.read_text(errors="replace") for p in sorted(try_dir.glob("attempt=1.log*")))
    last = "".join(p.read_text(errors="replace") for p in sorted(try_dir.glob("attempt=2.log*")))
    assert "spot interruption: session 1 ended: spot interruption notice; the next try resumes from checkpoint" in first
    assert "Traceback" not in first and "Task failed with exception" not in first
    assert "run summary: 2 sessions, 1 interruptions, 0 failures; succeeded" in last
    assert f"newest checkpoint: s3://{BUCKET}/grid-runs/grid_ui/train/" in last
    assert "Found credentials in environment variables" not in first + last
    # tqdm-style carriage returns are split into lines, not one growing line
    # (a task-log record holds the lines that arrived together, one under the other: JSON-escaped line ends)
    assert max(len(line) for line in re.split(r"\n|\\n", first + last)) < 2000
