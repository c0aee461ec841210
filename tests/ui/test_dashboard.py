"""The dashboard's answers and pictures from a night of runs: pure, no server (tests/ui/test_dashboard_browser.py
shows the same page in Chromium)."""

from __future__ import annotations

import re

from airflow_grid_resume.ui import charts, dashboard, model, render
from tests.ui.fleetdata import HOUR, NOW, night

SINCE = NOW - 7 * 86400


def test_last_night_against_deadlines_or_finish_times() -> None:
    rows = {r["label"]: r for r in dashboard.last_night(night(), now=NOW)}
    assert sorted(rows) == ["forecaster.train", "image_classifier.train", "ranker.train", "text_encoder.train"]
    t = NOW - 7 * HOUR
    assert (rows["ranker.train"]["start"], rows["ranker.train"]["end"]) == (t, t + 3 * HOUR)  # its wait included
    assert rows["text_encoder.train"]["deadline"] == NOW - HOUR  # read from an ISO-8601 deadline_at as well
    notes = {label: charts.deadline_note(r, NOW) for label, r in rows.items()}
    assert notes == {
        "ranker.train": "finished 04:00 UTC, 3.0 h before its deadline",
        "text_encoder.train": "finished 07:20 UTC, late by 20 min",
        "image_classifier.train": "finished 03:00 UTC",
        "forecaster.train": "running, 7.0 h so far",
    }
    svg = charts.runs_against_deadlines_svg(list(rows.values()), now=NOW)
    assert re.findall(r'data-run="([^"]+)"[^>]*data-late="(true|false)"', svg) == [
        (label, "true" if label == "text_encoder.train" else "false") for label in rows
    ]
    assert svg.count('class="deadline"') == 2


def test_cost_per_day_counts_each_session_on_its_launch_day() -> None:
    days = dashboard.cost_per_day(night(), since=SINCE, now=NOW)
    assert len(days) == 8 and days[-1]["day"] == "2027-01-15"  # every day of the period, empty ones too
    by_day = {d["day"]: d for d in days}
    assert by_day["2027-01-12"] == {"day": "2027-01-12", "spot_usd": 0.4, "on_demand_usd": 1.0}  # old_model's hour
    seconds = 10200 + 3540 + 1800 + 15540 + 7080 + 3300 + 20700  # last night's sessions, the running one until now
    assert abs(by_day["2027-01-15"]["spot_usd"] - 0.4 * seconds / HOUR) < 2e-3
    assert abs(by_day["2027-01-15"]["on_demand_usd"] - seconds / HOUR) < 2e-3
    assert sum(d["spot_usd"] for d in days if d["day"] not in ("2027-01-12", "2027-01-15")) == 0
    svg = charts.cost_per_day_svg(days)
    assert f'data-day="2027-01-15" data-series="spot" data-value="{by_day["2027-01-15"]["spot_usd"]:.4f}"' in svg


def test_interruptions_and_waits_per_pool() -> None:
    pools = dashboard.per_pool(night(), since=SINCE)
    assert [(p["pool"], p["interruptions"], p["waited_seconds"], p["sessions"]) for p in pools] == [
        ("g5.xlarge us-east-1b", 2, 3000.0, 3),
        ("g5.xlarge us-east-1a", 1, 660.0, 3),
        ("g4dn.xlarge us-east-1a", 0, 60.0, 2),
    ]
    recent = dashboard.per_pool(night(), since=NOW - 6 * HOUR)  # a shorter period: the sessions launched after 02:00
    assert [(p["pool"], p["interruptions"], p["waited_seconds"]) for p in recent] == [
        ("g5.xlarge us-east-1b", 1, 2700.0),
        ("g4dn.xlarge us-east-1a", 0, 60.0),
    ]


def test_budgets_of_the_runs_still_going() -> None:
    rows = dashboard.budget_rows(night())
    assert [(r["label"], r["budget"], r["used"], r["limit"], r["close"]) for r in rows] == [
        ("forecaster.train", "interruptions", 1, 2, True),
        ("forecaster.train", "failures", 0, 1, True),
    ]


def test_the_fleet_page_draws_all_four_pictures_in_airflows_theme() -> None:
    runs = night()
    board = model.fleet(runs, now=NOW, since=SINCE)
    html = render.fleet_page(
        board, days=7, run_link=lambda r: "/x", pictures=dashboard.pictures(runs, now=NOW, since=SINCE)
    )
    for test_id in ("chart-deadlines", "chart-cost", "chart-pools", "chart-budgets"):
        assert f"data-testid='{test_id}'><svg" in html, test_id
    assert "prefers-color-scheme: dark" in html and 'localStorage.getItem("theme")' in html
    assert "Inter, -apple-system" in html and "oklch(0.23185 0.0323 266.44)" in html  # Airflow's font and black


def test_a_quiet_period_says_so_instead_of_an_empty_picture() -> None:
    html = render.fleet_page(
        model.fleet([], now=NOW, since=SINCE),
        days=7,
        run_link=lambda r: "/x",
        pictures=dashboard.pictures([], now=NOW, since=SINCE),
    )
    assert "no run in the last 24 hours" in html and "no session launched in the period" in html
    assert "no run going with a budget" in html
