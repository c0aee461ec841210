"""The dashboard and the run view in Chromium (Debian's, driven by Playwright), as the plugin renders them, served
over HTTP from one origin like the api-server serves them: what the charts show (the bars' values and sizes, the
late run), and Airflow's theme, light and dark, by the system's preference or by Airflow's own choice.

(tests/ui/test_browser.py opens the same pages inside a real Airflow; this one looks closely at the pictures.)
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_grid_resume.ui import dashboard, model, render
from airflow_grid_resume.ui.theme import PALETTE
from tests.ui.fleetdata import NOW, night
from tests.ui.test_browser import CHROMIUM, HEADLESS_FLAGS
from tests.ui.test_model import T0, TRIES, _docs

SINCE = NOW - 7 * 86400


@pytest.fixture
def site(tmp_path: Path) -> Iterator[str]:
    """The fleet page and a run view, served from 127.0.0.1 (one origin: localStorage is shared as in Airflow)."""
    runs = night()
    board = model.fleet(runs, now=NOW, since=SINCE)
    pictures = dashboard.pictures(runs, now=NOW, since=SINCE)
    (tmp_path / "fleet.html").write_text(render.fleet_page(board, days=7, run_link=lambda r: "#", pictures=pictures))
    view = model.run_view(_docs(), TRIES, now=T0 + 500, ti_state="success")
    (tmp_path / "run.html").write_text(render.run_page(view, title="a run", now=T0 + 500))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=HEADLESS_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def _css_color(page: Any, value: str) -> str:
    """How this Chromium computes a colour value (oklch stays oklch, #fff becomes rgb(...))."""
    return page.evaluate(
        "v => { const e = document.createElement('i'); e.style.color = v; document.body.append(e);"
        " const c = getComputedStyle(e).color; e.remove(); return c; }",
        value,
    )


def _style(page: Any, selector: str, prop: str) -> str:
    return page.eval_on_selector(selector, f"e => getComputedStyle(e).getPropertyValue('{prop}')")


def test_the_charts_show_the_nights_runs_costs_pools_and_budgets(chromium: Any, site: str, tmp_path: Path) -> None:
    page = chromium.new_page(viewport={"width": 1000, "height": 1400})
    try:
        page.goto(f"{site}/fleet.html")
        deadlines = page.get_by_test_id("chart-deadlines")
        bars = deadlines.locator("rect.mark")
        assert bars.count() == 4
        late = deadlines.locator("rect.mark[data-late=true]")
        assert late.count() == 1 and late.get_attribute("data-run") == "text_encoder.train"
        assert "late by 20 min" in deadlines.inner_text() and "3.0 h before its deadline" in deadlines.inner_text()
        assert "finished 03:00 UTC" in deadlines.inner_text()  # no deadline: its finish time
        # the late bar ends to the right of its deadline mark, the punctual one well left of its own
        late_box = late.bounding_box()
        marks = deadlines.locator("line.deadline")
        assert marks.count() == 2
        assert late_box["x"] + late_box["width"] > marks.nth(1).bounding_box()["x"]

        cost = page.get_by_test_id("chart-cost")
        spot = cost.locator('rect[data-day="2027-01-15"][data-series="spot"]')
        on_demand = cost.locator('rect[data-day="2027-01-15"][data-series="on-demand"]')
        spot_usd, od_usd = float(spot.get_attribute("data-value")), float(on_demand.get_attribute("data-value"))
        assert 0 < spot_usd < od_usd
        # the bars' drawn heights are in the ratio of their values
        ratio = spot.bounding_box()["height"] / on_demand.bounding_box()["height"]
        assert abs(ratio - spot_usd / od_usd) < 0.02
        assert f"{od_usd - spot_usd:.2f} saved" in cost.inner_text()
        assert cost.locator("rect[data-series=spot]").count() == 8  # a bar for every day of the period

        pools = page.get_by_test_id("chart-pools")
        interruptions = pools.locator("rect[data-series=interruptions]")
        assert [interruptions.nth(i).get_attribute("data-pool") for i in range(3)] == [
            "g5.xlarge us-east-1b",
            "g5.xlarge us-east-1a",
            "g4dn.xlarge us-east-1a",
        ]
        widths = [interruptions.nth(i).bounding_box()["width"] for i in range(3)]
        assert widths[0] == pytest.approx(2 * widths[1], rel=0.02) and widths[2] == 0
        assert "50 min" in pools.inner_text()  # g5.xlarge us-east-1b waited 3000 s

        budgets = page.get_by_test_id("chart-budgets")
        assert budgets.locator("rect[data-close=true]").count() == 2
        assert "1 of 2 used" in budgets.inner_text()
    except BaseException:
        page.screenshot(path=str(tmp_path / "fleet.png"), full_page=True)
        raise
    finally:
        page.close()


@pytest.mark.parametrize(
    ("system", "airflow_choice", "expect"),
    [("light", None, "light"), ("dark", None, "dark"), ("light", "dark", "dark"), ("dark", "light", "light")],
    ids=["system-light", "system-dark", "airflow-dark", "airflow-light"],
)
def test_the_pages_take_airflows_colours_light_and_dark(
    chromium: Any, site: str, system: str, airflow_choice: str | None, expect: str
) -> None:
    context = chromium.new_context(color_scheme=system)
    try:
        page = context.new_page()
        page.goto(f"{site}/fleet.html")
        if airflow_choice:  # what Airflow's UI stores when the user picks a mode (same origin: same storage)
            page.evaluate(f"localStorage.setItem('theme', '{airflow_choice}')")
            page.reload()
        background = _css_color(page, PALETTE["white"] if expect == "light" else PALETTE["black"])
        text = _css_color(page, PALETTE["black"] if expect == "light" else PALETTE["gray.50"])
        assert _style(page, "body", "background-color") == background
        assert _style(page, "body", "color") == text
        assert _style(page, "body", "font-family").startswith("Inter, -apple-system")
        # chart marks in Airflow's state colours: success green.600, failed red.600, running cyan.600
        assert _style(page, "rect.mark.s-succeeded", "fill") == _css_color(page, PALETTE["green.600"])
        assert _style(page, "rect.mark.s-running", "fill") == _css_color(page, PALETTE["cyan.600"])
        assert _style(page, "rect.c-close", "fill") == _css_color(page, PALETTE["red.600"])
        assert _style(page, "th", "background-color") == _css_color(
            page, PALETTE["gray.100"] if expect == "light" else PALETTE["gray.900"]
        )
        page.goto(f"{site}/run.html")  # the run view and its timeline follow the same mode
        assert _style(page, "body", "background-color") == background
        assert _style(page, "svg.timeline .tl-bg", "fill") == background
        assert _style(page, "svg.timeline rect.tl-succeeded", "fill") == _css_color(page, PALETTE["green.600"])
    finally:
        context.close()
