"""The run's own pace from its ledger records (run/pace.py), without servers."""

from __future__ import annotations

import pytest

from airflow_grid_resume.run.pace import (
    DEFAULT_CHANGEOVER_HOURS,
    PRIOR_RUNS,
    Pace,
    PriorPace,
    measure,
    prior_pace,
    session_pace,
    steps_per_hour,
    with_run,
)

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC


def record(session: int, launched: float, first: int, first_at: float, last: int, last_at: float, **kw: object) -> dict:
    progress = {"first": first, "last": last, "total": kw.get("total", 1000), "first_at": first_at, "last_at": last_at}
    return {
        "session": session,
        "launch": {"launched_at": launched, "lifecycle": kw.get("lifecycle", "spot")},
        "outcome": {"status": kw.get("status", "interrupted"), "progress": progress, "ended_at": last_at + 5},
    }


def test_the_rate_is_steps_over_the_hours_between_first_and_latest_progress_lines() -> None:
    # Session 1: steps 1..400 in 2 h; session 2 redid 50 steps (resumed at 351), 351..600 in 1 h.
    records = [
        record(1, T0, 1, T0 + 600, 400, T0 + 600 + 7200),
        record(2, T0 + 9000, 351, T0 + 9000 + 900, 600, T0 + 9000 + 900 + 3600),
    ]
    pace = measure(records, expected_hours=10.0, now=T0 + 20000)
    assert pace.steps_per_hour == pytest.approx((399 + 249) / 3.0)
    assert pace.work_hours == pytest.approx(1000 / pace.steps_per_hour)  # total / rate replaces the guess
    assert pace.progress_hours == pytest.approx(pace.work_hours * 0.6)
    # Changeover: launch to first progress (600 s, 900 s), plus the 50 steps session 2 redid at the rate.
    expected = ((600 / 3600) + (900 / 3600 + 50 / pace.steps_per_hour)) / 2
    assert pace.changeover_measured and pace.changeover_hours == pytest.approx(expected)


def test_without_progress_lines_the_guess_and_the_default_changeover_stand() -> None:
    records = [{"session": 1, "launch": {"launched_at": T0}, "closed": {"status": "lost", "at": T0 + 3600}}]
    pace = measure(records, expected_hours=5.0, now=T0 + 4000)
    assert pace.steps_per_hour is None and not pace.changeover_measured
    assert pace.work_hours == 5.0 and pace.changeover_hours == DEFAULT_CHANGEOVER_HOURS
    assert pace.progress_hours == pytest.approx(1.0 - DEFAULT_CHANGEOVER_HOURS)  # ran 1 h, minus its start


def test_a_running_session_is_read_from_its_heartbeat() -> None:
    beat = {"done": 30, "first": 1, "total": 100, "first_at": T0 + 60, "done_at": T0 + 60 + 290}
    running = {"session": 1, "launch": {"launched_at": T0}, "heartbeat": {"progress": beat}}
    s = session_pace(running)
    assert (s.first, s.last, s.total, s.last_at) == (1, 30, 100, T0 + 350)
    assert steps_per_hour([s]) == pytest.approx(29 * 3600 / 290)
    assert measure([running], expected_hours=1.0, now=T0 + 400).progress_hours == pytest.approx(
        measure([running], expected_hours=1.0, now=T0 + 400).work_hours * 0.3
    )


def test_one_step_is_not_a_rate() -> None:
    assert steps_per_hour([session_pace(record(1, T0, 5, T0 + 10, 6, T0 + 20))]) is None


# -- earlier runs of the same task --------------------------------------------------------------------


def test_before_the_run_measures_its_own_earlier_runs_pace_stands_in() -> None:
    # Two earlier runs went 500 and 700 steps an hour over 1200 steps, and took 0.1 h to start. A new run with
    # no progress line yet: 1200 steps at 600 an hour (2 h), not the author's 10 h guess; its changeover 0.1 h.
    doc = with_run(None, "r1", Pace(1.0, 1.0, 0.1, 500.0, 1200, 1200, True), T0)
    doc = with_run(doc, "r2", Pace(1.0, 1.0, 0.1, 700.0, 1200, 1200, True), T0 + 86400)
    prior = prior_pace(doc)
    assert prior == PriorPace(runs=2, steps_per_hour=600.0, total_steps=1200, changeover_hours=pytest.approx(0.1))
    started = [{"session": 1, "launch": {"launched_at": T0}}]
    pace = measure(started, expected_hours=10.0, now=T0 + 60, prior=prior)
    assert pace.work_hours == pytest.approx(2.0) and pace.changeover_hours == pytest.approx(0.1)
    assert pace.steps_per_hour is None and not pace.changeover_measured  # nothing of its own yet
    # Its first progress lines say 2400 steps this time (a bigger config): the earlier rate prices them at once.
    one = [record(1, T0, 1, T0 + 600, 2, T0 + 601, total=2400)]
    assert measure(one, expected_hours=10.0, now=T0 + 700, prior=prior).work_hours == pytest.approx(4.0)
    # Once it has its own rate (400 steps an hour), that is what counts.
    own = [record(1, T0, 1, T0 + 600, 401, T0 + 600 + 3600, total=2400)]
    assert measure(own, expected_hours=10.0, now=T0 + 5000, prior=prior).work_hours == pytest.approx(6.0)


def test_the_task_pace_record_keeps_the_latest_runs_once_each() -> None:
    pace = Pace(1.0, 1.0, 0.2, 100.0, 50, 50, False)
    doc = None
    for i in range(PRIOR_RUNS + 2):
        doc = with_run(doc, f"run{i}", pace, T0 + i)
    doc = with_run(doc, f"run{PRIOR_RUNS + 1}", Pace(1.0, 1.0, 0.2, 300.0, 60, 60, False), T0 + 99)
    assert doc is not None
    assert [r["run"] for r in doc["runs"]] == [f"run{i}" for i in range(2, PRIOR_RUNS + 1)] + [f"run{PRIOR_RUNS + 1}"]
    assert doc["runs"][-1]["steps_per_hour"] == 300.0 and doc["runs"][-1]["changeover_hours"] is None
    assert prior_pace(doc) == PriorPace(runs=PRIOR_RUNS, steps_per_hour=140.0, total_steps=60, changeover_hours=None)
    # A run without progress lines measured nothing: the record is left as it is.
    assert with_run(doc, "blind", Pace(5.0, 5.0, 0.2), T0) is None
    assert prior_pace(None) is None and prior_pace({"runs": []}) is None
