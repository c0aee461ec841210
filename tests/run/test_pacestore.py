"""run/pacestore.py: the task's pace record in the local spot cloud's S3, written by runs that end at once."""

from __future__ import annotations

import threading

import boto3
import pytest

from airflow_grid_resume.emulator.client import LocalSpotCloud
from airflow_grid_resume.run.pace import Pace
from airflow_grid_resume.run.pacestore import pace_uri, read_prior, record_run
from tests.conftest import cloud_bucket


@pytest.fixture
def artifacts(cloud: LocalSpotCloud, monkeypatch: pytest.MonkeyPatch) -> str:
    return f"s3://{cloud_bucket(cloud, monkeypatch, 'pace')}/grid-runs/"


def test_runs_of_a_task_ending_at_once_all_reach_its_pace_record(artifacts: str) -> None:
    uri = pace_uri(artifacts, "nightly", "train")
    assert uri.endswith("/grid-runs/nightly/train/pace.json")
    assert read_prior(boto3.client("s3"), uri) is None  # no run yet: the author's guess stands
    rates = [300.0, 400.0, 500.0]
    results: list[bool] = []

    def finish(i: int) -> None:  # each run ends on its own worker, with its own client
        pace = Pace(1.0, 1.0, 0.1, rates[i], 1200, 1200, True)
        results.append(record_run(boto3.client("s3"), uri, f"s3://b/grid-runs/nightly/train/run{i}", pace, 1e9 + i))

    threads = [threading.Thread(target=finish, args=(i,)) for i in range(len(rates))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * len(rates)
    prior = read_prior(boto3.client("s3"), uri)
    assert prior is not None and prior.runs == 3 and prior.total_steps == 1200
    assert prior.steps_per_hour == pytest.approx(400.0) and prior.changeover_hours == pytest.approx(0.1)


def test_a_run_that_measured_nothing_writes_nothing_and_mapped_instances_keep_their_own(artifacts: str) -> None:
    s3 = boto3.client("s3")
    blind = pace_uri(artifacts, "nightly", "train")
    assert not record_run(s3, blind, "run", Pace(5.0, 5.0, 0.2), 1e9)  # no progress lines: nothing to keep
    assert read_prior(s3, blind) is None
    first, second = (pace_uri(artifacts, "nightly", "train[x]", i) for i in (0, 1))
    assert first.endswith("/nightly/train_x_/pace-0.json") and second.endswith("/pace-1.json")
    assert record_run(s3, first, "run", Pace(1.0, 1.0, 0.2, 100.0, 10, 10), 1e9)
    assert read_prior(s3, second) is None
    assert read_prior(s3, first) is not None


def test_an_unreadable_record_is_no_prior_and_never_an_error(artifacts: str, caplog: pytest.LogCaptureFixture) -> None:
    s3 = boto3.client("s3")
    uri = pace_uri(artifacts, "nightly", "train")
    bucket, key = uri[len("s3://") :].split("/", 1)
    s3.put_object(Bucket=bucket, Key=key, Body=b"not json")
    assert read_prior(s3, uri) is None
    assert "could not read the task's pace record" in caplog.text
    missing = pace_uri("s3://no-such-bucket-here/grid-runs/", "nightly", "train")
    assert read_prior(s3, missing) is None
