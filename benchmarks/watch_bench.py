"""Concurrent run watches in one triggerer process (or ``--triggerers N`` sharing them), against ledgers a load
generator keeps writing.

    python benchmarks/watch_bench.py [--runs 500] [--seconds 120 | --minutes 2] [--triggerers 1] [--json FILE]
    python benchmarks/watch_bench.py --runs 1000 --minutes 2                  # Airflow's default [triggerer] capacity
    python benchmarks/watch_bench.py --runs 2000 --minutes 2 --triggerers 2   # two triggerers, 1000 watches each

Three processes besides the local spot cloud (which also holds ``--runs`` real EC2 instances, so
the batched DescribeInstances has something to describe; its fabric is off, no instance runs):

- the load generator writes, for every run, what the agent writes, with the agent's own code
  (``RunLedger``, ``LogSpool``, ``LogShipper``): ``session.json`` once, ``heartbeat.json`` every
  30 s (the agent's default), a log chunk every ``--log-interval`` (the agent's default, 3 s, on a
  fixed grid as the agent ships) while there is output.
  Each run prints ``--lines-per-second`` lines, each carrying the time it was printed. 500 real
  agents do not fit on a 2-core machine; the generator sends its PUTs over plain keep-alive HTTP
  (moto does not check signatures) so that signing 600 requests per second does not eat the core
  the triggerer is measured on.
- the triggerer runs the ``RunWatchTrigger.run()`` generators on ONE asyncio event loop, as
  Airflow's triggerer does, at the operator's defaults (poll 2 s, instance check 30 s). Their task
  log lines (structlog, as in Airflow) go to a capture stream that notes when each line arrives.
- this process starts everything, notes the machine's load, then stops the generator: every run
  writes its outcome, every watch must end ``succeeded`` having logged each line exactly once.

Reported over the steady-state window (after ``--ramp`` + ``--warmup``): the triggerer's CPU in
cores, event-loop lag (a 50 ms ticker's overshoot), S3 and EC2 calls per run per minute by
operation, DescribeInstances calls against runs, and log latency (print -> line in the task log).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import heapq
import http.client
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("AIRFLOW_HOME", str(ROOT / ".bench" / "airflow-home"))
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")

BUCKET = "watch-bench"
LINE = re.compile(r"wbench r=(\d+) s=(\d+) t=([0-9.]+)")
GOAL_CORES, GOAL_LAG_MS = 0.5, 100.0
HEARTBEAT_INTERVAL = 30.0  # the agent's default


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- a fast S3 for the ledgers -------------------------------------------------------------------
class LedgerS3:
    """The S3 subset a run ledger uses (PUT with If-None-Match/If-Match, GET with Range, HEAD,
    ListObjectsV2 with StartAfter and pages of 1000), in memory, on aiohttp.

    moto's server cannot carry 500 ledgers on 2 cores: measured, it saturated at about 110 trigger
    calls per second while the load generator fell a minute behind (docs/benchmarks.md).
    """

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], tuple[bytes, str, str]] = {}  # (bucket, key) -> body, etag, mtime
        self.keys: dict[str, list[str]] = {}  # bucket -> sorted keys
        self.requests = 0
        self.queues: dict[str, list[str]] = {}  # SQS: queue name -> bodies not received yet
        self.arrived: dict[str, asyncio.Event] = {}

    async def sqs(self, request: Any, op: str) -> Any:
        """The SQS subset live output uses (CreateQueue, SendMessage, ReceiveMessage with a long poll), in
        memory: a received message is never delivered again (the queue's visibility outlasts its retention)."""
        import hashlib
        import uuid

        from aiohttp import web

        doc = json.loads(await request.read() or b"{}")
        if op == "CreateQueue":
            name = doc["QueueName"]
            self.queues.setdefault(name, [])
            self.arrived.setdefault(name, asyncio.Event())
            return web.json_response({"QueueUrl": f"http://{request.host}/123456789012/{name}"})
        name = str(doc.get("QueueUrl", "")).rsplit("/", 1)[-1]
        if name not in self.queues:
            return web.json_response({"__type": "com.amazonaws.sqs#QueueDoesNotExist"}, status=400)
        if op == "SendMessage":
            self.queues[name].append(doc["MessageBody"])
            self.arrived[name].set()
            return web.json_response({"MessageId": uuid.uuid4().hex, "MD5OfMessageBody": ""})
        if op == "ReceiveMessage":
            if not self.queues[name]:
                self.arrived[name].clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.arrived[name].wait(), int(doc.get("WaitTimeSeconds", 0)))
            taken = self.queues[name][: int(doc.get("MaxNumberOfMessages", 1))]
            del self.queues[name][: len(taken)]
            messages = [
                {"MessageId": uuid.uuid4().hex, "ReceiptHandle": "r", "MD5OfBody": hashlib.md5(b.encode()).hexdigest(),
                 "Body": b}
                for b in taken
            ]  # fmt: skip
            return web.json_response({"Messages": messages} if messages else {})
        return web.json_response({"__type": "com.amazonaws.sqs#InvalidAction"}, status=400)

    @staticmethod
    def _error(status: int, code: str) -> Any:
        from aiohttp import web

        body = f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{code}</Message></Error>'
        return web.Response(status=status, body=body.encode(), content_type="application/xml")

    async def handle(self, request: Any) -> Any:
        import bisect
        import hashlib
        from email.utils import formatdate
        from xml.sax.saxutils import escape

        from aiohttp import web

        self.requests += 1
        target = request.headers.get("X-Amz-Target", "")
        if target.startswith("AmazonSQS."):
            return await self.sqs(request, target.split(".", 1)[1])
        bucket, _, key = request.path[1:].partition("/")
        key = urllib.parse.unquote(key)
        if request.method == "PUT" and not key:
            self.keys.setdefault(bucket, [])
            return web.Response(status=200)
        if bucket not in self.keys:
            return self._error(404, "NoSuchBucket")
        if request.method == "PUT":
            body = await request.read()
            current = self.objects.get((bucket, key))
            if request.headers.get("If-None-Match") == "*" and current is not None:
                return self._error(412, "PreconditionFailed")
            if_match = request.headers.get("If-Match")
            if if_match is not None and (current is None or current[1] != if_match):
                return self._error(412 if current else 404, "PreconditionFailed" if current else "NoSuchKey")
            etag = '"' + hashlib.md5(body).hexdigest() + '"'
            if current is None:
                bisect.insort(self.keys[bucket], key)
            self.objects[(bucket, key)] = (body, etag, formatdate(usegmt=True))
            return web.Response(status=200, headers={"ETag": etag})
        if not key:  # ListObjectsV2
            q = request.query
            prefix = q.get("prefix", "")
            after = q.get("continuation-token") or q.get("start-after") or ""
            keys = self.keys[bucket]
            i = bisect.bisect_right(keys, after) if after else bisect.bisect_left(keys, prefix)
            page = []
            while i < len(keys) and keys[i].startswith(prefix) and len(page) < 1000:
                page.append(keys[i])
                i += 1
            truncated = len(page) == 1000 and i < len(keys) and keys[i].startswith(prefix)
            parts = [
                '<?xml version="1.0" encoding="UTF-8"?>',
                '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
                f"<Name>{bucket}</Name><Prefix>{escape(prefix)}</Prefix><KeyCount>{len(page)}</KeyCount>",
                f"<MaxKeys>1000</MaxKeys><IsTruncated>{'true' if truncated else 'false'}</IsTruncated>",
            ]
            for k in page:
                body, etag, _ = self.objects[(bucket, k)]
                parts.append(
                    f"<Contents><Key>{escape(k)}</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified>"
                    f"<ETag>{escape(etag)}</ETag><Size>{len(body)}</Size><StorageClass>STANDARD</StorageClass></Contents>"
                )
            if truncated:
                parts.append(f"<NextContinuationToken>{escape(page[-1])}</NextContinuationToken>")
            parts.append("</ListBucketResult>")
            return web.Response(status=200, body="".join(parts).encode(), content_type="application/xml")
        found = self.objects.get((bucket, key))
        if found is None:
            return self._error(404, "NoSuchKey")
        body, etag, mtime = found
        headers = {"ETag": etag, "Last-Modified": mtime}
        status = 200
        byte_range = request.headers.get("Range")
        if byte_range:
            start = int(byte_range.split("=", 1)[1].split("-", 1)[0])
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
            body, status = body[start:], 206
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(body))
            return web.Response(status=status, headers=headers)
        return web.Response(status=status, body=body, headers=headers, content_type="binary/octet-stream")


