"""agent/unwatched.py: the guard that stops a session no Airflow trigger watches. Pure: no server."""

from __future__ import annotations


def test_unwatched_guard_counts_from_the_last_new_etag() -> None:
    from airflow_grid_resume.agent.unwatched import UnwatchedGuard

    guard = UnwatchedGuard(timeout=100.0, now=0.0)
    assert guard.due(0.0) and not guard.observe(None, 0.0)
    assert not guard.due(10.0) and guard.due(25.0)  # looks every timeout/4 (at most every minute)
    assert not guard.observe('"a"', 90.0)  # a watcher wrote: the clock restarts at 90
    assert not guard.observe('"a"', 180.0)  # same ETag: nobody wrote since 90
    assert guard.observe('"a"', 191.0) and guard.silent_for(191.0) == 101.0
    assert not UnwatchedGuard(timeout=0.0, now=0.0).due(1e9)  # 0 turns it off
    assert not guard.observe('"b"', 200.0)
