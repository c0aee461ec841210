"""A deadline= run's glue to the policy (run/deadline.py), its parameters (run/options.py) and the launch
planner asking it (spot/planner.py), without servers."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_grid_resume.ec2.launch import CAPACITY, ON_DEMAND, SPOT, Pair
from airflow_grid_resume.run.deadline import (
    LASTED_HOURS,
    STOP,
    DeadlineContext,
    LaunchChooser,
    decision_line,
    first_try_problem,
    parse_deadline,
    pool_history,
    pool_name,
    pool_zones,
    pools_from_scores,
    watch_choice,
)
from airflow_grid_resume.run.options import RunOptions
from airflow_grid_resume.spot.fleetrecord import pool_stats
from airflow_grid_resume.spot.planner import WAIT, LaunchPlanner

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
PAIRS = [Pair("g5.xlarge", "subnet-a", "us-east-1a"), Pair("g5.xlarge", "subnet-b", "us-east-1b")]


def ctx(**kw: object) -> DeadlineContext:
    doc: dict = {
        "deadline_at": T0 + 10 * 3600,
        "first_started_at": T0,
        "work_hours": 6.0,
        "progress_hours": 0.0,
        "changeover_hours": 0.2,
        "on_demand_price": 1.0,
    }
    doc.update(kw)
    return DeadlineContext.from_dict(doc)


# -- the deadline as given ------------------------------------------------------------------------


def test_each_form_of_deadline_resolves_to_one_instant() -> None:
    aware = datetime(2026, 1, 1, 7, 0, tzinfo=timezone.utc)
    assert parse_deadline(aware, first_started_at=T0) == T0 + 7 * 3600
    assert parse_deadline(timedelta(hours=7), first_started_at=T0) == T0 + 7 * 3600  # from the first try
    assert parse_deadline("2026-01-01T07:00:00+00:00", first_started_at=0) == T0 + 7 * 3600  # a rendered template
    assert parse_deadline("2026-01-01T07:00:00Z", first_started_at=0) == T0 + 7 * 3600


@pytest.mark.parametrize(
    ("given", "words"),
    [("tomorrow at 7", "not an ISO datetime"), ("2026-01-01T07:00:00", "no time zone"), (7, "must be a datetime")],
)
def test_a_deadline_that_is_not_one_says_what_to_write(given: object, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_deadline(given, first_started_at=T0)


def test_a_deadline_past_at_the_first_try_is_refused() -> None:
    problem = first_try_problem(T0 - 60, T0, 5.0)
    assert problem is not None and "already past" in problem and "2025-12-31 23:59 UTC" in problem
    assert first_try_problem(T0 + 3600, T0, 5.0) is None  # tight is the policy's business: on-demand, late


def options(**kw: object) -> RunOptions:
    return RunOptions(command="python train.py", artifacts_uri="s3://b/p", **kw)  # type: ignore[arg-type]


def test_the_operator_parameters_are_checked_when_the_dag_is_parsed() -> None:
    with pytest.raises(ValueError, match="deadline= needs expected_runtime="):
        options(deadline=timedelta(hours=7))
    with pytest.raises(ValueError, match="timezone-aware"):
        options(deadline=datetime(2026, 1, 1, 7), expected_runtime=3600.0)
    with pytest.raises(ValueError, match="timedelta from the run's first try must be positive"):
        options(deadline=timedelta(0), expected_runtime=3600.0)
    with pytest.raises(ValueError, match="expected_runtime must be positive"):
        options(deadline=timedelta(hours=1), expected_runtime=0.0)
    with pytest.raises(ValueError, match="deadline_policy must be one of 'default', 'uniform-progress'"):
        options(deadline=timedelta(hours=1), expected_runtime=60.0, deadline_policy="cheapest")
    with pytest.raises(ValueError, match="got int 7"):
        options(deadline=7, expected_runtime=60.0)
    assert options(deadline="{{ data_interval_end + macros.timedelta(hours=7) }}", expected_runtime=60.0)
    assert options().deadline is None  # without deadline= nothing changes


# -- decisions ------------------------------------------------------------------------------------


def test_a_launch_tries_spot_first_and_on_demand_in_the_same_round_when_the_policy_says_so() -> None:
    # 4 h of slack at the start, none of it spent on progress after 3.3 h: 0.7 h left, below the line to the
    # deadline. A spot start is affordable, waiting longer is not.
    behind = ctx()
    chooser = LaunchChooser(behind, point="launch", tick_seconds=15, clock_now=lambda: T0 + 3.3 * 3600)
    planner = LaunchPlanner(PAIRS, run_uri="s3://b/r", session=1, chooser=chooser)
    spot = planner.round(0.0, 0.0)
    assert [a.market for a in spot] == [SPOT, SPOT]
    for attempt in spot:
        planner.failed(attempt, CAPACITY, 1.0)
    follow = planner.follow_up(2.0, 0.0)
    assert [a.market for a in follow] == [ON_DEMAND, ON_DEMAND]
    assert [getattr(d, "action", None) for d in planner.decisions] == [SPOT, ON_DEMAND]


def test_once_committed_to_on_demand_every_later_round_keeps_it() -> None:
    tight = ctx(deadline_at=T0 + 6.3 * 3600)  # 0.3 h of slack: no room for a return to spot
    chooser = LaunchChooser(tight, point="launch", tick_seconds=15, clock_now=lambda: T0 + 60)
    planner = LaunchPlanner(PAIRS, run_uri="s3://b/r", session=1, chooser=chooser)
    assert [a.market for a in planner.round(0.0, 0.0)] == [ON_DEMAND, ON_DEMAND]
    assert getattr(planner.decisions[-1], "commit", None) is True and chooser.ctx.committed
    planner.decisions.clear()
    chooser.ctx = DeadlineContext.from_dict({**chooser.ctx.as_dict(), "deadline_at": T0 + 20 * 3600})
    assert [a.market for a in planner.round(3.0, 20.0)] == [ON_DEMAND, ON_DEMAND]  # slack again, still committed
    assert [getattr(d, "commit", None) for d in planner.decisions] == [True]


def test_with_slack_a_round_without_spot_waits_and_tries_nothing_more() -> None:
    ahead = ctx(progress_hours=3.0)  # 7 h of slack at the start: well above the line
    chooser = LaunchChooser(ahead, point="capacity", tick_seconds=15, clock_now=lambda: T0 + 60)
    planner = LaunchPlanner(PAIRS, run_uri="s3://b/r", session=1, chooser=chooser)
    spot = planner.round(0.0, 0.0)
    assert spot[0].pair.zone == getattr(planner.decisions[0], "pool", None)  # the pool it named comes first
    for attempt in spot:
        planner.failed(attempt, CAPACITY, 1.0)
    assert planner.follow_up(2.0, 0.0) == []
    assert planner.market(0.0) == WAIT


def test_an_on_demand_session_is_stopped_to_go_back_to_spot_when_spot_is_there_and_there_is_slack() -> None:
    spot_back = {"us-east-1a": True}
    ahead = watch_choice(ctx(), spot_back, now=T0 + 3600, launched_at=T0, progress_hours=2.5, tick_seconds=60)
    assert ahead.action == STOP and ahead.pool == "us-east-1a" and ahead.ahead_hours == pytest.approx(2.5 - 0.6)
    unknown = watch_choice(
        ctx(), {"us-east-1a": None}, now=T0 + 3600, launched_at=T0, progress_hours=2.5, tick_seconds=60
    )
    assert unknown.action == ON_DEMAND  # spot not known to be there: stay
    late = ctx(deadline_at=T0 + 3.2 * 3600)  # 0.2 h of slack left: no return to spot can be paid
    behind = watch_choice(late, spot_back, now=T0 + 3600, launched_at=T0, progress_hours=1.0, tick_seconds=60)
    assert behind.action == ON_DEMAND and behind.commit


def test_the_watch_leaves_on_demand_only_for_spot_seen_there_for_half_an_hour() -> None:
    spot_back = {"us-east-1a": True}
    now = T0 + 3600
    kw = {"now": now, "launched_at": T0, "progress_hours": 2.5, "tick_seconds": 60}
    just_seen = watch_choice(ctx(), spot_back, spot_since={"us-east-1a": now - 120}, **kw)
    assert just_seen.action == ON_DEMAND  # a flicker would burn two changeovers of slack
    lasted = watch_choice(ctx(), spot_back, spot_since={"us-east-1a": now - 1800}, **kw)
    assert lasted.action == STOP and lasted.pool == "us-east-1a"


def test_a_decision_reads_as_what_why_and_the_predicted_finish() -> None:
    chooser = LaunchChooser(ctx(), point="launch", tick_seconds=15, clock_now=lambda: T0 + 3600)
    _, _, record = chooser(PAIRS, {}, 0.0)
    assert record is not None
    line = decision_line(record.to_dict())
    assert line.startswith(f"spot in {pool_name(PAIRS[0], PAIRS)}")
    assert "0.60 h behind the line to 10:00" in line  # an hour in, no progress: behind 6 h / 10 h
    assert "predicted finish 07:12 UTC" in line  # 1 h + a changeover + 6 h of work


def test_placement_scores_say_which_pools_have_spot_now() -> None:
    pools = pool_zones(["g5.xlarge"], ["us-east-1a", "us-east-1b", "us-east-1a"])
    assert pools == {"us-east-1a": "us-east-1a", "us-east-1b": "us-east-1b"}  # one type: named by the zone
    assert pools_from_scores(pools, {"us-east-1a": 9, "us-east-1b": 3}) == {"us-east-1a": True, "us-east-1b": False}
    assert pools_from_scores(pools, {"us-east-1a": 7}) == {"us-east-1a": True, "us-east-1b": None}
    assert pools_from_scores(pools, None) == {"us-east-1a": None, "us-east-1b": None}  # no permission: unknown
    two = pool_zones(["g5.xlarge", "g4dn.xlarge"], ["us-east-1a"])
    assert two == {"us-east-1a:g5.xlarge": "us-east-1a", "us-east-1a:g4dn.xlarge": "us-east-1a"}


def test_the_fleet_record_steers_the_policy_away_from_a_pool_whose_sessions_die_young() -> None:
    """Both zones answer spot; the fleet record says sessions in us-east-1a lasted 3 minutes (less than a
    changeover) and in us-east-1b 5 hours: the policy names 1b and its attempt goes first. Without the record
    it has no reason to prefer 1b over the author's order."""
    from airflow_grid_resume.spot import fleetrecord
    from airflow_grid_resume.spot.fleetrecord import Observation

    short, long = PAIRS[0].pool(SPOT), PAIRS[1].pool(SPOT)
    record = fleetrecord.apply(
        None,
        [
            *(Observation(short, fleetrecord.INTERRUPTED, T0 - 3600 + i, 180.0, f"a{i}") for i in range(3)),
            *(Observation(long, fleetrecord.ENDED, T0 - 3600 + i, 5 * 3600.0, f"b{i}") for i in range(3)),
            *(Observation(p, fleetrecord.CAPACITY, T0 - 60, None, f"c{p}") for p in (short, long)),
        ],
    )
    roomy = ctx(progress_hours=3.0)
    with_record = LaunchChooser(roomy, point="launch", tick_seconds=15, clock_now=lambda: T0 + 60, record=record)
    market, first, decision = with_record(PAIRS, {}, 0.0)
    assert (market, first) == (SPOT, (PAIRS[1].key,))
    assert getattr(decision, "pool", None) == "us-east-1b"
    planner = LaunchPlanner(PAIRS, run_uri="s3://b/r", session=1, chooser=with_record)
    assert planner.round(0.0, 0.0)[0].pair.zone == "us-east-1b"
    blind = LaunchChooser(roomy, point="launch", tick_seconds=15, clock_now=lambda: T0 + 60)
    assert blind(PAIRS, {}, 0.0)[1] == (PAIRS[0].key,)