def serve_s3(args: argparse.Namespace) -> int:
    from aiohttp import web

    store = LedgerS3()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", store.handle)

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(json.dumps({"endpoint_url": f"http://127.0.0.1:{port}"}), flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())
    return 0


# -- load generator ------------------------------------------------------------------------------
class LoopbackS3:
    """The two S3 calls ``RunLedger`` makes while writing (put_object, get_object), over keep-alive HTTP.

    Unsigned requests with a credential scope that tells moto the service: enough for moto, and
    an order of magnitude cheaper in CPU than botocore's signing and parsing.
    """

    def __init__(self, endpoint_url: str) -> None:
        self.host = endpoint_url.split("://", 1)[1]
        self.local = threading.local()
        self.auth = (
            "AWS4-HMAC-SHA256 Credential=emulated/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0"
        )

    def _request(self, method: str, path: str, body: bytes | None, headers: dict) -> tuple[int, dict, bytes]:
        for attempt in range(5):
            conn = getattr(self.local, "conn", None) or http.client.HTTPConnection(self.host, timeout=60)
            self.local.conn = conn
            try:
                conn.request(method, path, body=body, headers={"Authorization": self.auth, **headers})
                resp = conn.getresponse()
                data = resp.read()
                if resp.status in (500, 503) and attempt < 4:
                    time.sleep(0.1 * (attempt + 1))
                    continue
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
            except (OSError, http.client.HTTPException):
                conn.close()
                self.local.conn = None
                if attempt == 4:
                    raise
                time.sleep(0.1 * (attempt + 1))
        raise RuntimeError("unreachable")

    def _error(self, status: int, op: str, data: bytes) -> Exception:
        from botocore.exceptions import ClientError

        code = re.search(rb"<Code>([^<]+)</Code>", data)
        error = {"Code": code.group(1).decode() if code else str(status)}
        return ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": status}}, op)

    def put_object(
        self, *, Bucket: str, Key: str, Body: bytes, IfNoneMatch: str | None = None, IfMatch: str | None = None
    ) -> dict:
        headers = {"Content-Length": str(len(Body))}
        if IfNoneMatch:
            headers["If-None-Match"] = IfNoneMatch
        if IfMatch:
            headers["If-Match"] = IfMatch
        status, got, data = self._request("PUT", f"/{Bucket}/{Key}", Body, headers)
        if status != 200:
            raise self._error(status, "PutObject", data)
        return {"ETag": got.get("etag", "")}

    def get_object(self, *, Bucket: str, Key: str, Range: str | None = None) -> dict:
        import io

        status, got, data = self._request("GET", f"/{Bucket}/{Key}", None, {"Range": Range} if Range else {})
        if status not in (200, 206):
            raise self._error(status, "GetObject", data)
        return {"Body": io.BytesIO(data), "ETag": got.get("etag", "")}


