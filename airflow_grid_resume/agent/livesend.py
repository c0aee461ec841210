"""The agent's side of the live-output channel: new output as SQS messages (ledger/live.py).

The channel is best effort: the S3 log chunks stay the record, so a message that fails is never
waited for. While the queue is refused (no sqs:SendMessage, queue deleted or not yet visible),
the channel is down and the shipper puts chunks in S3 at the fast interval; it tries the queue
again every ``DOWN_RETRY`` seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from airflow_grid_resume.agent.logship import LogSpool
from airflow_grid_resume.ledger.awserror import error_codes
from airflow_grid_resume.ledger.live import MAX_LIVE_DATA, LiveMessage

log = logging.getLogger(__name__)

DOWN_RETRY = 60.0
# Errors that say the queue cannot be used now (not a passing fault that the next tick retries).
REFUSED = {
    "AccessDenied",
    "AccessDeniedException",
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "NonExistentQueue",
    "InvalidAddress",
    "InvalidClientTokenId",
    "KMS.AccessDeniedException",
}


def make_sqs_client(region: str | None = None) -> Any:
    """A short-fused client: a live message older than a few seconds is worth little (S3 has it)."""
    config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=3, read_timeout=10)
    return boto3.session.Session(region_name=region).client("sqs", config=config)


class LiveSender:
    """Sends spool bytes from ``sent`` on as messages of session ``session``; thread-safe."""

    def __init__(self, client: Any, queue_url: str, session: int, spool: LogSpool) -> None:
        self.client = client
        self.queue_url = queue_url
        self.session = session
        self.spool = spool
        self.sent = 0
        self.sent_at = 0.0  # monotonic time of the last message that SQS accepted
        self._down_until = 0.0
        self._lock = threading.Lock()

    def up(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) >= self._down_until

    def ship(self) -> bool:
        """Send the output not sent yet (at most ``MAX_LIVE_DATA`` bytes: a backlog larger than that is
        skipped, the watch reads it from S3). False when nothing went out."""
        with self._lock:
            end = self.spool.size
            if end <= self.sent:
                return False
            start = max(self.sent, end - MAX_LIVE_DATA)
            data = self.spool.read(start, end - start)
            if self._send(LiveMessage(self.session, start, data)):
                self.sent = start + len(data)
                return True
            return False

    def beat(self, *, final: bool = False) -> bool:
        """A message without output: the agent is alive (or, ``final``, its outcome is written)."""
        with self._lock:
            return self._send(LiveMessage(self.session, self.spool.size, final=final))

    def _send(self, message: LiveMessage) -> bool:
        if not self.up():
            return False
        try:
            self.client.send_message(QueueUrl=self.queue_url, MessageBody=message.to_body())
        except ClientError as exc:
            if error_codes(exc) & REFUSED:
                self._down_until = time.monotonic() + DOWN_RETRY
                log.warning(
                    "live output: the queue %s refused a message (%s); output goes to S3 every few seconds, and the "
                    "queue is tried again in %.0f s (the instance profile needs sqs:SendMessage on it)",
                    self.queue_url,
                    "/".join(sorted(error_codes(exc))),
                    DOWN_RETRY,
                )
            return False
        except BotoCoreError:  # no answer after retries: the next tick sends these bytes again
            return False
        self.sent_at = time.monotonic()
        return True