def test_sessions_that_finished_quickly_are_not_short_spells_to_the_policy() -> None:
    """us-east-1a's three sessions finished after half an hour (runs that were done, never reclaimed) and
    us-east-1b's were reclaimed after 2 h: 1a has seen 1.5 h of spot and no end, 1b one end per 2 h, so the
    author's order stands. Sessions' mean lifetime (0.5 h against 2 h) would have called 1a's spot short-lived."""
    from airflow_grid_resume.spot import fleetrecord
    from airflow_grid_resume.spot.fleetrecord import Observation

    quick, reclaimed = PAIRS[0].pool(SPOT), PAIRS[1].pool(SPOT)
    record = fleetrecord.apply(
        None,
        [
            *(Observation(quick, fleetrecord.ENDED, T0 - 3600 + i, 1800.0, f"a{i}") for i in range(3)),
            *(Observation(reclaimed, fleetrecord.INTERRUPTED, T0 - 3600 + i, 2 * 3600.0, f"b{i}") for i in range(3)),
        ],
    )
    stats = pool_stats(record, quick)
    assert (stats.mean_up_hours, stats.mean_spell_hours) == (pytest.approx(0.5), pytest.approx(1.5))
    roomy = ctx(progress_hours=3.0)
    chooser = LaunchChooser(roomy, point="launch", tick_seconds=15, clock_now=lambda: T0 + 60, record=record)
    market, first, decision = chooser(PAIRS, {}, 0.0)
    assert (market, first) == (SPOT, (PAIRS[0].key,))
    assert getattr(decision, "pool", None) == "us-east-1a"


