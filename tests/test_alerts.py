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


def test_the_operator_registers_its_alert_on_its_dag_and_mapped_tasks_register_one() -> None:
    from airflow_grid_resume.operators import GridRunOperator

    callback = AsyncCallback(notify)
    common = {"instance_types": ["g5.xlarge"], "image_id": "ami-1", "subnet_ids": ["subnet-1"], "aws_conn_id": None}
    with DAG("nightly", schedule=None) as dag:
        GridRunOperator(
            task_id="train",
            command="python3 train.py",
            artifacts_uri="s3://b/runs/",
            deadline=timedelta(hours=7),
            expected_runtime=timedelta(hours=5),
            deadline_alert=callback,
            **common,
        )
        GridRunOperator.partial(
            task_id="sweep",
            artifacts_uri="s3://b/runs/",
            deadline=datetime(2026, 1, 1, 7, tzinfo=timezone.utc),
            expected_runtime=3600,
            deadline_alert=callback,
            **common,
        ).expand(command=["python3 a.py", "python3 b.py"])
    assert [a.name for a in dag.deadline] == ["train deadline", "sweep deadline"]
    train, sweep = dag.deadline
    assert train.interval == timedelta(hours=7) and train.callback == callback
    assert sweep.reference.serialize_reference()["datetime"] == datetime(2026, 1, 1, 7, tzinfo=timezone.utc).timestamp()
    # The serialized DAG, as the dag-processor stores it for the scheduler, carries both.
    from airflow.serialization.serialized_objects import DagSerialization

    assert len(DagSerialization.from_dict(DagSerialization.to_dict(dag)).deadline) == 2


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({}, "needs deadline="),
        ({"deadline": "{{ data_interval_end }}", "expected_runtime": 60}, "cannot follow the template deadline"),
    ],
)
def test_an_alert_the_operator_cannot_register_says_what_to_fix(kwargs: dict, words: str) -> None:
    from airflow_grid_resume.operators import GridRunOperator

    common = {"instance_types": ["g5.xlarge"], "image_id": "ami-1", "subnet_ids": ["subnet-1"], "aws_conn_id": None}
    with DAG("nightly", schedule=None), pytest.raises(ValueError, match=words):
        GridRunOperator(
            task_id="train",
            command="x",
            artifacts_uri="s3://b/runs/",
            deadline_alert=AsyncCallback(notify),
            **common,
            **kwargs,
        )
    with pytest.raises(ValueError, match="inside `with DAG"):
        GridRunOperator(
            task_id="train",
            command="x",
            artifacts_uri="s3://b/runs/",
            deadline=timedelta(hours=1),
            expected_runtime=60,
            deadline_alert=AsyncCallback(notify),
            **common,
        )
