"""spot/placement.py and spot/fleetrecord.py: where a launch goes, from the pools' record. Pure: no server."""

from __future__ import annotations

from airflow_grid_resume.ec2.launch import ON_DEMAND, SPOT, UNSUPPORTED, FallbackPolicy, Pair, classify_error
from airflow_grid_resume.spot import fleetrecord
from airflow_grid_resume.spot.fleetrecord import Observation, apply, pool_stats
from airflow_grid_resume.spot.placement import (
    WAIT,
    MarketDecision,
    MarketView,
    RunState,
    fallback_choice,
    order_pairs,
)
from airflow_grid_resume.spot.planner import GIVE_UP, NEXT_PAIR, LaunchPlanner

EAST_A = Pair("g5.xlarge", "subnet-ea", "us-east-1a", "us-east-1")
EAST_B = Pair("g5.xlarge", "subnet-eb", "us-east-1b", "us-east-1")
WEST_A = Pair("g5.xlarge", "subnet-wa", "us-west-2a", "us-west-2")
G4_EAST_A = Pair("g4dn.xlarge", "subnet-ea", "us-east-1a", "us-east-1")
PAIRS = [EAST_A, EAST_B, WEST_A]


def observed(*items: tuple[Pair, str, float | None], market: str = SPOT) -> dict:
    return apply(None, [Observation(p.pool(market), kind, float(i), value) for i, (p, kind, value) in enumerate(items)])


def test_without_a_record_the_authors_order_is_kept() -> None:
    assert order_pairs(PAIRS, market=SPOT) == PAIRS


def test_a_pair_that_is_not_offered_is_never_tried() -> None:
    offered = {("g5.xlarge", "us-east-1a"), ("g5.xlarge", "us-west-2a")}
    assert order_pairs(PAIRS, market=SPOT, offered=offered) == [EAST_A, WEST_A]
    assert order_pairs(PAIRS, market=SPOT, unsupported={EAST_A.key}) == [EAST_B, WEST_A]


def test_not_straight_back_into_the_pool_that_just_reclaimed_the_run() -> None:
    run = RunState(reclaimed_in=EAST_A.pool(SPOT), last_pools=(EAST_A.pool(SPOT),))
    assert order_pairs(PAIRS, market=SPOT, run=run) == [EAST_B, WEST_A, EAST_A]
    # ...unless every other pool is cooling down after a capacity failure: then it is the best left
    failed = {EAST_B.key: 90.0, WEST_A.key: 95.0}
    assert order_pairs(PAIRS, market=SPOT, run=run, failed_at=failed, now=100.0) == [EAST_A, EAST_B, WEST_A]
    # the rule is about spot: an on-demand round is not steered by a spot reclaim
    assert order_pairs(PAIRS, market=ON_DEMAND, run=run) == PAIRS


def test_long_lifetimes_and_recent_capacity_first() -> None:
    record = observed(
        *[(EAST_A, fleetrecord.NO_CAPACITY, None)] * 6,
        (EAST_B, fleetrecord.CAPACITY, None),
        (EAST_B, fleetrecord.INTERRUPTED, 0.3 * 3600),
        (EAST_B, fleetrecord.CAPACITY, None),
        (EAST_B, fleetrecord.INTERRUPTED, 0.5 * 3600),
        *[(WEST_A, fleetrecord.CAPACITY, None)] * 4,
        (WEST_A, fleetrecord.ENDED, 30 * 3600),
    )
    assert order_pairs(PAIRS, market=SPOT, record=record) == [WEST_A, EAST_B, EAST_A]


def test_price_breaks_ties_and_the_runs_own_interruptions_count() -> None:
    record = observed(
        (EAST_A, fleetrecord.PRICE, 0.9), (EAST_B, fleetrecord.PRICE, 0.4), (WEST_A, fleetrecord.PRICE, 0.6)
    )
    assert order_pairs(PAIRS, market=SPOT, record=record) == [EAST_B, WEST_A, EAST_A]
    run = RunState(interruptions_by_pool={EAST_B.pool(SPOT): 2})
    assert order_pairs(PAIRS, market=SPOT, record=record, run=run) == [WEST_A, EAST_A, EAST_B]


