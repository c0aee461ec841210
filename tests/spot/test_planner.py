"""spot/planner.py: which launch to try next, one instance per session. Pure: no server."""

from __future__ import annotations

import pytest

from airflow_grid_resume.ec2.launch import (
    CAPACITY,
    FATAL,
    ON_DEMAND,
    SPOT,
    THROTTLE,
    TRANSIENT,
    FallbackPolicy,
    Pair,
    classify_error,
)
from airflow_grid_resume.spot.planner import END_ROUND, GIVE_UP, NEXT_PAIR, RETRY_SAME, Attempt, LaunchPlanner

PAIRS = [Pair("g5.xlarge", "subnet-a", "us-east-1a"), Pair("g5.xlarge", "subnet-b", "us-east-1b")]


def planner(**kw) -> LaunchPlanner:
    return LaunchPlanner(PAIRS, run_uri="s3://b/run", session=3, **kw)


@pytest.mark.parametrize(
    "code",
    ["InternalError", "InternalFailure", "Unavailable", "ServiceUnavailable", "RequestTimeout", "ConnectionError"],
)
def test_transient_ec2_errors_are_retried_not_final(code: str) -> None:
    assert classify_error(code) == TRANSIENT


def test_a_launch_with_an_unknown_answer_is_retried_with_its_token_before_any_other_pair() -> None:
    p = planner()
    first = p.round(now=0.0, waited_seconds=0)[0]
    p.before(first)
    assert p.failed(first, TRANSIENT, now=1.0) == RETRY_SAME
    assert p.transient_delay() == 1.0
    for _ in range(3):
        assert p.failed(first, TRANSIENT, now=1.0) == RETRY_SAME
    assert p.failed(first, TRANSIENT, now=1.0) == END_ROUND  # still unknown: the round ends here...
    p.end_round()
    assert p.round(now=2.0, waited_seconds=2) == [first]  # ...and the next one starts with it, alone
    assert p.failures_in_a_row == 0  # an unknown answer is not a capacity failure


def test_a_replayed_attempt_comes_first_and_alone_with_the_same_token() -> None:
    recorded = planner().attempt(PAIRS[1], SPOT)
    restored = Attempt.from_dict(recorded.as_dict())
    p = planner(replay=restored)
    assert p.round(now=0.0, waited_seconds=0) == [recorded]
    p.before(recorded)
    assert p.failed(recorded, CAPACITY, now=0.0) == NEXT_PAIR  # a definitive answer: EC2 launched nothing
    p.end_round()
    assert [a.pair for a in p.round(now=1.0, waited_seconds=1)] == [PAIRS[0], PAIRS[1]]


def test_capacity_moves_on_throttling_ends_the_round_fatal_gives_up() -> None:
    p = planner(cool_down=300)
    attempts = p.round(now=0.0, waited_seconds=0)
    assert len(attempts) == 2 and attempts[0].token != attempts[1].token
    assert p.failed(attempts[0], CAPACITY, now=0.0) == NEXT_PAIR
    assert p.failed(attempts[1], THROTTLE, now=0.0) == END_ROUND
    p.end_round()
    assert p.failures_in_a_row == 0  # throttled rounds are not capacity failures
    assert [a.pair for a in p.round(now=1.0, waited_seconds=1)] == [PAIRS[1], PAIRS[0]]  # just-failed last
    assert p.failed(attempts[0], FATAL, now=1.0) == GIVE_UP


def test_the_same_attempt_has_the_same_token_everywhere() -> None:
    assert planner().attempt(PAIRS[0], SPOT) == planner().attempt(PAIRS[0], SPOT)
    assert planner().attempt(PAIRS[0], SPOT).token != planner().attempt(PAIRS[0], ON_DEMAND).token


def test_fallback_to_on_demand_after_capacity_failures() -> None:
    p = planner(policy=FallbackPolicy(after_capacity_failures=2))
    for t in range(2):
        for attempt in p.round(now=float(t), waited_seconds=t):
            p.failed(attempt, CAPACITY, now=float(t))
        p.end_round()
    assert {a.market for a in p.round(now=5.0, waited_seconds=5)} == {ON_DEMAND}
