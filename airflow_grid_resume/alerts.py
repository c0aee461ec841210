"""Airflow's own deadline alert for a ``deadline=`` run, so the platform's alerting fires when the run is late.

``GridRunOperator(deadline=...)`` steers the run to finish in time; Airflow 3's DAG-level ``DeadlineAlert``
(``airflow.sdk``) is what tells someone when it did not, through the callback the team already uses. Airflow 3.3
evaluates deadline alerts per DAG run, against a reference it knows: a fixed datetime, or the time the run was
queued (which is at or before the task's first try, so an alert for a ``timedelta`` deadline never fires later
than the operator's deadline). A template deadline has no such reference: give the alert its own.
"""

from __future__ import annotations

from datetime import datetime, timedelta

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
