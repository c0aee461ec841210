"""run/options.py: the operator's run parameters, each wrong one named at once. Pure: no server."""

from __future__ import annotations

from datetime import timedelta

import pytest

from airflow_grid_resume.run.options import RunOptions, seconds


def test_durations_are_seconds_whichever_way_they_are_given() -> None:
    assert seconds(timedelta(minutes=2)) == 120.0 and seconds(90) == 90.0 and seconds(None) is None


def test_every_wrong_parameter_is_named_in_one_error() -> None:
    with pytest.raises(ValueError) as err:
        RunOptions(
            command="  ",
            artifacts_uri="/local/path",
            max_interruptions=-1,
            capacity_wait=0.0,
            max_run=-5.0,
            interruption_retry_delay=-1.0,
            rerun="again",
            live_output="kafka",
            keep_checkpoints=0,
            on_demand_prices={"g5.xlarge": "cheap"},  # type: ignore[dict-item]  # the wrong input under test
        )
    message = str(err.value)
    for name in (
        "command",
        "artifacts_uri",
        "max_interruptions",
        "capacity_wait",
        "max_run",
        "interruption_retry_delay",
        "rerun",
        "live_output",
        "keep_checkpoints",
        "on_demand_prices['g5.xlarge']",
    ):
        assert name in message, name


def test_good_parameters_pass() -> None:
    options = RunOptions(command=("python", "train.py"), artifacts_uri="s3://b/runs/", max_run=None)
    assert options.problems() == [] and options.max_run is None