def short_spells_record(lasted: float | None, sessions: int = 15) -> dict:
    """A fleet record of the two zones: a quarter of the capacity answers had spot, and ``sessions`` spot sessions
    each were reclaimed 0.1 h after lasting half an hour (counted as lasting spells when ``lasted`` is given)."""
    from airflow_grid_resume.spot import fleetrecord
    from airflow_grid_resume.spot.fleetrecord import Observation

    observations = [
        Observation(p.pool(SPOT), kind, T0 + i, None, f"{p.zone}-{kind}-{i}")
        for p in PAIRS
        for i, kind in enumerate([fleetrecord.CAPACITY] + [fleetrecord.NO_CAPACITY] * 3)
    ] + [
        Observation(p.pool(SPOT), fleetrecord.INTERRUPTED, T0 + 10 + i, 0.6 * 3600, f"{p.zone}-s{i}")
        for p in PAIRS
        for i in range(sessions)
    ]
    return fleetrecord.apply(None, observations, lasted_hours=lasted)


def test_the_fleet_records_lasting_spells_reach_the_policy_as_in_the_replay() -> None:
    """30 spot sessions in the two zones, each reclaimed 0.1 h after lasting half an hour: the record's whole
    history says a return from on-demand (0.9 h at these prices) never pays, so with no spot now and 1 h of slack,
    under the line, the policy has no line and waits down to the net. The same record written before it kept
    lasting spells (no counters: an older record) leaves the rule off: with 5 sessions a zone the policy keeps
    its line; with 15, the 30 reclaimed sessions of 0.6 h are spells enough for the window's own rule, which
    speaks where the whole history is thin."""

    # A 50 h run of 40 h of work, 30 h in with 21 h done: 1 h of slack, under the line (1.11 h), above the net.
    late = ctx(
        deadline_at=T0 + 50 * 3600,
        work_hours=40.0,
        progress_hours=21.0,
        on_demand_price=3.0,
        spot_prices={"us-east-1a": 1.0, "us-east-1b": 1.0},
    )
    now, no_spot = T0 + 30 * 3600, {p.key: False for p in PAIRS}

    def choose(record: dict | None) -> tuple[str, str]:
        chooser = LaunchChooser(late, point="capacity", tick_seconds=600, clock_now=lambda: now, record=record)
        market, _, decision = chooser(PAIRS, no_spot, 3600.0)
        return market, str(getattr(decision, "reason", ""))

    history = {pool_name(p, PAIRS): pool_stats(short_spells_record(LASTED_HOURS), p.pool(SPOT)) for p in PAIRS}
    view = late.view(now, pools={"us-east-1a": False, "us-east-1b": False}, history=history)
    assert [(p.lasting_hours, p.lasting_spells) for p in view.pools] == [(pytest.approx(0.1), 15)] * 2
    assert [(p.availability, p.mean_up_hours) for p in view.pools] == [(0.25, pytest.approx(0.6))] * 2
    assert [p.mean_up_spells for p in view.pools] == [15, 15]  # the mean is over each zone's 15 reclaimed sessions
    market, reason = choose(short_spells_record(LASTED_HOURS))
    assert market == WAIT and "no reserve pays here" in reason and "line" not in reason

    older_stats = pool_stats(short_spells_record(None), PAIRS[0].pool(SPOT))
    older = late.view(now, pools={"us-east-1a": False}, history={"us-east-1a": older_stats})
    assert (older.pools[0].lasting_hours, older.pools[0].lasting_spells) == (None, 0)
    for without in (short_spells_record(None, sessions=5), None):
        market, reason = choose(without)
        assert market == ON_DEMAND and "behind the line" in reason
    market, reason = choose(short_spells_record(None))
    assert market == WAIT and "no reserve pays here" in reason
    unknown = late.view(now, pools={"us-east-1c": False}, history=history)
    assert (unknown.pools[0].lasting_hours, unknown.pools[0].lasting_spells) == (None, None)
    assert unknown.pools[0].mean_up_spells is None