class LoopbackSQS:
    """The one SQS call the agent makes (send_message), over keep-alive HTTP, unsigned as ``LoopbackS3``."""

    def __init__(self, s3: LoopbackS3) -> None:
        self.s3 = s3

    def send_message(self, *, QueueUrl: str, MessageBody: str) -> dict:
        body = json.dumps({"QueueUrl": QueueUrl, "MessageBody": MessageBody}).encode()
        headers = {"X-Amz-Target": "AmazonSQS.SendMessage", "Content-Type": "application/x-amz-json-1.0"}
        status, _, data = self.s3._request("POST", "/", body, headers)
        if status != 200:
            raise self.s3._error(status, "SendMessage", data)
        return json.loads(data)


class FakeAgent:
    """One run's agent as the ledger sees it: session record, heartbeats, output shipped on the agent's grid."""

    def __init__(
        self, index: int, run: dict, client: LoopbackS3, spool_dir: str, lines_per_second: float, log_interval: float
    ) -> None:
        from airflow_grid_resume.agent.logship import DEFAULT_DURABLE_INTERVAL, LogShipper, LogSpool
        from airflow_grid_resume.ledger.store import RunLedger
        from airflow_grid_resume.ledger.uri import parse_s3_uri

        self.index = index
        self.log_interval = log_interval
        self.run = run
        self.ledger = RunLedger(client, parse_s3_uri(run["run_uri"]))
        self.spool = LogSpool(os.path.join(spool_dir, f"{index:04d}.log"))
        self.shipper = LogShipper(self.ledger, 1, self.spool, interval=1.0)  # flushed by the scheduler below
        self.live = None
        if run.get("live_queue"):
            from airflow_grid_resume.agent.livesend import LiveSender

            self.live = LiveSender(LoopbackSQS(client), run["live_queue"], 1, self.spool)
            self.log_interval = DEFAULT_DURABLE_INTERVAL  # what lands in S3, as the heartbeat tells the watch
        self.durable_at = time.monotonic()
        self.durable_interval = DEFAULT_DURABLE_INTERVAL
        self.messages = 0
        self.period = 1.0 / lines_per_second if lines_per_second > 0 else 0.0
        self.next_line = time.time() + random.random() * (self.period or 1.0)
        self.lines = 0
        self.beats = 0
        self.chunks = 0

    def start(self) -> None:
        from airflow_grid_resume import __version__
        from airflow_grid_resume.ledger.records import SessionStart

        record = SessionStart(
            session=1,
            agent_id=f"bench-{self.index:04d}",
            host="bench",
            pid=os.getpid(),
            instance_id=self.run["instance_id"],
            started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            command=["python", "train.py"],
            agent_version=__version__,
        )
        self.ledger.write_record(record, 1)
        self.heartbeat()

    def heartbeat(self, state: str = "running") -> None:
        from airflow_grid_resume.ledger.records import Heartbeat

        self.beats += 1
        now = time.time()
        beat = Heartbeat(
            session=1,
            seq=self.beats,
            time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            epoch=now,
            state=state,
            log_bytes=self.spool.size,
            interval=HEARTBEAT_INTERVAL,
            log_interval=self.log_interval,
        )
        self.ledger.write_record(beat, 1)

    def print_due(self, now: float) -> None:
        """The lines the training printed since the last tick, each stamped with when it was printed."""
        if not self.period:
            return
        out = []
        while self.next_line <= now:
            self.lines += 1
            out.append(f"wbench r={self.index} s={self.lines} t={self.next_line:.6f} epoch=3 step=1234 loss=0.4321\n")
            self.next_line += self.period * random.uniform(0.5, 1.5)
        if out:
            self.spool.append("".join(out).encode())

    def ship(self) -> None:
        if self.live is not None:
            self.messages += self.live.ship()
            if time.monotonic() - self.durable_at < self.durable_interval:
                return
            self.durable_at = time.monotonic()
        before = self.shipper.shipped
        self.shipper.flush()
        self.chunks += self.shipper.shipped != before

    def finish(self) -> None:
        self.print_due(time.time())
        self.durable_at = -self.durable_interval  # the last output goes to S3 before the outcome
        self.ship()
        from airflow_grid_resume.ledger.records import Outcome

        outcome = Outcome(session=1, status="succeeded", exit_code=0, clean=True, reason="exit 0", agent_exit_code=0)
        self.ledger.write_record(outcome, 1)
        self.heartbeat("ended")
        if self.live is not None:
            self.live.beat(final=True)
        self.spool.close()


