"""What real SQS does that moto's does not, for the local spot cloud (``SpotCloudApp`` calls it).

- Validation moto skips: ``MessageRetentionPeriod`` 60 s to 14 days, ``VisibilityTimeout`` 0 to 12 h.
- A queue name deleted less than 60 s ago cannot be created again (``QueueDeletedRecently``).
- A queue younger than ``new_queue_seconds`` is unknown (``NonExistentQueue``): SQS asks for a
  second's wait after CreateQueue.
- Messages past the queue's retention are gone (moto 5 keeps them, and a receive that meets one
  first waits a second before it looks again).
- A standard queue's at-least-once delivery, on request: the next ``duplicate`` answers carry a
  message delivered before once more, the next ``reorder`` answers hold their last message back
  and deliver it after the next answer's.

Error answers are SQS's JSON protocol: ``__type`` and the ``x-amzn-query-error`` header that
botocore reads the code from.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

Reply = tuple[str, list, bytes]

SQS_FAULT_STATUS = {
    "InternalError": ("500 Internal Server Error", "InternalError;Receiver"),
    "InternalFailure": ("500 Internal Server Error", "InternalFailure;Receiver"),
    "ServiceUnavailable": ("503 Service Unavailable", "ServiceUnavailable;Receiver"),
    "Unavailable": ("503 Service Unavailable", "ServiceUnavailable;Receiver"),
    "RequestTimeout": ("503 Service Unavailable", "ServiceUnavailable;Receiver"),
    "RequestLimitExceeded": ("400 Bad Request", "ThrottlingException;Sender"),
}
LIMITS = {"MessageRetentionPeriod": (60, 1_209_600), "VisibilityTimeout": (0, 43_200)}
DELETED_RECENTLY_SECONDS = 60.0
NEW_QUEUE_SECONDS = 1.0


def sqs_error(status: str, code: str, query_code: str, message: str) -> Reply:
    body = json.dumps({"__type": f"com.amazonaws.sqs#{code}", "message": message}).encode()
    headers = [
        ("Content-Type", "application/x-amz-json-1.0"),
        ("x-amzn-query-error", query_code),
        ("Content-Length", str(len(body))),
    ]
    return status, headers, body


def fault_reply(code: str) -> Reply:
    status, query = SQS_FAULT_STATUS.get(code, SQS_FAULT_STATUS["InternalError"])
    name = query.split(";")[0]
    return sqs_error(status, name, query, f"emulated {name}")


def throttled_reply() -> Reply:
    return sqs_error("400 Bad Request", "ThrottlingException", "ThrottlingException;Sender", "Rate exceeded")


def _queue_name(url_or_name: str) -> str:
    return url_or_name.rstrip("/").rsplit("/", 1)[-1]


class SqsWeather:
    """The bookkeeping; thread-safe. ``backend`` gives moto's SQS backend for a region (in process)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.deleted: dict[str, float] = {}  # queue name -> when deleted
        self.created: dict[str, float] = {}  # queue name -> when created
        self.new_queue_seconds = NEW_QUEUE_SECONDS
        self.duplicate = 0
        self.reorder = 0
        self._delivered: dict[str, list[dict]] = {}  # queue -> recent messages delivered (for duplicates)
        self._held: dict[str, list[dict]] = {}  # queue -> messages held back (reordering)
        self.counters = {"duplicated": 0, "reordered": 0, "expired": 0}

    def state(self) -> dict:
        with self.lock:
            return {
                "new_queue_seconds": self.new_queue_seconds,
                "duplicate": self.duplicate,
                "reorder": self.reorder,
                "counters": dict(self.counters),
            }

    def configure(self, doc: dict) -> dict:
        with self.lock:
            if "new_queue_seconds" in doc:
                value = float(doc["new_queue_seconds"])
                if value < 0:
                    raise ValueError(f"new_queue_seconds must be 0 or more, got {value}")
                self.new_queue_seconds = value
            for key in ("duplicate", "reorder"):
                if key in doc:
                    value = int(doc[key])
                    if value < 0:
                        raise ValueError(f"{key} must be 0 or more, got {value}")
                    setattr(self, key, value)
        return self.state()

    # -- before moto ------------------------------------------------------------------------------
    def refuse(self, op: str, params: dict, backend: Any) -> Reply | None:
        """An answer SQS would give instead of carrying the request out, or None."""
        now = time.monotonic()
        if op == "CreateQueue":
            for name, (low, high) in LIMITS.items():
                value = (params.get("Attributes") or {}).get(name)
                if value is not None and not (str(value).isdigit() and low <= int(value) <= high):
                    return sqs_error(
                        "400 Bad Request",
                        "InvalidAttributeValue",
                        "InvalidAttributeValue;Sender",
                        f"Invalid value for the parameter {name}.",
                    )
            name = str(params.get("QueueName", ""))
            with self.lock:
                deleted = self.deleted.get(name)
            if deleted is not None and now - deleted < DELETED_RECENTLY_SECONDS:
                return sqs_error(
                    "400 Bad Request",
                    "QueueDeletedRecently",
                    "AWS.SimpleQueueService.QueueDeletedRecently;Sender",
                    "You must wait 60 seconds after deleting a queue before you can create another with the same name.",
                )
            return None
        url = params.get("QueueUrl")
        if not url:
            return None
        name = _queue_name(str(url))
        with self.lock:
            created = self.created.get(name)
        if created is not None and now - created < self.new_queue_seconds:
            return sqs_error(
                "400 Bad Request",
                "QueueDoesNotExist",
                "AWS.SimpleQueueService.NonExistentQueue;Sender",
                "The specified queue does not exist.",
            )
        if op == "ReceiveMessage":
            self._expire(name, backend)
        return None

    def _expire(self, name: str, backend: Any) -> None:
        queue = backend.queues.get(name) if backend is not None else None
        if queue is None:
            return
        retention = int(queue.message_retention_period or 345600)
        cutoff = (time.time() - retention) * 1000
        with queue._messages_lock:
            kept = [m for m in queue._messages if m.sent_timestamp is None or m.sent_timestamp >= cutoff]
            expired = len(queue._messages) - len(kept)
            if expired:
                queue._messages[:] = kept
                queue._pending_messages = {m for m in queue._pending_messages if m in kept}
        if expired:
            with self.lock:
                self.counters["expired"] += expired

    # -- after moto -------------------------------------------------------------------------------
    def answered(self, op: str, params: dict, reply: Reply) -> Reply:
        status, headers, body = reply
        if not status.startswith("200"):
            return reply
        now = time.monotonic()
        if op == "CreateQueue":
            name = str(params.get("QueueName", ""))
            with self.lock:
                self.created.setdefault(name, now)
            return reply
        if op == "DeleteQueue":
            name = _queue_name(str(params.get("QueueUrl", "")))
            with self.lock:
                self.deleted[name] = now
                self.created.pop(name, None)
            return reply
        if op != "ReceiveMessage":
            return reply
        name = _queue_name(str(params.get("QueueUrl", "")))
        doc = json.loads(body or b"{}")
        messages = list(doc.get("Messages") or [])
        with self.lock:
            held = self._held.pop(name, [])
            if self.reorder and messages:
                self.reorder -= 1
                self.counters["reordered"] += 1
                self._held[name] = [messages.pop()]
            recent = self._delivered.setdefault(name, [])
            if self.duplicate and recent:
                self.duplicate -= 1
                self.counters["duplicated"] += 1
                messages.append(dict(recent[-1]))
            messages += held  # late: after the newer ones
            recent += messages
            del recent[:-20]
        if not messages and not held:
            return reply
        doc["Messages"] = messages
        data = json.dumps(doc).encode()
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"] + [("Content-Length", str(len(data)))]
        return status, headers, data
