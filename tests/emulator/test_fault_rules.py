"""emulator/faults.py: the local spot cloud's fault rules keep services apart. Pure: no server."""

from __future__ import annotations

from airflow_grid_resume.emulator.faults import Countdown, TokenBucket, bucket_key


def test_emulated_faults_keep_services_apart() -> None:
    """``*`` is every EC2 action, never an SQS operation; ``sqs:*`` every SQS operation."""
    assert Countdown("*", 1).matches("RunInstances") and not Countdown("*", 1).matches("sqs:SendMessage")
    assert Countdown("sqs:*", 1).matches("sqs:ReceiveMessage") and not Countdown("sqs:*", 1).matches("RunInstances")
    assert Countdown("sqs:SendMessage", 1).matches("sqs:SendMessage")
    buckets = {"*": TokenBucket(1, 1), "Describe*": TokenBucket(1, 1)}
    assert bucket_key("sqs:SendMessage", buckets) is None and bucket_key("CreateTags", buckets) == "*"
    assert bucket_key("sqs:SendMessage", {**buckets, "sqs:*": TokenBucket(1, 1)}) == "sqs:*"