def test_a_market_choice_that_names_a_pool_puts_it_first_and_wait_launches_nothing() -> None:
    p = LaunchPlanner(PAIRS, run_uri="s3://b/r", session=1, choice=lambda view: MarketDecision(SPOT, "", WEST_A))
    assert [a.pair for a in p.round(now=0.0, waited_seconds=0)] == [WEST_A, EAST_A, EAST_B]
    waiting = LaunchPlanner(PAIRS, run_uri="s3://b/r", session=1, choice=lambda view: MarketDecision(WAIT, "ahead"))
    assert waiting.round(now=0.0, waited_seconds=0) == []


def test_the_market_choice_sees_the_pairs_in_spot_order_and_the_counters() -> None:
    seen: list[MarketView] = []

    def choice(view: MarketView) -> MarketDecision:
        seen.append(view)
        return fallback_choice(FallbackPolicy(after_interruptions=2))(view)

    run = RunState(reclaimed_in=EAST_A.pool(SPOT))
    record = observed((WEST_A, fleetrecord.ENDED, 20 * 3600.0))
    p = LaunchPlanner(
        PAIRS, run_uri="s3://b/r", session=1, interruptions=2, run_state=run, choice=choice, record=record
    )
    attempts = p.round(now=0.0, waited_seconds=5)
    assert {a.market for a in attempts} == {ON_DEMAND}
    assert list(seen[0].pairs) == [WEST_A, EAST_B, EAST_A] and seen[0].interruptions == 2
    assert pool_stats(seen[0].record, WEST_A.pool(SPOT)).mean_up_hours == 20.0 and seen[0].run == run
    assert p.fallback_reason(5) == "2 interruptions"


def test_unsupported_skips_that_pair_for_the_session_and_gives_up_only_when_none_is_left() -> None:
    assert classify_error("Unsupported") == UNSUPPORTED
    p = LaunchPlanner([EAST_A, G4_EAST_A], run_uri="s3://b/r", session=1)
    first = p.round(now=0.0, waited_seconds=0)[0]
    p.before(first)
    assert p.failed(first, UNSUPPORTED, now=0.0) == NEXT_PAIR
    p.end_round()
    assert [a.pair for a in p.round(now=1.0, waited_seconds=1)] == [G4_EAST_A]
    last = p.round(now=2.0, waited_seconds=2)[0]
    p.before(last)
    assert p.failed(last, UNSUPPORTED, now=2.0) == GIVE_UP


def test_pool_stats_for_the_deadline_policy() -> None:
    record = observed(
        (EAST_A, fleetrecord.CAPACITY, None),
        (EAST_A, fleetrecord.NO_CAPACITY, None),
        (EAST_A, fleetrecord.NO_CAPACITY, None),
        (EAST_A, fleetrecord.CAPACITY, None),
        (EAST_A, fleetrecord.INTERRUPTED, 2 * 3600),
        (EAST_A, fleetrecord.ENDED, 4 * 3600),
        (EAST_A, fleetrecord.PRICE, 0.5),
        (EAST_A, fleetrecord.PRICE, 0.7),
    )
    stats = pool_stats(record, EAST_A.pool(SPOT))
    assert stats.availability == 0.5
    assert stats.mean_up_hours == 3.0
    assert stats.interruptions == 1 and stats.sessions == 2
    assert stats.interruption_rate == 1 / 6
    assert abs((stats.mean_price or 0) - 0.6) < 1e-9 and stats.last_price == 0.7
    unknown = pool_stats(record, WEST_A.pool(SPOT))
    assert unknown.availability is None and unknown.mean_up_hours is None


def test_the_record_stays_bounded_and_an_observation_counts_once() -> None:
    obs = [Observation(EAST_A.pool(SPOT), fleetrecord.NO_CAPACITY, float(i), oid=f"o{i}") for i in range(100)]
    record = apply(None, obs)
    record = apply(record, obs[-5:])  # a retried write re-applies its observations
    pool = record["pools"][EAST_A.pool(SPOT)]
    assert pool["no_capacity"] == 100 and len(pool["recent"]) == fleetrecord.RECENT
    many = apply(None, [Observation(f"r|z|t{i}|spot", fleetrecord.CAPACITY, float(i)) for i in range(500)])
    assert len(many["pools"]) == fleetrecord.MAX_POOLS and "r|z|t499|spot" in many["pools"]
