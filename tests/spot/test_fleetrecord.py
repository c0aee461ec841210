"""spot/fleetrecord.py: what the record keeps of how long a pool's spells went on once they had lasted half an
hour (the deadline policy's ``PoolView.lasting_hours``), without servers."""

from __future__ import annotations

import json

import pytest

from airflow_grid_resume.policy.view import LASTED_HOURS
from airflow_grid_resume.spot import fleetrecord
from airflow_grid_resume.spot.fleetrecord import ENDED, INTERRUPTED, Observation, apply, pool_stats

POOL = "us-east-1|us-east-1a|g5.xlarge|spot"
HOUR = 3600.0


def sessions(*lives: tuple[str, float], pool: str = POOL, run: str = "r") -> list[Observation]:
    return [Observation(pool, kind, 100.0 + i, hours * HOUR, f"{run}#{i}") for i, (kind, hours) in enumerate(lives)]


def test_sessions_that_lasted_half_an_hour_count_their_time_past_it_and_only_interruptions_as_ends() -> None:
    # 0.2 h: never lasted half an hour; 1.5 h interrupted: 1.0 h past it, an end; 2.5 h ended (finished): 2.0 h
    # past it, the spell went on at least that long (censored, not an end).
    record = apply(None, sessions((INTERRUPTED, 0.2), (INTERRUPTED, 1.5), (ENDED, 2.5)), lasted_hours=LASTED_HOURS)
    assert record["pools"][POOL]["lasting_seconds"] == pytest.approx(3.0 * HOUR)
    assert record["pools"][POOL]["lasting_interruptions"] == 1
    stats = pool_stats(record, POOL)
    assert stats.lasting_spells == 1
    assert stats.lasting_hours == pytest.approx((1.0 + 2.0) / 1)
    assert stats.sessions == 3 and stats.interruptions == 2  # the other counters as before
    assert stats.as_dict()["lasting_hours"] == stats.lasting_hours and stats.as_dict()["lasting_spells"] == 1


def test_a_session_of_exactly_half_an_hour_interrupted_is_an_end_with_nothing_past_it() -> None:
    record = apply(None, sessions((INTERRUPTED, LASTED_HOURS), (INTERRUPTED, 0.9)), lasted_hours=LASTED_HOURS)
    stats = pool_stats(record, POOL)
    assert stats.lasting_spells == 2 and stats.lasting_hours == pytest.approx(0.4 / 2)


def test_time_past_half_an_hour_without_any_interruption_is_long_not_unknown() -> None:
    # Two sessions that finished after 10 h: no spell seen to end, 19 h seen going on. None would let a pool that
    # never reclaimed a session count for less than one that reclaimed one after 19 h (19 h: lasting_hours 19).
    record = apply(None, sessions((ENDED, 10.0), (ENDED, 10.0)), lasted_hours=LASTED_HOURS)
    stats = pool_stats(record, POOL)
    assert stats.lasting_spells == 0 and stats.lasting_hours == pytest.approx(19.0)
    short = pool_stats(apply(None, sessions((ENDED, 0.3)), lasted_hours=LASTED_HOURS), POOL)
    assert short.lasting_spells == 0 and short.lasting_hours is None  # nothing lasted half an hour: not known


def test_the_mean_spell_counts_sessions_that_ended_otherwise_as_spells_that_went_on() -> None:
    # Hours of spot per interruption: 1 h + 2 h reclaimed once is 3 h per end (the session that finished is no
    # end); three finished sessions of 1 h, none reclaimed: 3 h as if one were ending now; no session: unknown.
    mixed = pool_stats(apply(None, sessions((INTERRUPTED, 2.0), (ENDED, 1.0))), POOL)
    assert (mixed.mean_up_hours, mixed.mean_spell_hours) == (pytest.approx(1.5), pytest.approx(3.0))
    finished = pool_stats(apply(None, sessions((ENDED, 1.0), (ENDED, 1.0), (ENDED, 1.0))), POOL)
    assert finished.mean_spell_hours == pytest.approx(3.0)
    reclaimed = pool_stats(apply(None, sessions((INTERRUPTED, 1.0), (INTERRUPTED, 3.0))), POOL)
    assert reclaimed.mean_spell_hours == pytest.approx(2.0) == reclaimed.mean_up_hours
    assert pool_stats(None, POOL).mean_spell_hours is None


def test_an_older_record_without_the_counters_loads_and_counts_on_from_zero() -> None:
    older = {
        "version": 1,
        "pools": {
            POOL: {"capacity": 2, "sessions": 1, "interruptions": 1, "up_seconds": 7200.0, "recent": [], "last_at": 5}
        },
    }
    stats = pool_stats(older, POOL)
    assert (stats.lasting_hours, stats.lasting_spells) == (None, 0)
    assert stats.mean_up_hours == 2.0 and stats.interruptions == 1
    record = apply(older, sessions((INTERRUPTED, 1.5)), lasted_hours=LASTED_HOURS)
    assert record["pools"][POOL]["sessions"] == 2 and record["pools"][POOL]["lasting_interruptions"] == 1
    assert pool_stats(record, POOL).lasting_hours == pytest.approx(1.0)
    unknown = pool_stats(record, "us-east-1|us-east-1b|g5.xlarge|spot")
    assert (unknown.lasting_hours, unknown.lasting_spells) == (None, 0)


def test_a_reapplied_session_end_counts_once_and_the_record_stays_bounded() -> None:
    ends = sessions(*[(INTERRUPTED, 0.75)] * 100)
    record = apply(None, ends, lasted_hours=LASTED_HOURS)
    again = apply(record, ends[-5:], lasted_hours=LASTED_HOURS)  # a retried write re-applies its observations
    pool = again["pools"][POOL]
    assert pool["lasting_interruptions"] == 100 and pool["lasting_seconds"] == pytest.approx(100 * 0.25 * HOUR)
    assert len(pool["recent"]) == fleetrecord.RECENT
    # Counters plus the window: a thousand more sessions add no bytes but the counters' digits.
    size = len(json.dumps(again))
    more = apply(again, sessions(*[(ENDED, 3.0)] * 1000, run="later"), lasted_hours=LASTED_HOURS)
    assert more["pools"][POOL]["sessions"] == 1100 and more["pools"][POOL]["lasting_interruptions"] == 100
    assert len(json.dumps(more)) < size + 200


def test_without_the_figure_the_lasting_counters_are_left_as_they_are() -> None:
    # Capacity answers and prices are written without it; a session end applied without it adds nothing there.
    record = apply(None, sessions((INTERRUPTED, 1.5)))
    assert record["pools"][POOL]["lasting_interruptions"] == 0 and record["pools"][POOL]["sessions"] == 1
    assert pool_stats(record, POOL).lasting_hours is None
