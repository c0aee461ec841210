"""Data transfer between the run's bucket and a session in another region, in the run's cost. Pure."""

from __future__ import annotations

import pytest

from airflow_grid_resume.ec2.prices import GB, transfer_usd_per_gb
from airflow_grid_resume.run.summary import session_transfer, summarize, summary_lines
from tests.run.test_summary import launch


def west(at: float) -> dict:
    """A session's launch in us-west-2 while the run's bucket is in us-east-1."""
    return {**launch(at), "zone": "us-west-2a", "region": "us-west-2", "bucket_region": "us-east-1"}


def moved(up: int, down: int) -> dict:
    return {"uploaded_bytes": up, "downloaded_bytes": down}


def test_the_rate_between_regions_is_aws_list_price_and_unknown_pairs_are_not_guessed() -> None:
    assert transfer_usd_per_gb("us-east-1", "us-east-1") == 0.0
    assert transfer_usd_per_gb("us-west-2", "us-east-1") == transfer_usd_per_gb("us-east-1", "us-west-2") == 0.02
    assert transfer_usd_per_gb("us-east-2", "us-east-1") == transfer_usd_per_gb("us-east-1", "us-east-2") == 0.01
    assert transfer_usd_per_gb("us-west-1", "us-east-2") == 0.02
    assert transfer_usd_per_gb("eu-west-1", "us-east-1") is None
    assert transfer_usd_per_gb("us-gov-west-1", "us-east-1") is None
    assert transfer_usd_per_gb(None, "us-east-1") is None


def test_a_session_in_another_region_pays_per_gb_moved_and_one_in_the_buckets_region_nothing() -> None:
    away = {"launch": west(0), "outcome": {"status": "succeeded", "transfer": moved(3 * GB, 2 * GB)}}
    assert session_transfer(away) == {"usd": 0.1, "bytes": 5 * GB, "at_least": False}
    near = {"launch": {**west(0), "region": "us-east-2"}, "outcome": {"transfer": moved(GB, GB)}}
    assert session_transfer(near)["usd"] == 0.02
    home = {"launch": {**west(0), "region": "us-east-1"}, "outcome": {"transfer": moved(GB, GB)}}
    assert session_transfer(home)["usd"] == 0.0
    one_region = {"launch": launch(0), "outcome": {"status": "succeeded"}}  # no bucket_region, no transfer
    assert session_transfer(one_region)["usd"] == 0.0


def test_a_lost_session_counts_from_its_heartbeat_at_least_and_one_never_started_moved_nothing() -> None:
    lost = {"launch": west(0), "outcome": None, "heartbeat": {"transfer": moved(GB, 0)}}
    assert session_transfer(lost) == {"usd": 0.02, "bytes": GB, "at_least": True}
    never = {"launch": west(0), "outcome": None, "heartbeat": None}
    assert session_transfer(never) == {"usd": 0.0, "bytes": 0, "at_least": False}
    older_agent = {"launch": west(0), "outcome": {"status": "succeeded"}}
    assert session_transfer(older_agent)["usd"] is None
    elsewhere = {"launch": {**west(0), "region": "eu-west-1"}, "outcome": {"transfer": moved(GB, 0)}}
    assert session_transfer(elsewhere)["usd"] is None  # no list price known for the pair: unknown, not 0


def test_the_runs_cost_includes_the_transfer_and_its_summary_says_how_much() -> None:
    records = [
        {
            "session": 1,
            "launch": west(0),
            "outcome": {"status": "succeeded", "ended_at": 3600.0, "transfer": moved(GB, 4 * GB)},
        }
    ]
    summary = summarize(records)
    assert summary["transfer_cost_usd"] == 0.1
    assert summary["session_details"][0]["transfer_cost_usd"] == 0.1
    assert summary["estimated_cost_usd"] == pytest.approx(0.30 + 0.1)
    assert summary["on_demand_cost_usd"] == pytest.approx(1.006 + 0.1)  # the same bytes move on demand
    lines = summary_lines(summary, run_uri="s3://b/r")
    assert "of which 0.100000 USD data transfer: 5120.0 MiB to and from the bucket" in lines[1]
    assert "including 0.100000 USD of data transfer between regions" in lines[2]
    unknown = summarize([{**records[0], "outcome": {"status": "succeeded", "ended_at": 3600.0}}])
    assert unknown["transfer_cost_usd"] is None and unknown["estimated_cost_usd"] is None


def test_a_one_region_run_says_nothing_of_transfer() -> None:
    summary = summarize([{"session": 1, "launch": launch(0), "outcome": {"status": "succeeded", "ended_at": 60.0}}])
    assert summary["transfer_cost_usd"] == 0.0
    assert not any("transfer" in line for line in summary_lines(summary, run_uri="s3://b/r"))
