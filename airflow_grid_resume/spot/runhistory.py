"""The operator's side of the fleet record: what the run's earlier sessions say of their pools (for the launch
order), and the observations a launch or a session's end adds to the record. Never fails a task: the record is
a convenience for the launch order, and every error here is logged and dropped."""

from __future__ import annotations

import logging
import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from airflow_grid_resume.ledger.errors import AgentError
from airflow_grid_resume.ledger.records import Closed, Outcome
from airflow_grid_resume.ledger.store import RunLedger
from airflow_grid_resume.ledger.writeoptions import S3WriteOptions
from airflow_grid_resume.spot import fleetstore
from airflow_grid_resume.spot.observe import answers_of_launch, end_of_session, run_state

LOOKBACK = 5  # earlier sessions read for the run's state

log = logging.getLogger(__name__)


def _ended(ledger: RunLedger, session: int) -> str | None:
    closed = ledger.read_record(Closed, session)
    if closed is not None and closed.status:
        return str(closed.status)
    outcome = ledger.read_record(Outcome, session)
    return str(outcome.status) if outcome is not None and outcome.status else None


def read_run_state(ledger: RunLedger, session: int) -> dict:
    """The run's state before ``session`` (plain JSON for the capacity trigger): the pool that reclaimed its
    last session, if one did, its recent pools and its interruptions per pool."""
    sessions = []
    try:
        for earlier in range(max(1, session - LOOKBACK), session):
            launch = ledger.read_launch(earlier)
            sessions.append((launch.to_dict() if launch else None, _ended(ledger, earlier)))
    except (ClientError, BotoCoreError, AgentError, ValueError) as exc:
        log.warning("could not read the run's earlier sessions for the launch order: %s", exc)
    return run_state(sessions).as_dict()


def record_launch(
    client: Any, uri: str, event: dict, run_uri: str, session: int, write: S3WriteOptions | None = None
) -> None:
    """A launcher event (launched or timed out): its capacity answers, the capacity found, the price paid."""
    try:
        fleetstore.add(client, uri, answers_of_launch(event, run_uri, session), write=write)
    except Exception as exc:  # the fleet record must never fail a launch
        log.warning("could not add the launch to the fleet record: %s", exc)


def record_session_end(uri: str, ledger: RunLedger, session: int, status: str | None, *, lasted_hours: float) -> None:
    """A session ended (now): how long it ran in its pool, and whether the pool reclaimed it; ``lasted_hours``
    what the deadline policy counts as a spell that lasted (``policy.view.LASTED_HOURS``: ``fleetrecord.apply``)."""
    try:
        launch = ledger.read_launch(session)
        at, run_uri = time.time(), str(ledger.location)
        observations = end_of_session(launch.to_dict() if launch else None, status, at, run_uri, session)
        fleetstore.add(ledger.client, uri, observations, write=ledger.write_options, lasted_hours=lasted_hours)
    except Exception as exc:
        log.warning("could not add the end of session %d to the fleet record: %s", session, exc)


__all__ = ["read_run_state", "record_launch", "record_session_end"]