def loadgen(args: argparse.Namespace) -> int:
    plan = json.loads(Path(args.plan).read_text())
    client = LoopbackS3(plan["endpoint_url"])
    spool_dir = tempfile.mkdtemp(prefix="spool-", dir=Path(args.plan).parent)  # removed with the work dir
    agents = [
        FakeAgent(i, run, client, spool_dir, args.lines_per_second, args.log_interval)
        for i, run in enumerate(plan["runs"])
    ]
    from airflow_grid_resume.agent.logship import DEFAULT_LIVE_INTERVAL
    from airflow_grid_resume.agent.supervisor import LIVE_STATUS_BEATS

    live = any(a.live is not None for a in agents)
    tick = DEFAULT_LIVE_INTERVAL if live else args.log_interval  # the agent's shipping grid
    beat_every = HEARTBEAT_INTERVAL * (LIVE_STATUS_BEATS if live else 1)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    late: list[float] = []
    threads = max(1, args.loadgen_threads)

    def worker(mine: list[FakeAgent]) -> None:
        for agent in mine:
            agent.start()
        now = time.time()
        events = []  # (due, kind, index): log ticks every 1 s, heartbeats every 10 s, phases spread
        for n in range(len(mine)):
            events.append((now + random.random() * tick, 0, n))
            events.append((now + random.random() * 10, 1, n))
        heapq.heapify(events)
        while not stop.is_set():
            due, kind, n = heapq.heappop(events)
            wait = due - time.time()
            if wait > 0 and stop.wait(wait):
                break
            late.append(max(0.0, time.time() - due))
            agent = mine[n]
            if kind == 0:
                agent.print_due(time.time())
                agent.ship()
                heapq.heappush(events, (due + tick, 0, n))
            else:
                agent.heartbeat()
                heapq.heappush(events, (due + beat_every, 1, n))

    workers = [threading.Thread(target=worker, args=(agents[w::threads],), daemon=True) for w in range(threads)]
    for t in workers:
        t.start()
    print("loadgen-ready", flush=True)
    for t in workers:
        t.join()
    for agent in agents:
        agent.finish()
    stats = {
        "lines": {str(a.index): a.lines for a in agents},
        "chunks": sum(a.chunks for a in agents),
        "messages": sum(a.messages for a in agents),
        "heartbeats": sum(a.beats for a in agents),
        "schedule_late_p50_s": pct(late, 0.5),
        "schedule_late_p99_s": pct(late, 0.99),
    }
    Path(args.out).write_text(json.dumps(stats))
    return 0


