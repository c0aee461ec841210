"""The run's own pace from its ledger records (run/pace.py), without servers."""

from __future__ import annotations

import pytest

from airflow_grid_resume.run.pace import DEFAULT_CHANGEOVER_HOURS, measure, session_pace, steps_per_hour

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