def test_the_watch_stops_on_demand_to_wait_where_the_fleet_record_rules_out_a_return() -> None:
    """On on-demand with 4 h of slack and no spot now, in pools whose whole history (the fleet record) says a
    return from on-demand never pays: waiting for spot from idle saves 0.25 * 2 - 0.25 / 0.6 * 0.6 = 0.25 per
    hour, more than the restart's on-demand changeover, so the watch asks for a planned stop to wait. With 1 h of
    slack, or without the record, it stays on on-demand."""
    run = ctx(
        deadline_at=T0 + 50 * 3600,
        work_hours=40.0,
        on_demand_price=3.0,
        spot_prices={"us-east-1a": 1.0, "us-east-1b": 1.0},
    )
    pools = pool_zones(["g5.xlarge"], ["us-east-1a", "us-east-1b"])
    history = pool_history(short_spells_record(LASTED_HOURS), ["g5.xlarge"], pools.values())
    assert set(history) == set(pools) and history["us-east-1a"].lasting_spells == 15
    no_spot = {name: False for name in pools}
    kw = {"now": T0 + 30 * 3600, "launched_at": T0 + 20 * 3600, "tick_seconds": 60}
    stop = watch_choice(run, no_spot, progress_hours=24.0, history=history, **kw)
    assert (stop.action, stop.pool) == (STOP, None)
    assert decision_line(stop.to_dict()).startswith("planned stop, to wait for spot: leave on-demand")
    assert watch_choice(run, no_spot, progress_hours=21.0, history=history, **kw).action == ON_DEMAND
    assert watch_choice(run, no_spot, progress_hours=24.0, **kw).action == ON_DEMAND
    assert pool_history(None, ["g5.xlarge"], pools.values()) == {}


