# ruff: noqa: F811 (the fixtures of tests/triggers/test_spot_cloud.py, imported by name)
"""Live output through SQS on the local spot cloud: real agents sending, real run watches long-polling,
with SQS's bad days (duplicates, reordering, 5xx, throttling, lost answers) and its rules (validation,
QueueDeletedRecently, a new queue unknown for a second)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from airflow_grid_resume.ec2.bootstrap import AGENT_KEY, SPEC_KEY
from airflow_grid_resume.ec2.tags import EXPIRES_TAG, expiry_tag
from airflow_grid_resume.hooks.livequeue import LiveQueueHook, QueueRefused
from airflow_grid_resume.ledger.live import LiveMessage, queue_name
from airflow_grid_resume.ledger.records import Heartbeat
from airflow_grid_resume.ledger.s3client import make_s3_client
from airflow_grid_resume.ledger.store import RunLedger
from airflow_grid_resume.ledger.uri import parse_s3_uri
from airflow_grid_resume.reaper import reap
from tests.triggers.test_spot_cloud import (  # noqa: F401 (fixtures)
    agent_pyz,
    cloud,
    cloud_env,
    first_event_async,
    logged_lines,
    spec_for,
    subnets,
    trigger_for,
    watch_for,
)
from tests.triggers.test_spot_cloud import first_event as first_event_sync


def live_run(agent_pyz: str, script: str, *, queue: bool = True, queue_url: str | None = None) -> tuple[str, str]:
    """A run whose spec has a live-output queue (a real one, or ``queue_url``): (run_uri, queue URL)."""
    bucket = f"live-{uuid.uuid4().hex[:10]}"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    run_id = f"run-{uuid.uuid4().hex[:6]}"
    run_uri = f"s3://{bucket}/{run_id}"
    if queue_url is None and queue:
        queue_url = LiveQueueHook(aws_conn_id=None, region_name="us-east-1").ensure_queue(
            run_uri, expiry_tag(time.time(), 1)
        )
    s3.upload_file(agent_pyz, bucket, f"{run_id}/{AGENT_KEY}")
    # S3 gets the output once a minute only: whatever reaches the task log sooner came through the queue.
    agent_args = ["--heartbeat-interval", "1", "--live-interval", "0.5", "--log-interval", "0.5", "--imds-poll", "0.2"]
    spec = {"command": ["sh", "-c", script], "agent_args": agent_args, "live_queue": queue_url}
    s3.put_object(Bucket=bucket, Key=f"{run_id}/{SPEC_KEY}", Body=json.dumps(spec).encode())
    return run_uri, str(queue_url)


def launch(subnets, run_uri: str) -> str:
    return first_event_sync(trigger_for(spec_for(subnets), run_uri=run_uri))["instance_id"]


def s3_log_chunks(run_uri: str) -> list[str]:
    ledger = RunLedger(make_s3_client(), parse_s3_uri(run_uri))
    return [o["Key"] for o in ledger.list(ledger.key("sessions/000001/logs/"))]


WAIT_FOR_GO = 'for i in 1 2 3 4 5 6; do echo live-$i; sleep 0.2; done; while [ ! -f "$HOME/go" ]; do sleep 0.1; done'


def test_output_reaches_the_task_log_through_the_queue_once_and_in_order_on_a_bad_day(
    cloud, subnets, agent_pyz, capfd
) -> None:
    run_uri, queue_url = live_run(agent_pyz, WAIT_FOR_GO + "; echo live-7")
    cloud.set_sqs(duplicate=6, reorder=6)
    cloud.inject_fault("sqs:ReceiveMessage", code="InternalError", count=2)
    cloud.inject_fault("sqs:SendMessage", code="ServiceUnavailable", count=2)
    cloud.drop_responses("sqs:SendMessage", count=2)  # sent, answer lost: the agent sends those bytes again
    cloud.set_throttle("sqs:*", burst=3, rate=20)
    instance_id = launch(subnets, run_uri)
    home = cloud.instance(instance_id)["directory"]

    async def watch() -> tuple[dict, str]:
        task = asyncio.ensure_future(first_event_async(watch_for(run_uri, instance_id, live_queue=queue_url)))
        seen = ""
        deadline = time.monotonic() + 30
        while logged_lines(seen, "live-") != [str(i) for i in range(1, 7)]:
            assert time.monotonic() < deadline and not task.done(), (
                seen[-3000:] + Path(home, "console.log").read_text()[-5000:]
            )
            await asyncio.sleep(0.2)
            seen += capfd.readouterr().out
        # Every line is in the task log while S3 has none of it yet: it came through the queue.
        assert s3_log_chunks(run_uri) == []
        Path(home, "go").touch()
        event = await asyncio.wait_for(task, 60)
        return event, seen + capfd.readouterr().out

    event, out = asyncio.run(watch())
    assert event["status"] == "succeeded"
    assert logged_lines(out, "live-") == [str(i) for i in range(1, 8)]  # each once, in order
    ledger = RunLedger(make_s3_client(), parse_s3_uri(run_uri))
    assert event["log_offset"] == len(ledger.read_log(1, 0)[0])  # S3 has it all at the end, too
    counters = cloud.state()["sqs"]["counters"]
    assert counters["duplicated"] >= 1 and counters["reordered"] >= 1, counters
    assert cloud.state()["counters"]["faults"] >= 4


def test_a_refused_queue_leaves_the_output_to_s3(cloud, subnets, agent_pyz, capfd) -> None:
    """No such queue (deleted, or no permission): the agent ships to S3 at the fast interval and says so in
    the heartbeat; the watch stops polling and reads S3 at that pace. Nothing is lost."""
    missing = f"{cloud.endpoint_url}/123456789012/{queue_name('s3://nowhere/' + uuid.uuid4().hex)}"
    run_uri, queue_url = live_run(agent_pyz, "for i in $(seq 1 8); do echo s3-$i; sleep 0.25; done", queue_url=missing)
    instance_id = launch(subnets, run_uri)
    event = first_event_sync(watch_for(run_uri, instance_id, live_queue=queue_url))
    assert event["status"] == "succeeded"
    out = capfd.readouterr().out
    assert logged_lines(out, "s3-") == [str(i) for i in range(1, 9)]
    assert "no longer exists; reading output from S3 only" in out
    assert "refused a message" in out and "sqs:SendMessage" in out  # the agent's own line, in the task log
    assert len(s3_log_chunks(run_uri)) > 2  # the fast interval, not one chunk a minute
    beat = RunLedger(make_s3_client(), parse_s3_uri(run_uri)).read_record(Heartbeat, 1)
    assert beat is not None and beat.log_interval == 0.5


def test_sqs_rules_moto_skips_are_enforced(cloud_env, cloud) -> None:
    sqs = boto3.client("sqs")
    with pytest.raises(ClientError) as info:
        sqs.create_queue(QueueName=f"t-{uuid.uuid4().hex[:8]}", Attributes={"MessageRetentionPeriod": "30"})
    assert info.value.response["Error"]["QueryErrorCode"] == "InvalidAttributeValue"
    cloud.set_sqs(new_queue_seconds=1.5)
    name = f"t-{uuid.uuid4().hex[:8]}"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    with pytest.raises(ClientError) as info:
        sqs.send_message(QueueUrl=url, MessageBody="x")  # SQS asks for a second's wait after CreateQueue
    assert info.value.response["Error"]["Code"] == "AWS.SimpleQueueService.NonExistentQueue"
    time.sleep(1.6)
    sqs.send_message(QueueUrl=url, MessageBody="x")
    sqs.delete_queue(QueueUrl=url)
    with pytest.raises(ClientError) as info:
        sqs.create_queue(QueueName=name)
    assert "QueueDeletedRecently" in info.value.response["Error"]["Code"]
    # The operator's hook turns that into a clear reason to use S3 for this try.
    run_uri = f"s3://b/{uuid.uuid4().hex}"
    hook = LiveQueueHook(aws_conn_id=None, region_name="us-east-1")
    url = hook.ensure_queue(run_uri, expiry_tag(time.time(), 1))
    assert url.endswith(queue_name(run_uri)) and hook.ensure_queue(run_uri, expiry_tag(time.time(), 2)) == url
    assert hook.delete_queue(url) and hook.delete_queue(url)  # gone twice over is still gone
    with pytest.raises(QueueRefused, match=r"deleted less than 60 s ago.*through S3"):
        hook.ensure_queue(run_uri, expiry_tag(time.time(), 1))


def test_throttled_and_failing_sqs_calls_are_retried_by_the_hook(cloud_env, cloud) -> None:
    cloud.inject_fault("sqs:CreateQueue", code="InternalError", count=2)
    cloud.drop_responses("sqs:TagQueue", count=1)
    run_uri = f"s3://b/{uuid.uuid4().hex}"
    url = LiveQueueHook(aws_conn_id=None, region_name="us-east-1").ensure_queue(run_uri, "2030-01-01T00:00:00Z")
    assert boto3.client("sqs").list_queue_tags(QueueUrl=url)["Tags"][EXPIRES_TAG] == "2030-01-01T00:00:00Z"


def test_reap_deletes_expired_live_queues_only(cloud_env, cloud) -> None:
    sqs = boto3.client("sqs")
    other = sqs.create_queue(QueueName=f"someone-elses-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    hook = LiveQueueHook(aws_conn_id=None, region_name="us-east-1")
    old = hook.ensure_queue(f"s3://b/{uuid.uuid4().hex}", expiry_tag(time.time() - 7200, 1))
    young = hook.ensure_queue(f"s3://b/{uuid.uuid4().hex}", expiry_tag(time.time(), 1))
    ec2, s3 = boto3.client("ec2"), boto3.client("s3")
    dry = reap(ec2, s3, apply=False, sqs_client=sqs)
    assert [q["queue_url"] for q in dry["queues"]] == [old] and dry["deleted_queues"] == []
    done = reap(ec2, s3, apply=True, sqs_client=sqs)
    assert done["deleted_queues"] == [old]
    left = sqs.list_queues().get("QueueUrls", [])
    assert old not in left and young in left and other in left
    later = reap(ec2, s3, apply=False, sqs_client=sqs, now=datetime.now(timezone.utc) + timedelta(hours=2))
    assert young in [q["queue_url"] for q in later["queues"]] and other not in [q["queue_url"] for q in later["queues"]]
    for url in (young, other):
        sqs.delete_queue(QueueUrl=url)


def test_a_message_of_another_session_or_not_ours_is_ignored(cloud_env, cloud) -> None:
    from airflow_grid_resume.asyncaws.queuereader import LiveQueueReader

    url = LiveQueueHook(aws_conn_id=None, region_name="us-east-1").ensure_queue(
        f"s3://b/{uuid.uuid4().hex}", expiry_tag(time.time(), 1)
    )
    time.sleep(1.1)  # the queue's first second
    sqs = boto3.client("sqs")
    for body in (LiveMessage(1, 0, b"old").to_body(), "hello", LiveMessage(2, 0, b"mine").to_body()):
        sqs.send_message(QueueUrl=url, MessageBody=body)

    async def read() -> list[LiveMessage]:
        from aiobotocore.session import get_session

        async with get_session().create_client("sqs", region_name="us-east-1") as client:
            reader = LiveQueueReader(client, url, session=2)
            generic: list[dict] = []
            slow = client.receive_message

            async def counted(**kwargs: object) -> dict:
                generic.append(kwargs)
                return await slow(**kwargs)

            client.receive_message = counted
            got: list[LiveMessage] = []
            for _ in range(3):
                got += await reader.receive(1) or []
            assert generic == []  # every poll went the signed fast path
            cloud.inject_fault("sqs:ReceiveMessage", code="ServiceUnavailable", count=1)
            sqs.send_message(QueueUrl=url, MessageBody=LiveMessage(2, 4, b"more").to_body())
            got += await reader.receive(1) or []  # the 503 is asked again through botocore, which retries
            assert len(generic) == 1
            return got

    assert asyncio.run(read()) == [LiveMessage(2, 0, b"mine"), LiveMessage(2, 4, b"more")]
    sqs.delete_queue(QueueUrl=url)
