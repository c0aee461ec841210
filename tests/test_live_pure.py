"""The live-output channel's contract and the watch's merge of its two sources, without a server."""

from __future__ import annotations

import base64
import json
import random

import pytest

from airflow_grid_resume.emulator.faults import Countdown, TokenBucket, bucket_key
from airflow_grid_resume.ledger.errors import UnsupportedFormatError
from airflow_grid_resume.ledger.live import (
    MAX_LIVE_DATA,
    QUEUE_ATTRIBUTES,
    LiveMessage,
    billed_requests,
    parse_body,
    queue_name,
)
from airflow_grid_resume.watch.merge import OutputMerge


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


def test_the_merge_puts_fragments_in_order_and_drops_repeats() -> None:
    merge = OutputMerge(expected=10)
    merge.add(20, b"KLMNO")  # ahead of a gap: held
    assert merge.take() == b"" and merge.waiting()
    merge.add(0, b"0123456789")  # already out
    merge.add(10, b"ABCDEFGHIJ")  # fills the gap
    assert merge.take() == b"ABCDEFGHIJKLMNO" and merge.expected == 25
    merge.add(22, b"MNOPQ")  # overlaps what is out: only the new part
    merge.add(25, b"PQ")  # a duplicate of that part
    assert merge.take() == b"PQ" and merge.expected == 27 and not merge.waiting()
    assert merge.repeated == 10 + 3 + 2


def test_the_merge_gives_every_byte_once_whatever_the_order_and_repeats() -> None:
    stream = bytes(random.Random(7).getrandbits(8) for _ in range(5000))
    for seed in range(20):
        rng = random.Random(seed)
        cuts = sorted(rng.sample(range(1, len(stream)), 40))
        fragments = [(a, stream[a:b]) for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        # S3's view: bigger chunks with their own boundaries, arriving late
        s3 = [(a, stream[a : a + 1500]) for a in range(0, len(stream), 1500)]
        arrivals = fragments + rng.sample(fragments, 10) + s3
        rng.shuffle(arrivals)
        merge, out = OutputMerge(0), bytearray()
        for offset, data in arrivals:
            merge.add(offset, data)
            out += merge.take()
        assert bytes(out) == stream, seed


def test_the_merge_holds_a_bounded_amount_beyond_a_gap() -> None:
    merge = OutputMerge(0, max_ahead=100)
    merge.add(10, b"x" * 80)
    merge.add(200, b"y" * 80)  # over the bound: dropped (S3 brings it later)
    merge.add(0, b"a" * 10)
    assert merge.take() == b"a" * 10 + b"x" * 80 and not merge.waiting()


def test_emulated_faults_keep_services_apart() -> None:
    """``*`` is every EC2 action, never an SQS operation; ``sqs:*`` every SQS operation."""
    assert Countdown("*", 1).matches("RunInstances") and not Countdown("*", 1).matches("sqs:SendMessage")
    assert Countdown("sqs:*", 1).matches("sqs:ReceiveMessage") and not Countdown("sqs:*", 1).matches("RunInstances")
    assert Countdown("sqs:SendMessage", 1).matches("sqs:SendMessage")
    buckets = {"*": TokenBucket(1, 1), "Describe*": TokenBucket(1, 1)}
    assert bucket_key("sqs:SendMessage", buckets) is None and bucket_key("CreateTags", buckets) == "*"
    assert bucket_key("sqs:SendMessage", {**buckets, "sqs:*": TokenBucket(1, 1)}) == "sqs:*"
