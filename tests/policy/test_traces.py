"""What the replay tells the policy about a pool's past, and the seeded generator."""

from __future__ import annotations

import pytest

from airflow_grid_resume.policy.tracegen import POOL_SETS, PoolShape, generate, generate_set
from airflow_grid_resume.policy.traces import Trace, TraceError, trace_from_json


def test_history_counts_only_the_window_up_to_the_tick() -> None:
    trace = Trace("a", 3600.0, (1, 1, 0, 1, 0, 0, 1, 1, 1, 1))
    # ticks 0-5: 3 up ticks in 2 spells
    assert trace.history(5, 100) == (pytest.approx(3 / 6), pytest.approx(1.5))
    # ticks 7-9 (window 3): a spell that began at tick 6 counts once, 3 h long so far
    assert trace.history(9, 3) == (pytest.approx(1.0), pytest.approx(3.0))
    # nothing up in ticks 4-5: no spell length known
    assert trace.history(5, 2) == (0.0, None)


def test_a_trace_file_with_a_bad_field_is_named() -> None:
    with pytest.raises(TraceError, match="gap_seconds"):
        trace_from_json("a", {"metadata": {}, "data": [1]})
    with pytest.raises(TraceError, match=r"data\[1\]"):
        trace_from_json("a", {"metadata": {"gap_seconds": 600}, "data": [1, "x"]})
    assert trace_from_json("a", {"metadata": {"gap_seconds": 600}, "data": [0, 3]}).data == (0, 1)


def test_the_generator_is_seeded_and_shapes_availability() -> None:
    shape = PoolShape("p", 1.0, 3.0)
    assert generate(shape, 2000, seed=1) == generate(shape, 2000, seed=1)
    assert generate(shape, 2000, seed=1) != generate(shape, 2000, seed=2)
    share = sum(generate(shape, 20000, seed=1).data) / 20000
    assert 0.18 < share < 0.32  # 1 h up for 3 h down: a quarter of the time
    rare, *_ = generate_set(POOL_SETS["gen-rare"], 20000, seed=1)
    availability, mean_up = rare.history(19999, 20000)
    assert availability is not None and availability < 0.2
    assert mean_up is not None and mean_up < 1.0


def test_lasting_counts_the_spells_that_lasted_half_an_hour_once_they_ended() -> None:
    # Ten-minute ticks: a spell of 2 ticks (too short), one of 5 (0.33 h past half an hour), one still going.
    trace = Trace("p", 600.0, (1, 1, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1))
    views = trace.pool_views(1.0, 72)
    assert (views[7].lasting_hours, views[7].lasting_spells) == (None, 0)
    assert views[8].lasting_spells == 1
    assert views[8].lasting_hours == pytest.approx(2 / 6)
    assert views[12].lasting_spells == 1
    assert views[12].long_mean_up_hours == pytest.approx(11 / 6 / 3)
