"""What the bucket-rule options cost: the agent's first sync, and the triggers' fast-path PUT, with no
options (the reference, in the same run) and with each checksum and SSE-KMS, against moto's server on loopback.

    python benchmarks/bucket_rules_bench.py [--mib 128] [--files 1000] [--puts 400] [--rounds 3]

CPU seconds are this process's (every thread: the sync's uploads, botocore's checksum), the best of
``--rounds`` alternating rounds, so a busy machine slows every variant alike. Prints a markdown table
(docs/benchmarks.md, "Buckets with security rules").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from airflow_grid_resume.agent.scan import HashCache  # noqa: E402
from airflow_grid_resume.agent.sync import Syncer  # noqa: E402
from airflow_grid_resume.asyncaws.fastobjects import FastObjects  # noqa: E402
from airflow_grid_resume.emulator.moto_server import MotoServer  # noqa: E402
from airflow_grid_resume.ledger.s3client import make_s3_client  # noqa: E402
from airflow_grid_resume.ledger.store import RunLedger  # noqa: E402
from airflow_grid_resume.ledger.uri import parse_s3_uri  # noqa: E402
from airflow_grid_resume.ledger.writeoptions import S3WriteOptions  # noqa: E402

VARIANTS = {
    "none (reference)": S3WriteOptions(),
    "aws:kms": S3WriteOptions("aws:kms"),
    "aws:kms + CRC32": S3WriteOptions("aws:kms", checksum="CRC32"),
    "aws:kms + SHA256": S3WriteOptions("aws:kms", checksum="SHA256"),
}


def make_workdir(root: Path, mib: int, files: int) -> None:
    rng = random.Random(7)
    root.mkdir(parents=True, exist_ok=True)
    (root / "big.bin").write_bytes(os.urandom(mib * 1024 * 1024))
    for i in range(files):
        folder = root / f"d{i % 20:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:05d}.txt").write_bytes(os.urandom(rng.randint(2048, 18432)))


def first_sync(bucket: str, data: Path, options: S3WriteOptions) -> tuple[float, float]:
    ledger = RunLedger(make_s3_client(), parse_s3_uri(f"s3://{bucket}/sync-{uuid.uuid4().hex[:8]}"), options)
    wall, cpu = time.perf_counter(), time.process_time()
    assert Syncer(ledger, str(data), session=1, cache=HashCache()).sync("final").committed
    return time.perf_counter() - wall, time.process_time() - cpu


def fast_puts(bucket: str, puts: int, options: S3WriteOptions) -> float:
    """CPU milliseconds per fast-path PUT of a watch.json-sized body."""
    from airflow_grid_resume.asyncaws.clients import SharedS3Hook, shared_client

    body = b'{"format":"grid-resume-watch/1","log_offset":123456789,"at":1765000000.123,"instance_id":"i-0"}' * 3

    async def go() -> float:
        async with shared_client(SharedS3Hook(aws_conn_id=None), ("s3", None, os.environ["AWS_ENDPOINT_URL"])) as c:
            objects = FastObjects(c, options)
            await objects.put(bucket, "warm/watch.json", body)
            cpu = time.process_time()
            for i in range(puts):
                await objects.put(bucket, f"run/{i % 10}/watch.json", body)
            assert not objects._slow, "a PUT left the fast path"
            return (time.process_time() - cpu) / puts * 1000

    return asyncio.run(go())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=128, help="size of the one big file")
    parser.add_argument("--files", type=int, default=1000, help="small files (2-18 KB)")
    parser.add_argument("--puts", type=int, default=400, help="fast-path PUTs per variant")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with MotoServer() as moto, tempfile.TemporaryDirectory(prefix="grid-bucket-bench-") as tmp:
        os.environ.update(
            AWS_ENDPOINT_URL=moto.endpoint_url,
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_EC2_METADATA_DISABLED="true",
        )
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        boto3.client("s3").create_bucket(Bucket=bucket)
        data = Path(tmp) / "work"
        make_workdir(data, args.mib, args.files)
        syncs: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
        puts: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for _ in range(args.rounds):
            for name, options in VARIANTS.items():
                syncs[name].append(first_sync(bucket, data, options))
                puts[name].append(fast_puts(bucket, args.puts, options))
    ref_wall = min(w for w, _ in syncs["none (reference)"])
    ref_cpu = min(c for _, c in syncs["none (reference)"])
    ref_put = min(puts["none (reference)"])
    print(f"first sync of {args.mib} MiB in one file + {args.files} files of 2-18 KB; {args.puts} fast-path PUTs")
    print("| options | first sync wall s (x ref) | first sync CPU s (x ref) | fast-path PUT CPU ms (x ref) |")
    print("|---|---|---|---|")
    for name in VARIANTS:
        wall = min(w for w, _ in syncs[name])
        cpu = min(c for _, c in syncs[name])
        put = min(puts[name])
        print(
            f"| {name} | {wall:.2f} ({wall / ref_wall:.2f}) | {cpu:.2f} ({cpu / ref_cpu:.2f}) "
            f"| {put:.3f} ({put / ref_put:.2f}) |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
