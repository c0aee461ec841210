"""Airflow's own deadline alert for a ``deadline=`` run, so the platform's alerting fires when the run is late.

``GridRunOperator(deadline=...)`` steers the run to finish in time; Airflow 3's DAG-level ``DeadlineAlert``
(``airflow.sdk``) is what tells someone when it did not, through the callback the team already uses. Airflow 3.3
evaluates deadline alerts per DAG run, against a reference it knows: a fixed datetime, or the time the run was
queued (which is at or before the task's first try, so an alert for a ``timedelta`` deadline never fires later
than the operator's deadline). A template deadline has no such reference: give the alert its own.

``GridRunOperator(deadline=..., deadline_alert=callback)`` registers the alert on its DAG itself
(``register_deadline_alert``); ``deadline_alert()`` is for a DAG that wants its own.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk.definitions.callback import AsyncCallback, SyncCallback
from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference


def deadline_alert(
    deadline: datetime | timedelta, callback: AsyncCallback | SyncCallback, *, name: str | None = None
) -> DeadlineAlert:
    """The ``DeadlineAlert`` matching a ``GridRunOperator`` ``deadline`` (a timezone-aware datetime, or a timedelta
    counted from when the DAG run was queued), for ``DAG(deadline=...)``."""
    if isinstance(deadline, timedelta):
        return DeadlineAlert(
            reference=DeadlineReference.DAGRUN_QUEUED_AT, interval=deadline, callback=callback, name=name
        )
    if isinstance(deadline, datetime):
        if deadline.tzinfo is None or deadline.utcoffset() is None:
            raise ValueError(f"deadline must be timezone-aware, got {deadline}")
        return DeadlineAlert(
            reference=DeadlineReference.FIXED_DATETIME(deadline), interval=timedelta(0), callback=callback, name=name
        )
    raise ValueError(
        "a deadline alert needs a datetime or a timedelta (a template is rendered only when the task runs: give the "
        f"alert a reference Airflow knows, e.g. DeadlineReference.DAGRUN_LOGICAL_DATE), got {deadline!r}"
    )


def register_deadline_alert(
    dag: Any, task_id: str, deadline: datetime | timedelta | str | None, callback: AsyncCallback | SyncCallback
) -> DeadlineAlert:
    """Add to ``dag``'s deadline alerts the one matching a task's ``deadline``: Airflow evaluates alerts per DAG
    run, so the task registers its alert on its DAG when it is created."""
    if dag is None:
        raise ValueError(
            f"deadline_alert registers an Airflow deadline alert on the task's DAG: create {task_id!r} inside "
            "`with DAG(...):` or pass dag="
        )
    if deadline is None:
        raise ValueError(f"deadline_alert needs deadline= on {task_id!r}: it alerts when that deadline is missed")
    if isinstance(deadline, str):
        raise ValueError(
            f"deadline_alert cannot follow the template deadline of {task_id!r} (rendered only when the task "
            "runs): give the DAG its own DeadlineAlert against a reference Airflow knows, e.g. "
            "DAG(deadline=DeadlineAlert(reference=DeadlineReference.DAGRUN_LOGICAL_DATE, interval=..., callback=...))"
        )
    alert = deadline_alert(deadline, callback, name=f"{task_id} deadline")
    dag.deadline = [*(dag.deadline or []), alert]
    return alert
