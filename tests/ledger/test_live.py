"""ledger/live.py: the live-output channel's contract. Pure: no server."""

from __future__ import annotations

import base64
import json

import pytest

from airflow_grid_resume.ledger.errors import UnsupportedFormatError
from airflow_grid_resume.ledger.live import (
    MAX_LIVE_DATA,
    QUEUE_ATTRIBUTES,
    LiveMessage,
    billed_requests,
    parse_body,
    queue_name,
)


def test_a_message_round_trips_any_bytes_and_stays_under_sqs_limits() -> None:
    data = bytes(range(256)) * 3 + "é ✓\r\n".encode()
    message = LiveMessage(session=4, offset=1234, data=data, final=True)
    assert parse_body(message.to_body()) == message
    beat = LiveMessage(session=4, offset=99)
    assert json.loads(beat.to_body()) == {"v": 1, "s": 4, "o": 99}  # a beat carries no data field
    biggest = LiveMessage(session=1, offset=0, data=b"\xff" * MAX_LIVE_DATA).to_body()
    assert len(biggest.encode()) < 256 * 1024  # SQS's message size limit
    assert billed_requests(beat.to_body()) == 1 and billed_requests(biggest) == 4


@pytest.mark.parametrize(
    "body",
    [
        "",
        "not json",
        "[]",
        '{"s": 1, "o": 0}',
        '{"v": 1, "s": "1", "o": 0}',
        '{"v": 1, "s": 1, "o": -5}',
        '{"v": 1, "s": 1, "o": 0, "d": "***"}',
    ],
)
def test_a_body_that_is_not_a_live_message_is_skipped(body: str) -> None:
    assert parse_body(body) is None


def test_a_newer_message_format_is_refused_not_guessed() -> None:
    with pytest.raises(UnsupportedFormatError, match=r"format 2.*upgrade"):
        parse_body(json.dumps({"v": 2, "s": 1, "o": 0, "d": base64.b64encode(b"x").decode()}))


def test_the_queue_name_is_stable_per_run_and_within_sqs_rules() -> None:
    run = "s3://bucket/runs/" + "d" * 300
    name = queue_name(run)
    assert name == queue_name(run) != queue_name(run + "x")
    assert len(name) <= 80 and name.replace("-", "").replace("_", "").isalnum()
    # Retention at SQS's minimum, and hidden longer than that once received: never delivered twice by design.
    assert int(QUEUE_ATTRIBUTES["VisibilityTimeout"]) > int(QUEUE_ATTRIBUTES["MessageRetentionPeriod"]) == 60
