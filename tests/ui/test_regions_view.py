"""The run view shows each session's region and the resolved types; the fleet dashboard the pools' record. Pure."""

from __future__ import annotations

import re

from airflow_grid_resume.spot import fleetrecord
from airflow_grid_resume.spot.fleetrecord import Observation
from airflow_grid_resume.ui import model, render
from tests.ui.test_model import T0, TRIES, _docs


def test_each_session_shows_its_region_and_the_resolved_types() -> None:
    docs = _docs()
    docs["sessions"][2]["launch"] = {
        **docs["sessions"][2]["launch"],
        "zone": "us-west-2b",
        "region": "us-west-2",
        "resolved_types": ["g6e.xlarge", "g6e.2xlarge"],
    }
    view = model.run_view(docs, TRIES, now=T0 + 500, ti_state="success")
    regions = {s["session"]: s["region"] for s in view["sessions"]}
    assert regions == {1: "us-east-1", 2: "us-east-1", 3: "us-west-2"}  # older records: from the zone's name
    html = render.run_page(view, title="t", now=T0 + 500)
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", html.split('data-testid="sessions"')[1].split("</table>")[0], re.S)
    assert "us-west-2" in rows[-1] and "us-west-2b" in rows[-1]
    assert "<th>region</th>" in html
    assert "g6e.xlarge, g6e.2xlarge" in html.split("data-testid='resolved-types'")[1].split("</p>")[0]


def test_the_fleet_dashboard_shows_each_pools_record() -> None:
    west = "us-west-2|us-west-2a|g5.xlarge|spot"
    east = "us-east-1|us-east-1a|g5.xlarge|spot"
    record = fleetrecord.apply(
        None,
        [
            Observation(west, fleetrecord.CAPACITY, 1.0),
            Observation(west, fleetrecord.ENDED, 2.0, 10 * 3600.0),
            Observation(west, fleetrecord.PRICE, 3.0, 0.45),
            Observation(east, fleetrecord.NO_CAPACITY, 1.0),
            Observation(east, fleetrecord.NO_CAPACITY, 2.0),
        ],
    )
    pools = model.pools([record, None])
    assert [p["pool"] for p in pools] == [west, east]  # the pool worth most first
    board = model.fleet([], now=T0, since=T0 - 86400)
    html = render.fleet_page({**board, "pools": pools}, days=1, run_link=lambda r: "#")
    table = html.split('data-testid="pools"')[1].split("</table>")[0]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)
    assert "us-west-2a" in rows[-2] and "100%" in rows[-2] and "10.0 h" in rows[-2] and "0.4500 USD/h" in rows[-2]
    assert "us-east-1a" in rows[-1] and "0%" in rows[-1]


def test_a_session_in_another_region_than_the_bucket_shows_its_data_transfer() -> None:
    docs = _docs()
    docs["sessions"][2]["launch"] = {
        **docs["sessions"][2]["launch"],
        "zone": "us-west-2b",
        "region": "us-west-2",
        "bucket_region": "us-east-1",
    }
    docs["sessions"][2]["outcome"] = {
        **docs["sessions"][2]["outcome"],
        "transfer": {"uploaded_bytes": 1 << 30, "downloaded_bytes": 1 << 30},
    }
    view = model.run_view(docs, TRIES, now=T0 + 500, ti_state="success")
    assert view["sessions"][2]["transfer_cost_usd"] == 0.04
    assert view["cost"]["transfer_usd"] == 0.04
    html = render.run_page(view, title="t", now=T0 + 500)
    assert "incl. 0.040000 USD transfer (2.0 GiB)" in html.split("data-testid='transfer'")[1]
    assert "including 0.040000 USD of data transfer between regions" in html.split("data-testid='cost'")[1]
    same = model.run_view(_docs(), TRIES, now=T0 + 500, ti_state="success")
    assert same["cost"]["transfer_usd"] == 0.0
    assert "data-testid='transfer'" not in render.run_page(same, title="t", now=T0 + 500)
