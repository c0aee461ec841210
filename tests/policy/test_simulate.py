"""The replay model and the baselines' rules on hand-made traces, with costs and finishes worked out by hand.

Ticks are one hour (gap 3600 s) so the arithmetic is plain; changeover 0.5 h, spot 1, on-demand 3.
"""

from __future__ import annotations

import pytest

from airflow_grid_resume.policy.simulate import simulate
from airflow_grid_resume.policy.traces import Trace, TraceError

HOUR = 3600.0


def pool(name: str, *data: int) -> Trace:
    return Trace(name, HOUR, tuple(data))


def run(traces: list[Trace], work: float, deadline: float, policy: str, start: int = 0):
    prices = {t.name: 1.0 for t in traces}
    return simulate(traces, work, deadline, 0.5, prices, 3.0, start, policy)


def test_greedy_is_preempted_at_the_first_zero_tick_and_billing_stops_inside_the_last_tick() -> None:
    # tick 0: spot, changeover 0.5 + 0.5 progress; tick 1: 1.0 progress (1.5); tick 2: pool shows 0, preempted,
    # idle; tick 3: spot again, changeover 0.5, then 0.2 h finishes 1.7 h of work: billed 0.7 h of tick 3.
    result = run([pool("a", 1, 1, 0, 1, 1, 1)], work=1.7, deadline=10, policy="greedy")
    assert result.finish_hours == pytest.approx(3.7)
    assert result.spot_hours == pytest.approx(2.7)
    assert result.on_demand_hours == 0
    assert result.cost == pytest.approx(2.7)
    assert result.changeovers == 2
    assert result.deadline_met


def test_uniform_progress_catches_up_on_demand_then_commits_when_time_runs_short() -> None:
    # work 2 by 4 h: ep(t) = t / 2. Tick 0: on the line, idle. Tick 1: cp 0 < ep(1) = 0.5: on-demand (0.5 h
    # changeover, 0.5 progress). Tick 2: R = 2 < C + 2d = 1.5 + 1: on-demand to the end, spot ignored
    # (1.5). Tick 3: 0.5 h more, done at 3.5 h; 2.5 on-demand hours at 3.
    trace = pool("a", 0, 0, 1, 1, 1, 1)
    result = run([trace], work=2, deadline=4, policy="uniform-progress")
    assert (result.finish_hours, result.cost) == (pytest.approx(3.5), pytest.approx(7.5))
    assert (result.spot_hours, result.on_demand_hours, result.changeovers) == (0, pytest.approx(2.5), 1)
    assert result.deadline_met


def test_greedy_waits_until_its_safety_net_and_misses_by_a_tick() -> None:
    # Same trace: greedy idles at ticks 0 and 1 (R = 3 is not < C + 2d = 3), commits at tick 2 (R = 2 < 3),
    # pays 0.5 h of changeover and needs 2 h more: done at 4.5 h, after the 4 h deadline.
    result = run([pool("a", 0, 0, 1, 1, 1, 1)], work=2, deadline=4, policy="greedy")
    assert result.finish_hours == pytest.approx(4.5)
    assert result.cost == pytest.approx(7.5)
    assert not result.deadline_met


def test_baselines_take_the_first_listed_pool_with_spot() -> None:
    # Both pools show spot at tick 0: b, listed first, is taken; it goes at tick 1, a still has spot: a.
    # work 3 by 6 h: tick 0 changeover + 0.5 in b; tick 1 changeover + 0.5 in a (1.0); ticks 2-3 in a (3.0).
    b = pool("b", 1, 0, 0, 0, 0, 0, 0)
    a = pool("a", 1, 1, 1, 1, 1, 1, 1)
    for policy in ("uniform-progress", "greedy"):
        chosen: list[str | None] = []
        result = simulate(
            [b, a],
            3,
            6,
            0.5,
            {"a": 1.0, "b": 1.0},
            3.0,
            0,
            policy,
            lambda tick, view, d, chosen=chosen: chosen.append(d.pool),
        )
        assert chosen == ["b", "a", "a", "a"]
        assert (result.finish_hours, result.cost, result.changeovers) == (pytest.approx(4.0), pytest.approx(4.0), 2)


def test_uniform_progress_leaves_on_demand_for_spot_once_ahead_of_the_line() -> None:
    # work 2 by 8 h, ep(t) = t / 4. Ticks 0-1 idle (cp 0 = ep(0); tick 1: 0 < 0.25: on-demand, 0.5 progress).
    # Tick 2: on on-demand, cp 0.5 < ep(2 + 1) = 0.75: stay (1.5). Tick 3: cp 1.5 >= ep(4) = 1: spot in a
    # (changeover, 0.5: 2.0), done at 4 h. On-demand 2 h, spot 1 h, two changeovers.
    a = pool("a", 0, 0, 0, 1, 1, 1, 1, 1, 1)
    result = run([a], work=2, deadline=8, policy="uniform-progress")
    assert result.finish_hours == pytest.approx(4.0)
    assert (result.on_demand_hours, result.spot_hours, result.changeovers) == (
        pytest.approx(2.0),
        pytest.approx(1.0),
        2,
    )
    assert result.cost == pytest.approx(7.0)


def test_on_demand_runs_from_the_first_tick() -> None:
    result = run([pool("a", 1, 1, 1, 1)], work=2, deadline=3, policy="on-demand")
    assert (result.finish_hours, result.cost, result.spot_hours) == (pytest.approx(2.5), pytest.approx(7.5), 0)


def test_a_run_that_cannot_finish_before_the_trace_ends_has_no_cost_or_finish() -> None:
    result = run([pool("a", 1, 1)], work=5, deadline=9, policy="greedy")
    assert (result.cost, result.finish_hours, result.deadline_met) == (None, None, False)
    assert result.spot_hours == pytest.approx(2.0)


def test_the_replay_starts_at_the_given_tick() -> None:
    # From tick 2 the pool shows 1, 1: greedy finishes 1 h of work in 1.5 h on spot.
    result = run([pool("a", 0, 0, 1, 1, 0)], work=1, deadline=3, policy="greedy", start=2)
    assert (result.finish_hours, result.cost, result.start) == (pytest.approx(1.5), pytest.approx(1.5), 2)


def test_traces_with_different_ticks_are_refused() -> None:
    with pytest.raises(TraceError, match="gap_seconds"):
        simulate([pool("a", 1), Trace("b", 600.0, (1,))], 1, 2, 0.5, {"a": 1, "b": 1}, 3, 0)
