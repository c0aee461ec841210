"""Airflow's deadline alert for a deadline= run (alerts.py), on a real DAG."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from airflow.sdk import DAG, AsyncCallback

from airflow_grid_resume.alerts import deadline_alert


async def notify(**kwargs: object) -> None:  # a team's alert (Slack, PagerDuty...)
    return None


def test_the_alert_uses_the_same_deadline_as_the_operator() -> None:
    callback = AsyncCallback(notify)
    at = datetime(2026, 1, 1, 7, tzinfo=timezone.utc)
    with DAG(
        "nightly", schedule=None, deadline=[deadline_alert(at, callback), deadline_alert(timedelta(hours=7), callback)]
    ) as dag:
        pass
    fixed, relative = dag.deadline
    assert fixed.reference.serialize_reference()["datetime"] == at.timestamp() and fixed.interval == timedelta(0)
    assert type(relative.reference).__name__ == "DagRunQueuedAtDeadline" and relative.interval == timedelta(hours=7)


@pytest.mark.parametrize(
    ("deadline", "words"),
    [(datetime(2026, 1, 1, 7), "timezone-aware"), ("{{ data_interval_end }}", "template is rendered only")],
)
def test_what_cannot_be_an_alert_says_why(deadline: object, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        deadline_alert(deadline, AsyncCallback(notify))  # type: ignore[arg-type]
