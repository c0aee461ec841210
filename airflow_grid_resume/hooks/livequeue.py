"""The run's live-output queue on the Airflow side: created before a try launches, deleted when the
run ends, found by ``grid-resume reap`` by its tags once its expiry passed (ledger/live.py has the
contract). A thin hook over SQS; the run watch reads the queue through its async client."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from airflow.providers.amazon.aws.hooks.sqs import SqsHook
from botocore.exceptions import ClientError

from airflow_grid_resume.ec2.tags import EXPIRES_TAG, RUN_TAG, run_tag_value
from airflow_grid_resume.hooks.base import call_with_retries
from airflow_grid_resume.ledger.awserror import error_codes, error_message
from airflow_grid_resume.ledger.live import QUEUE_ATTRIBUTES, QUEUE_PREFIX, queue_name

# Answers that mean "this deployment cannot have a queue now": the run then ships output through S3.
NO_QUEUE = {
    "AccessDenied",
    "AccessDeniedException",
    "AWS.SimpleQueueService.QueueDeletedRecently",
    "QueueDeletedRecently",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
}
# Answers that mean the queue does not exist (deleted, or created less than a second ago).
QUEUE_MISSING = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}
NEW_QUEUE_WAIT = 5.0


def is_missing(exc: BaseException) -> bool:
    """The queue does not exist (deleted, or not created yet)."""
    return bool(error_codes(exc) & QUEUE_MISSING)


def project_queues(client: Any) -> list[tuple[str, dict[str, str]]]:
    """(URL, tags) of every queue named with the project's prefix."""
    pages = call_with_retries(lambda: list(client.get_paginator("list_queues").paginate(QueueNamePrefix=QUEUE_PREFIX)))
    out = []
    for url in [u for page in pages for u in page.get("QueueUrls", [])]:
        try:
            tags = call_with_retries(functools.partial(client.list_queue_tags, QueueUrl=url)).get("Tags", {})
        except ClientError as exc:
            if is_missing(exc):
                continue
            raise
        out.append((url, dict(tags)))
    return out


def delete_queue(client: Any, url: str) -> bool:
    """Delete one queue; True once it is gone (already gone counts)."""
    try:
        call_with_retries(lambda: client.delete_queue(QueueUrl=url))
    except ClientError as exc:
        if not is_missing(exc):
            raise
    return True


class QueueRefused(Exception):
    """The run cannot have a live-output queue (the message says why and what to grant)."""


class LiveQueueHook(SqsHook):
    """Create, re-tag and delete a run's live-output queue; list the project's queues for the reaper."""

    def ensure_queue(self, run_uri: str, expires_at: str) -> str:
        """The queue's URL, creating it if needed (the same name and attributes every time, so a retry,
        or a lost answer repeated, gets the same queue) and moving its expiry to ``expires_at``.
        Raises QueueRefused when SQS will not have it."""
        client = self.get_conn()
        name = queue_name(run_uri)
        tags = {RUN_TAG: run_tag_value(run_uri), EXPIRES_TAG: expires_at}
        try:
            url = call_with_retries(
                lambda: client.create_queue(QueueName=name, Attributes=dict(QUEUE_ATTRIBUTES), tags=tags)
            )["QueueUrl"]
            # An existing queue keeps its old tags; a new one is unknown to SQS for about a second.
            _while_new(lambda: call_with_retries(lambda: client.tag_queue(QueueUrl=url, Tags=tags)))
        except ClientError as exc:
            if error_codes(exc) & NO_QUEUE:
                raise QueueRefused(_refusal(name, exc)) from exc
            raise
        return str(url)

    def delete_queue(self, queue_url: str) -> bool:
        return delete_queue(self.get_conn(), queue_url)


def _while_new(fn: Callable[[], Any], seconds: float = NEW_QUEUE_WAIT) -> Any:
    """``fn()`` retried while the queue it uses is still unknown (SQS: wait a second after CreateQueue)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return fn()
        except ClientError as exc:
            if not is_missing(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.25)


def _refusal(name: str, exc: ClientError) -> str:
    code = "/".join(sorted(error_codes(exc)))
    if "QueueDeletedRecently" in code:
        return (
            f"the live-output queue {name} was deleted less than 60 s ago and SQS does not allow re-creating it "
            "yet: this try's output goes through S3 (the task log lags by about 3 s more)"
        )
    return (
        f"cannot create the live-output queue {name} ({code}: {error_message(exc)}): "
        f"output goes through S3, which costs more per run-hour. Grant the Airflow connection sqs:CreateQueue, "
        f"sqs:TagQueue, sqs:ReceiveMessage and sqs:DeleteQueue on arn:aws:sqs:*:*:{QUEUE_PREFIX}*, or pass "
        "live_output='s3' (docs/user-guide.md: permissions)"
    )