# -- the triggerer -------------------------------------------------------------------------------
class TaskLogCapture:
    """Where the triggers' structlog lines go: notes when each benchmark line arrives."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.seen: dict[int, list[int]] = {}
        self.other = 0

    def write(self, text: str) -> int:
        now = time.time()
        for m in LINE.finditer(text):
            run, seq, printed = int(m.group(1)), int(m.group(2)), float(m.group(3))
            self.latencies.append(now - printed)
            self.seen.setdefault(run, []).append(seq)
        if "wbench" not in text:
            self.other += 1
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def triggerer(args: argparse.Namespace) -> int:
    capture = TaskLogCapture()
    control = os.fdopen(os.dup(1), "w", buffering=1)
    sys.stdout = capture  # before Airflow configures structlog: the triggers' task log lands here
    plan = json.loads(Path(args.plan).read_text())
    if args.shard:  # "K/N": this process watches every Nth run from the Kth, as Airflow spreads triggers
        k, n = (int(x) for x in args.shard.split("/"))
        plan["runs"] = plan["runs"][k::n]
    os.environ.update(plan["aws_env"])
    result = asyncio.run(watch_all(args, plan, capture, control))
    Path(args.out).write_text(json.dumps(result))
    return 0


async def watch_all(args: argparse.Namespace, plan: dict, capture: TaskLogCapture, control: Any) -> dict:
    from aiobotocore.client import AioBaseClient

    from airflow_grid_resume.asyncaws.describe import describe_batcher
    from airflow_grid_resume.asyncaws.fastobjects import FastObjects
    from airflow_grid_resume.triggers.run import RunWatchTrigger

    calls: dict[str, int] = {}
    original = AioBaseClient._make_api_call

    async def counted(self: Any, operation_name: str, api_params: dict) -> Any:
        name = f"{self.meta.service_model.service_name}.{operation_name}"
        calls[name] = calls.get(name, 0) + 1
        return await original(self, operation_name, api_params)

    AioBaseClient._make_api_call = counted  # type: ignore[method-assign]
    fast_get = FastObjects._fast

    async def counted_fast(self: Any, bucket: str, key: str, byte_range: str | None) -> Any:  # the watch's GETs
        calls["s3.GetObject"] = calls.get("s3.GetObject", 0) + 1
        return await fast_get(self, bucket, key, byte_range)

    FastObjects._fast = counted_fast  # type: ignore[method-assign]
    fast_put = FastObjects._fast_put

    async def counted_fast_put(self: Any, bucket: str, key: str, body: bytes) -> Any:  # watch.json
        calls["s3.PutObject"] = calls.get("s3.PutObject", 0) + 1
        return await fast_put(self, bucket, key, body)

    FastObjects._fast_put = counted_fast_put  # type: ignore[method-assign]
    from airflow_grid_resume.asyncaws.queuereader import LiveQueueReader

    fast_receive = LiveQueueReader._fast

    async def counted_receive(self: Any, seconds: int) -> Any:  # the live-output queue's long polls
        calls["sqs.ReceiveMessage"] = calls.get("sqs.ReceiveMessage", 0) + 1
        return await fast_receive(self, seconds)

    LiveQueueReader._fast = counted_receive  # type: ignore[method-assign]
    runs = plan["runs"]
    events: dict[int, dict] = {}
    lags: list[float] = []
    stop = asyncio.Event()

    async def one(i: int) -> None:
        await asyncio.sleep(args.ramp * i / len(runs))  # watches arrive over the ramp, not all in one tick
        trigger = RunWatchTrigger(
            run_uri=runs[i]["run_uri"],
            session=1,
            instance_id=runs[i]["instance_id"],
            launched_at=plan["launched_at"],
            aws_conn_id=None,
            region_name="us-east-1",
            poll_interval=args.poll_interval,
            instance_check_interval=args.instance_check_interval,
            live_queue=runs[i].get("live_queue"),
        )
        async for event in trigger.run():
            events[i] = event.payload
            return

    async def ticker() -> None:
        while not stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.05)
            lags.append(time.perf_counter() - before - 0.05)

    gc_pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    gc_started = [0.0]

    def on_gc(phase: str, info: dict) -> None:  # collections stop the loop: how long, how often
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            gc_pauses[info["generation"]].append(time.perf_counter() - gc_started[0])

    gc.callbacks.append(on_gc)
    tick = asyncio.create_task(ticker())
    tasks = [asyncio.create_task(one(i)) for i in range(len(runs))]
    await asyncio.sleep(args.ramp)
    if args.gc_freeze:
        gc.freeze()  # what a triggerer could do once started: long-lived objects leave the collector's scans
    await asyncio.sleep(args.warmup)
    batcher = describe_batcher(None, "us-east-1")
    lags.clear()
    for pauses in gc_pauses.values():
        pauses.clear()
    n_lat = len(capture.latencies)
    calls0, describes0 = dict(calls), batcher.calls
    cpu0, wall0 = time.process_time(), time.time()
    control.write(json.dumps({"window": "start", "at": wall0}) + "\n")
    await asyncio.sleep(args.seconds)
    cpu1, wall1 = time.process_time(), time.time()
    calls1, describes1 = dict(calls), batcher.calls
    window_lags = list(lags)
    window_gc = {g: list(p) for g, p in gc_pauses.items()}
    window_latencies = capture.latencies[n_lat:]
    control.write(json.dumps({"window": "done", "at": wall1}) + "\n")
    _, pending = await asyncio.wait(tasks, timeout=args.finish_timeout)
    for task in pending:
        task.cancel()
    stop.set()
    await tick
    minutes = (wall1 - wall0) / 60
    per_op = {k: (calls1.get(k, 0) - calls0.get(k, 0)) / len(runs) / minutes for k in sorted(calls1)}
    duplicates = sum(len(v) - len(set(v)) for v in capture.seen.values())
    return {
        "runs": len(runs),
        "window_seconds": wall1 - wall0,
        "cpu_cores": (cpu1 - cpu0) / (wall1 - wall0),
        "loop_lag_p50_ms": 1000 * pct(window_lags, 0.5),
        "loop_lag_p99_ms": 1000 * pct(window_lags, 0.99),
        "loop_lag_max_ms": 1000 * max(window_lags, default=float("nan")),
        "calls_per_run_per_minute": per_op,
        "s3_calls_per_run_per_minute": sum(v for k, v in per_op.items() if k.startswith("s3.")),
        "ec2_calls_per_run_per_minute": sum(v for k, v in per_op.items() if k.startswith("ec2.")),
        "api_calls_per_second": sum(calls1.get(k, 0) - calls0.get(k, 0) for k in calls1) / (wall1 - wall0),
        "describe_instances_calls_in_window": describes1 - describes0,
        "describe_instances_calls_unbatched_would_be": len(runs) * (wall1 - wall0) / args.instance_check_interval,
        "gc_full_collections": len(window_gc[2]),
        "gc_full_pause_max_ms": 1000 * max(window_gc[2], default=0.0),
        "gc_young_pause_max_ms": 1000 * max(window_gc[0] + window_gc[1], default=0.0),
        "gc_pause_total_ms": 1000 * sum(sum(p) for p in window_gc.values()),
        "log_latency_p50_s": statistics.median(window_latencies) if window_latencies else float("nan"),
        "log_latency_p99_s": pct(window_latencies, 0.99),
        "log_latency_max_s": max(window_latencies, default=float("nan")),
        "log_lines_in_window": len(window_latencies),
        "events": {str(i): e["status"] for i, e in events.items()},
        "unfinished_watches": len(pending),
        "lines_logged": {str(r): len(v) for r, v in capture.seen.items()},
        "duplicate_lines": duplicates,
        "gaps": sum(1 for v in capture.seen.values() if sorted(set(v)) != list(range(1, max(v) + 1))),
        "calls_total": calls1,
    }


# -- the conductor -------------------------------------------------------------------------------
def launch_instances(n: int) -> list[str]:
    import boto3

    ec2 = boto3.client("ec2")
    subnet = sorted(ec2.describe_subnets()["Subnets"], key=lambda s: s["AvailabilityZone"])[0]["SubnetId"]
    ids: list[str] = []
    while len(ids) < n:
        count = min(100, n - len(ids))
        reservation = ec2.run_instances(
            ImageId="ami-03cf127a",
            InstanceType="g5.xlarge",
            MinCount=count,
            MaxCount=count,
            SubnetId=subnet,
            InstanceMarketOptions={"MarketType": "spot"},
        )
        ids += [i["InstanceId"] for i in reservation["Instances"]]
    return ids


def conduct(args: argparse.Namespace) -> dict:
    from airflow_grid_resume.emulator.client import LocalSpotCloud

    work = Path(tempfile.mkdtemp(prefix="watch-bench-"))
    me = [sys.executable, str(Path(__file__).resolve())]
    common = ["--plan", str(work / "plan.json")]
    s3 = None
    if args.s3 == "fast":
        s3 = subprocess.Popen([*me, "--role", "s3"], stdout=subprocess.PIPE, text=True)
        assert s3.stdout is not None
        s3_endpoint = json.loads(s3.stdout.readline())["endpoint_url"]
    try:
        with LocalSpotCloud() as cloud:
            aws_env = {**cloud.aws_env(), "AWS_EC2_METADATA_DISABLED": "true"}
            if s3 is not None:
                aws_env["AWS_ENDPOINT_URL_S3"] = s3_endpoint  # EC2 stays on the local spot cloud
            os.environ.update(aws_env)
            return measure(args, cloud, aws_env, s3_endpoint if s3 else cloud.endpoint_url, s3, work, me, common)
    finally:
        if s3 is not None:
            s3.terminate()
            s3.wait(30)
        shutil.rmtree(work, ignore_errors=True)


def merge_triggerers(results: list[dict]) -> dict:
    """One result for several triggerer processes: the worst triggerer's CPU, lag and latency against the goals
    (each must meet them), totals for calls and lines, and each triggerer's own figures."""
    if len(results) == 1:
        return results[0]
    worst = ("cpu_cores", "loop_lag_p50_ms", "loop_lag_p99_ms", "loop_lag_max_ms", "gc_full_pause_max_ms",
             "gc_young_pause_max_ms", "log_latency_p50_s", "log_latency_p99_s", "log_latency_max_s")  # fmt: skip
    summed = ("runs", "describe_instances_calls_in_window", "describe_instances_calls_unbatched_would_be",
              "gc_full_collections", "log_lines_in_window", "unfinished_watches", "duplicate_lines", "gaps",
              "api_calls_per_second")  # fmt: skip
    merged: dict[str, Any] = {k: max(r[k] for r in results) for k in worst}
    merged.update({k: sum(r[k] for r in results) for k in summed})
    merged["cpu_cores_total"] = sum(r["cpu_cores"] for r in results)
    merged["window_seconds"] = min(r["window_seconds"] for r in results)
    runs = merged["runs"]
    per_op: dict[str, float] = {}
    for r in results:  # per run per minute: weighted by each triggerer's share of the runs
        for op, rate in r["calls_per_run_per_minute"].items():
            per_op[op] = per_op.get(op, 0.0) + rate * r["runs"] / runs
    merged["calls_per_run_per_minute"] = per_op
    merged["s3_calls_per_run_per_minute"] = sum(v for k, v in per_op.items() if k.startswith("s3."))
    merged["ec2_calls_per_run_per_minute"] = sum(v for k, v in per_op.items() if k.startswith("ec2."))
    merged["events"] = {f"{k}:{i}": e for k, r in enumerate(results) for i, e in r["events"].items()}
    merged["lines_logged"] = {run: n for r in results for run, n in r["lines_logged"].items()}
    merged["per_triggerer"] = [
        {k: v for k, v in r.items() if k not in ("events", "lines_logged", "calls_total")} for r in results
    ]
    return merged


