"""The live-output channel's contract: one SQS queue per run, and the message both sides agree on.

The agent sends each tick's new output as one message carrying its byte offset in the session's
output; the run watch long-polls the queue and never deletes (messages expire after the queue's
retention, and a visibility timeout longer than that means each is delivered about once). A standard
queue may deliver a message twice or out of order: the offsets put the bytes in order and drop
repeats. The S3 log chunks stay the durable record that fills any gap (docs/ledger.md: live output).
Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass

from airflow_grid_resume.ledger.errors import UnsupportedFormatError

LIVE_FORMAT = 1
QUEUE_PREFIX = "grid-resume-live-"
# Raw output bytes per message: base64 makes them 240 KiB, under SQS's 256 KiB message limit.
MAX_LIVE_DATA = 180 * 1024
# SQS bills a message per 64 KiB: what a typical tick (a few KiB of lines) costs.
BILLING_UNIT = 64 * 1024
# The queue's attributes, the same on every CreateQueue (SQS answers QueueAlreadyExists to others):
# messages expire after a minute, SQS's minimum (the watch reads each one within seconds, or never: a
# restarted watch reads S3), and are hidden longer than that once received, so never delivered again.
QUEUE_ATTRIBUTES = {"MessageRetentionPeriod": "60", "VisibilityTimeout": "120"}


def queue_name(run_uri: str) -> str:
    """The run's queue: the same name for every try (CreateQueue is idempotent), within SQS's 80 characters."""
    return QUEUE_PREFIX + hashlib.sha256(run_uri.encode()).hexdigest()[:40]


@dataclass(frozen=True)
class LiveMessage:
    """Bytes ``data`` of session ``session``'s output, starting at byte ``offset``.

    A message without data is a beat (the agent is alive, its output is ``offset`` bytes long);
    ``final`` says the session's outcome is written (the watch reads it at once)."""

    session: int
    offset: int
    data: bytes = b""
    final: bool = False

    def to_body(self) -> str:
        doc: dict = {"v": LIVE_FORMAT, "s": self.session, "o": self.offset}
        if self.data:
            doc["d"] = base64.b64encode(self.data).decode("ascii")
        if self.final:
            doc["f"] = 1
        return json.dumps(doc, separators=(",", ":"))

    @property
    def end(self) -> int:
        return self.offset + len(self.data)


def parse_body(body: str) -> LiveMessage | None:
    """The message in ``body``; None for anything that is not a live-output message (the queue is
    the run's, but a body it cannot read must not stop the watch). A newer format raises
    UnsupportedFormatError: refused, never guessed at."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("v"), int):
        return None
    if doc["v"] > LIVE_FORMAT:
        raise UnsupportedFormatError(
            f"a live-output message has format {doc['v']}; this version reads up to {LIVE_FORMAT}: upgrade "
            "airflow-grid-resume on the Airflow side"
        )
    session, offset = doc.get("s"), doc.get("o")
    if not isinstance(session, int) or not isinstance(offset, int) or offset < 0:
        return None
    try:
        data = base64.b64decode(doc.get("d") or "", validate=True)
    except (binascii.Error, ValueError, TypeError):
        return None
    return LiveMessage(session=session, offset=offset, data=data, final=bool(doc.get("f")))


def billed_requests(body: str) -> int:
    """How many requests SQS bills for sending (or receiving) ``body``: one per started 64 KiB."""
    return max(1, -(-len(body.encode()) // BILLING_UNIT))
