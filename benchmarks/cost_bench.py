"""What one run's control plane costs in S3 and SQS requests per hour, on both sides, at the defaults.

    python benchmarks/cost_bench.py [--minutes 3] [--lines-per-second 3] [--live-output sqs|s3]
        [--spot-price 0.21] [--json FILE]

One real agent session at its defaults runs a command that prints ``--lines-per-second`` lines, and one
real ``RunWatchTrigger`` at the operator's defaults (poll 2 s, instance check 30 s) watches it, against
moto's server. With ``--live-output sqs`` (the operator's default) the run has its queue (created as the
operator creates it): output goes out as a message every 4 s and to S3 once a minute, the heartbeat file
every 60 s; with ``s3``, output goes to S3 every 3 s (``--log-interval`` overrides that) and the
heartbeat every 30 s. The lease is renewed every 120 s either way. Each side talks to moto through its
own counting proxy (airflow_grid_resume/emulator/faultproxy.py), so every request is counted by
operation. Requests in a steady-state window are scaled to an hour; the agent's periodic syncs (every
300 s by default, none in the window) are added at three PUTs each (a pack, the manifest, the pointer:
what agent_bench measures for a re-sync of a few changed files). Prices: S3 Standard list prices (us-east-1):
PUT, COPY, POST and LIST $0.005 per 1,000, GET and HEAD $0.0004 per 1,000, DELETE free; SQS
standard queues $0.40 per million requests (each 64 KiB of a message counts as one; the messages here
are far smaller), past the free tier. ``--spot-price`` is the instance's USD per hour to compare with
(default: 0.21 for a g4dn.xlarge, 40% of its $0.526 on-demand price; spot prices move, pass the current
one).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("AIRFLOW_HOME", str(ROOT / ".bench" / "airflow-home"))
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")

import boto3  # noqa: E402

from airflow_grid_resume.emulator.faultproxy import FaultProxy  # noqa: E402
from airflow_grid_resume.emulator.moto_server import MotoServer  # noqa: E402

PUT_CLASS = 0.005 / 1000
GET_CLASS = 0.0004 / 1000
SQS_REQUEST = 0.40 / 1_000_000
SYNC_INTERVAL, PUTS_PER_SYNC = 300.0, 3


def price(op: str) -> float:
    if op.startswith("ec2:") or op.startswith("Delete"):
        return 0.0
    if op.startswith("sqs:"):
        return SQS_REQUEST
    return GET_CLASS if op in ("GetObject", "HeadObject") else PUT_CLASS


def per_hour(before: dict[str, int], after: dict[str, int], seconds: float) -> dict[str, float]:
    grown = [k for k in after if after[k] > before.get(k, 0)]
    return {k: (after[k] - before.get(k, 0)) * 3600 / seconds for k in grown}


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="grid-cost-"))
    try:
        return measure(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(work: Path) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--lines-per-second", type=float, default=3.0, help="0: a run with no output")
    parser.add_argument("--spot-price", type=float, default=0.21)
    parser.add_argument("--log-interval", type=float, help="the agent's --log-interval (default: its own)")
    parser.add_argument("--live-output", choices=("sqs", "s3"), default="sqs", help="the operator's live_output")
    parser.add_argument("--json")
    args = parser.parse_args()
    with MotoServer() as moto, FaultProxy(moto.endpoint_url) as agent_side, FaultProxy(moto.endpoint_url) as airflow:
        env = {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        os.environ.update(env, AWS_ENDPOINT_URL=moto.endpoint_url)
        bucket = f"cost-{uuid.uuid4().hex[:8]}"
        boto3.client("s3").create_bucket(Bucket=bucket)
        ec2 = boto3.client("ec2")
        image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="g4dn.xlarge")
        instance_id = instance["Instances"][0]["InstanceId"]
        run_uri = f"s3://{bucket}/run"
        os.environ["AWS_ENDPOINT_URL"] = airflow.endpoint_url
        queue_url = None
        if args.live_output == "sqs":
            from airflow_grid_resume.ec2.tags import expiry_tag
            from airflow_grid_resume.hooks.livequeue import LiveQueueHook

            hook = LiveQueueHook(aws_conn_id=None, region_name="us-east-1")
            queue_url = hook.ensure_queue(run_uri, expiry_tag(time.time(), 1))
        seconds = args.minutes * 60
        if args.lines_per_second > 0:
            pause = 1 / args.lines_per_second
            printer = (
                f"import time\nend = time.time() + {seconds!r}\ni = 0\n"
                f"while time.time() < end:\n    print('line', i, flush=True); i += 1; time.sleep({pause!r})\n"
            )
        else:  # a quiet run: no output at all
            printer = f"import time\ntime.sleep({seconds!r})\n"
        agent = subprocess.Popen(
            [
                *(sys.executable, "-m", "airflow_grid_resume.agent", "--run-uri", run_uri),
                *("--workdir", str(work / "w"), "--no-imds", "--quiet"),
                *(("--log-interval", str(args.log_interval)) if args.log_interval else ()),
                *(("--live-queue", queue_url) if queue_url else ()),
                *("--", sys.executable, "-c", printer),
            ],
            env={**os.environ, **env, "AWS_ENDPOINT_URL": agent_side.endpoint_url},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        from airflow_grid_resume.triggers.run import RunWatchTrigger

        trigger = RunWatchTrigger(
            run_uri=run_uri,
            session=1,
            instance_id=instance_id,
            launched_at=time.time(),
            aws_conn_id=None,
            region_name="us-east-1",
            live_queue=queue_url,
        )
        events: list = []

        async def watch() -> None:
            async with contextlib.aclosing(trigger.run()) as stream:
                async for event in stream:
                    events.append(event.payload)
                    return

        thread = threading.Thread(target=lambda: asyncio.run(watch()))
        thread.start()
        warmup = 30.0
        time.sleep(warmup)
        a0, b0 = dict(agent_side.calls), dict(airflow.calls)
        window = max(30.0, seconds - warmup - 10)
        time.sleep(window)
        a1, b1 = dict(agent_side.calls), dict(airflow.calls)
        agent.wait(120)
        thread.join(120)
    agent_rates = per_hour(a0, a1, window)
    agent_rates["PutObject (periodic syncs)"] = 3600 / SYNC_INTERVAL * PUTS_PER_SYNC
    airflow_rates = per_hour(b0, b1, window)
    rows = []
    for side, rates in (("agent", agent_rates), ("Airflow side", airflow_rates)):
        usd = sum(price(op.split(" ")[0]) * n for op, n in rates.items())
        rows.append({"side": side, "per_hour": rates, "usd_per_hour": usd})
    total = sum(r["usd_per_hour"] for r in rows)
    status = events[0].get("status") if events else None
    print(
        f"window {window:.0f} s at {args.lines_per_second} lines/s, live output via {args.live_output}; "
        f"the watch ended: {status}"
    )
    print("\n| side | requests per run-hour | USD per run-hour |\n|---|---|---|")
    for r in rows:
        detail = ", ".join(f"{k} {v:.0f}" for k, v in sorted(r["per_hour"].items()))
        print(f"| {r['side']} | {sum(r['per_hour'].values()):.0f}: {detail} | {r['usd_per_hour']:.5f} |")
    share = total / args.spot_price
    print(f"| both | | {total:.5f} = {share:.1%} of a ${args.spot_price}/h spot instance |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "total_usd_per_hour": total, "share": share}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
