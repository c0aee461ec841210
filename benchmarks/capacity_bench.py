"""200 concurrent capacity waits in one event loop against the local spot cloud in a drought.

    python benchmarks/capacity_bench.py [--waits 200] [--drought 30] [--json FILE]

Capacity is withheld for every pair for ``--drought`` seconds, then released. The emulator
enforces EC2's RunInstances token bucket (burst 5, refill 2 per second) and counts throttled
calls; the triggers share one client-side bucket (burst 4, 1.8 per second). Reported: launch calls
per second, throttled calls (target 0), the loop's CPU use, event-loop lag, and how soon after
capacity returns the first and the last wait launch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("AIRFLOW_HOME", str(ROOT / ".bench" / "airflow-home"))
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")


async def run(args: argparse.Namespace, cloud) -> dict:
    import boto3

    from airflow_grid_resume.ec2.launch import LaunchSpec
    from airflow_grid_resume.triggers.capacity import SpotCapacityTrigger

    subnets = sorted(boto3.client("ec2").describe_subnets()["Subnets"], key=lambda s: s["AvailabilityZone"])[:2]
    spec = LaunchSpec(
        image_id="ami-03cf127a", instance_types=("g5.xlarge",), subnet_ids=tuple(s["SubnetId"] for s in subnets)
    ).as_dict()
    started = time.time()
    triggers = [
        SpotCapacityTrigger(
            run_uri=f"s3://bench/run-{i}",
            session=1,
            spec=spec,
            started_at=started,
            max_wait=3600,
            aws_conn_id=None,
            region_name="us-east-1",
            backoff_base=args.backoff_base,
            backoff_max=args.backoff_max,
        )
        for i in range(args.waits)
    ]
    launched_at: dict[int, float] = {}
    lags: list[float] = []
    stop = asyncio.Event()

    async def one(i: int) -> None:
        async for event in triggers[i].run():
            assert event.payload["status"] == "launched", event.payload
            launched_at[i] = time.time()
            return

    async def ticker() -> None:
        while not stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.1)
            lags.append(time.perf_counter() - before - 0.1)

    tick = asyncio.create_task(ticker())
    tasks = [asyncio.create_task(one(i)) for i in range(args.waits)]
    cpu0, wall0 = time.process_time(), time.time()
    await asyncio.sleep(args.warmup)
    cpu1, wall1 = time.process_time(), time.time()
    calls1 = cloud.state()["counters"]["run_instances"]
    await asyncio.sleep(max(0.0, args.drought - args.warmup))
    cpu2, wall2 = time.process_time(), time.time()
    calls2 = cloud.state()["counters"]["run_instances"]
    released = time.time()
    cloud.set_capacity("*", "*", available=True, market="all")
    await asyncio.gather(*tasks)
    cpu3, wall3 = time.process_time(), time.time()
    stop.set()
    await tick
    state = cloud.state()["counters"]
    after = sorted(t - released for t in launched_at.values())
    return {
        "waits": args.waits,
        "drought_seconds": args.drought,
        "launch_calls_per_second_in_drought": (calls2 - calls1) / (wall2 - wall1),
        "throttled_calls": state["throttled"],
        "run_instances_calls": state["run_instances"],
        "capacity_errors": state["capacity_errors"],
        "cpu_cores_startup": (cpu1 - cpu0) / (wall1 - wall0),
        "cpu_cores_waiting": (cpu2 - cpu1) / (wall2 - wall1),
        "cpu_cores_launching": (cpu3 - cpu2) / (wall3 - wall2),
        "loop_lag_p50_ms": 1000 * statistics.median(lags),
        "loop_lag_p99_ms": 1000 * sorted(lags)[int(len(lags) * 0.99)],
        "loop_lag_max_ms": 1000 * max(lags),
        "first_launch_after_release_s": after[0],
        "last_launch_after_release_s": after[-1],
        "launches": len(after),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--waits", type=int, default=200)
    parser.add_argument("--drought", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds excluded from the steady-state figures")
    parser.add_argument("--backoff-base", type=float, default=2.0)
    parser.add_argument("--backoff-max", type=float, default=20.0)
    parser.add_argument("--json")
    args = parser.parse_args()
    from airflow_grid_resume.emulator.client import LocalSpotCloud

    with LocalSpotCloud() as cloud:
        os.environ.update(cloud.aws_env())
        os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
        cloud.set_fabric(enabled=False)  # 200 instances without processes: this measures the control side
        cloud.set_capacity("*", "*", available=False, market="all")
        result = asyncio.run(run(args, cloud))
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    ok = result["throttled_calls"] == 0 and result["launch_calls_per_second_in_drought"] <= 2.0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