def measure(
    args: argparse.Namespace, cloud: Any, aws_env: dict, s3_endpoint: str, s3: Any, work: Path, me: list, common: list
) -> dict:
    """Instances, load generator, triggerer; the machine's load over the triggerer's window."""
    import boto3

    cloud.set_fabric(enabled=False)  # real EC2 instances, no processes: the load generator plays the agents
    cloud.set_throttle(enabled=False)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    ids = launch_instances(args.runs)
    runs = [
        {"run_uri": f"s3://{BUCKET}/grid-runs/bench/run-{i:04d}", "instance_id": i_id} for i, i_id in enumerate(ids)
    ]
    if args.live_output == "sqs":  # a queue per run, as the operator creates them
        if s3 is None:
            raise SystemExit("--live-output sqs needs --s3 fast (its server carries the queues)")
        from airflow_grid_resume.ledger.live import queue_name

        sqs = LoopbackSQS(LoopbackS3(s3_endpoint))
        for run in runs:
            body = json.dumps({"QueueName": queue_name(run["run_uri"])}).encode()
            headers = {"X-Amz-Target": "AmazonSQS.CreateQueue", "Content-Type": "application/x-amz-json-1.0"}
            run["live_queue"] = json.loads(sqs.s3._request("POST", "/", body, headers)[2])["QueueUrl"]
        aws_env = {**aws_env, "AWS_ENDPOINT_URL_SQS": s3_endpoint}
    plan = {"endpoint_url": s3_endpoint, "aws_env": aws_env, "runs": runs}
    plan["launched_at"] = time.time()
    (work / "plan.json").write_text(json.dumps(plan))
    load_start = loadavg()
    gen = subprocess.Popen(
        [*me, "--role", "loadgen", *common, "--out", str(work / "loadgen.json"),
              "--lines-per-second", str(args.lines_per_second), "--loadgen-threads", str(args.loadgen_threads)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert gen.stdout is not None
    if gen.stdout.readline().strip() != "loadgen-ready":
        raise RuntimeError("the load generator did not start")
    trigs = [
        subprocess.Popen(
            [*me, "--role", "triggerer", *common, "--out", str(work / f"triggerer-{k}.json"),
                  "--shard", f"{k}/{args.triggerers}",
                  "--seconds", str(args.seconds), "--ramp", str(args.ramp), "--warmup", str(args.warmup),
                  "--poll-interval", str(args.poll_interval),
                  "--instance-check-interval", str(args.instance_check_interval),
                  "--finish-timeout", str(args.finish_timeout), *(["--gc-freeze"] if args.gc_freeze else []),
                  *(["--profile", f"{args.profile}.{k}"] if args.profile else [])],
            stdout=subprocess.PIPE, text=True,
        )
        for k in range(args.triggerers)
    ]  # fmt: skip
    others = {"emulator": cloud.info["pid"], "loadgen": gen.pid, **({"fast_s3": s3.pid} if s3 else {})}
    marks = {}
    # Each triggerer reports its window's start, then its end: the others are measured from the last start to
    # the first end, when every triggerer is in its window.
    for trig in trigs:
        assert trig.stdout is not None
        if json.loads(trig.stdout.readline()).get("window") != "start":
            raise RuntimeError("a triggerer did not report its window")
    marks["start"] = ({k: proc_cpu(p) for k, p in others.items()}, machine_busy(), time.time())
    for index, trig in enumerate(trigs):
        assert trig.stdout is not None
        if json.loads(trig.stdout.readline()).get("window") != "done":
            raise RuntimeError("a triggerer did not end its window")
        if index == 0:
            marks["done"] = ({k: proc_cpu(p) for k, p in others.items()}, machine_busy(), time.time())
            load_window = loadavg()
    gen.send_signal(signal.SIGTERM)  # every run ends: outcome written, the watches must end
    gen.wait(timeout=300)
    for trig in trigs:
        trig.wait(timeout=args.finish_timeout + 60)
    if any(t.returncode for t in trigs) or gen.returncode:
        raise RuntimeError(f"triggerer exits {[t.returncode for t in trigs]}, load generator exit {gen.returncode}")
    result = merge_triggerers([json.loads((work / f"triggerer-{k}.json").read_text()) for k in range(len(trigs))])
    generated = json.loads((work / "loadgen.json").read_text())
    (cpu_a, busy_a, t_a), (cpu_b, busy_b, t_b) = marks["start"], marks["done"]
    missing = sum(1 for r, n in generated["lines"].items() if n and result["lines_logged"].get(r, 0) != n)
    statuses: dict[str, int] = {}
    for status in result.pop("events").values():
        statuses[status] = statuses.get(status, 0) + 1
    result.pop("lines_logged")
    result.update(
        {
            "s3_server": args.s3,
            "triggerers": args.triggerers,
            "gc_freeze": args.gc_freeze,
            "poll_interval": args.poll_interval,
            "instance_check_interval": args.instance_check_interval,
            "lines_per_second_per_run": args.lines_per_second,
            "log_interval": args.log_interval,
            "watch_events": statuses,
            "runs_with_lines_missing": missing,
            "lines_generated": sum(generated["lines"].values()),
            "log_chunks_written": generated["chunks"],
            "loadgen_schedule_late_p99_s": generated["schedule_late_p99_s"],
            "other_processes_cores": {k: (cpu_b[k] - cpu_a[k]) / (t_b - t_a) for k in cpu_a},
            "machine_cores_busy": (busy_b[0] - busy_a[0]) / (busy_b[1] - busy_a[1]) * os.cpu_count(),
            "cpu_count": os.cpu_count(),
            "loadavg_at_start": load_start,
            "loadavg_at_window_end": load_window,
        }
    )
    return result


def main() -> int:
    from airflow_grid_resume.agent.logship import DEFAULT_LOG_INTERVAL

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=120.0, help="the steady-state window")
    parser.add_argument("--minutes", type=float, help="the steady-state window in minutes (overrides --seconds)")
    parser.add_argument("--ramp", type=float, default=10.0, help="the watches start spread over this many seconds")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds after the ramp excluded from the figures")
    parser.add_argument("--poll-interval", type=float, default=2.0, help="GridRunOperator's default")
    parser.add_argument("--instance-check-interval", type=float, default=30.0, help="GridRunOperator's default")
    parser.add_argument("--lines-per-second", type=float, default=3.0, help="output lines per run per second")
    parser.add_argument(
        "--log-interval", type=float, default=DEFAULT_LOG_INTERVAL, help="seconds between log uploads (the agent's)"
    )
    parser.add_argument("--loadgen-threads", type=int, default=16)
    parser.add_argument("--finish-timeout", type=float, default=180.0)
    parser.add_argument("--triggerers", type=int, default=1, help="triggerer processes sharing the runs")
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() in the triggerer after the ramp")
    parser.add_argument("--profile", help="cProfile each triggerer into FILE.K (pstats; CPU figures then include it)")
    parser.add_argument("--json")
    parser.add_argument("--s3", choices=("fast", "moto"), default="fast", help="who serves the ledgers' S3")
    parser.add_argument(
        "--live-output", choices=("sqs", "s3"), default="sqs", help="the operator's live_output (sqs: a queue per run)"
    )
    roles = ("conductor", "loadgen", "triggerer", "s3")
    parser.add_argument("--role", choices=roles, default="conductor", help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--shard", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.minutes is not None:
        args.seconds = args.minutes * 60
    if args.role == "loadgen":
        return loadgen(args)
    if args.role == "triggerer" and args.profile:
        import cProfile

        profiler = cProfile.Profile()
        code = profiler.runcall(triggerer, args)
        profiler.dump_stats(args.profile)
        return code
    if args.role == "triggerer":
        return triggerer(args)
    if args.role == "s3":
        return serve_s3(args)
    result = conduct(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    ok = (
        result["cpu_cores"] < GOAL_CORES
        and result["loop_lag_p99_ms"] < GOAL_LAG_MS
        and result["describe_instances_calls_in_window"] < result["describe_instances_calls_unbatched_would_be"] / 10
        and result["watch_events"] == {"succeeded": args.runs}
        and result["runs_with_lines_missing"] == 0
        and result["duplicate_lines"] == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