def test_the_watch_returns_to_spot_on_the_fleet_records_lasting_sessions() -> None:
    """Spot sessions in us-east-1a: 40 reclaimed after 0.1 h and 10 after 3 h, so 0.68 h per interruption (too
    short to pay a return from on-demand at these prices: 0.9 h), but the 10 that lasted half an hour went on
    2.5 h past it. Spot there for half an hour now: the watch stops on-demand to go back to spot. The same
    sessions in a record without the lasting counters (an older record) keep the session on on-demand."""
    from airflow_grid_resume.spot import fleetrecord
    from airflow_grid_resume.spot.fleetrecord import Observation

    pool = PAIRS[0].pool(SPOT)
    sessions = [0.1] * 40 + [3.0] * 10
    observations = [
        Observation(pool, fleetrecord.INTERRUPTED, T0 + i, hours * 3600, f"s{i}") for i, hours in enumerate(sessions)
    ]
    run = ctx(deadline_at=T0 + 50 * 3600, work_hours=40.0, on_demand_price=3.0, spot_prices={"us-east-1a": 1.0})
    now = T0 + 30 * 3600
    kw = {"now": now, "launched_at": T0 + 20 * 3600, "progress_hours": 24.0, "tick_seconds": 60}
    spot_back, since = {"us-east-1a": True}, {"us-east-1a": now - 1800}

    def choose(lasted: float | None) -> str:
        history = pool_history(
            fleetrecord.apply(None, observations, lasted_hours=lasted), ["g5.xlarge"], ["us-east-1a"]
        )
        stats = history["us-east-1a"]
        assert stats.mean_spell_hours == pytest.approx(0.68)
        if lasted is not None:
            assert (stats.lasting_hours, stats.lasting_spells) == (pytest.approx(2.5), 10)
        return watch_choice(run, spot_back, spot_since=since, history=history, **kw).action

    assert choose(LASTED_HOURS) == STOP
    assert choose(None) == ON_DEMAND
