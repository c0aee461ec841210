"""The run watch's reads of the live-output queue (ledger/live.py): long polls, never a delete.

A failed poll is no evidence of anything (the S3 chunks still come); a queue that no longer
exists, or messages in a newer format, end the watch's use of the queue, and S3 carries on alone.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from airflow_grid_resume.asyncaws.fastobjects import SEND_FAILED, SignedSender
from airflow_grid_resume.hooks.livequeue import is_missing
from airflow_grid_resume.ledger.errors import UnsupportedFormatError
from airflow_grid_resume.ledger.live import LiveMessage, parse_body

log = logging.getLogger(__name__)

MAX_WAIT_SECONDS = 20  # SQS's longest long poll
FAILURE_LOG_INTERVAL = 300.0


class LiveQueueReader:
    """Receives session ``session``'s messages from ``queue_url``; ``stopped`` says why it gave up."""

    def __init__(self, client: Any, queue_url: str, session: int, logger: Any = None) -> None:
        self.client = client
        self.log = logger or log
        self.queue_url = queue_url
        self.session = session
        self.stopped: str | None = None
        self.received = 0
        self._failure_logged = 0.0
        self._url = str(getattr(client.meta, "endpoint_url", "") or "").rstrip("/") + "/"
        self._sender = SignedSender(client, "sqs")
        self._fast_ok = self._sender.ok and self._url != "/"

    async def receive(self, wait: float = MAX_WAIT_SECONDS) -> list[LiveMessage] | None:
        """The messages that arrive within ``wait`` seconds (whole seconds, at most 20); None when the
        poll failed (the caller backs off)."""
        if self.stopped:
            return None
        seconds = max(0, min(MAX_WAIT_SECONDS, int(wait)))
        try:
            answer = await self._fast(seconds) if self._fast_ok else None
            if answer is None:
                answer = await self.client.receive_message(
                    QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=seconds
                )
        except ClientError as exc:
            if is_missing(exc):
                self.stopped = f"the live-output queue {self.queue_url} no longer exists; reading output from S3 only"
                self.log.warning("%s", self.stopped)
            else:
                self._log_failure(exc)
            return None
        except BotoCoreError as exc:
            self._log_failure(exc)
            return None
        out: list[LiveMessage] = []
        for item in answer.get("Messages", []):
            try:
                message = parse_body(str(item.get("Body", "")))
            except UnsupportedFormatError as exc:
                self.stopped = f"{exc}; reading output from S3 only"
                self.log.warning("%s", self.stopped)
                return out
            if message is not None and message.session == self.session:
                out.append(message)
        self.received += len(out)
        return out

    async def _fast(self, seconds: int) -> dict | None:
        """ReceiveMessage signed by ``SigV4Signer`` and sent through the client's own HTTP session: the
        answer, or None for anything but a 200 (botocore then asks again, retrying and raising as it does).

        A triggerer watching 1,000 runs receives about 250 messages a second; botocore's generic path
        (validation, event handlers, endpoint rules, parsing into new objects) made it the triggerer's
        largest cost and its collector's busiest source (benchmarks/watch_bench.py, docs/benchmarks.md)."""
        body = json.dumps({"QueueUrl": self.queue_url, "MaxNumberOfMessages": 10, "WaitTimeSeconds": seconds}).encode()
        headers = {
            "X-Amz-Target": "AmazonSQS.ReceiveMessage",
            "Content-Type": "application/x-amz-json-1.0",
            "Content-Length": str(len(body)),
        }
        try:
            status, _, data = await self._sender.send("POST", self._url, headers, body)
        except SEND_FAILED:
            return None
        if status != 200:
            return None
        try:
            answer = json.loads(data)
        except ValueError:
            return None
        return answer if isinstance(answer, dict) else None

    def _log_failure(self, exc: Exception) -> None:
        if time.monotonic() - self._failure_logged >= FAILURE_LOG_INTERVAL:
            self._failure_logged = time.monotonic()
            self.log.warning("polling the live-output queue failed (S3 still has the output): %s", exc)
