"""How a session ended, read from its records: one status (``ledger.status``), and the words a user reads.

The agent's outcome decides when there is one; else the Airflow side's verdict (``closed.json``); else the session
was lost. The task log's summary, the operator's messages and the run view all say what ended a session through
:func:`ended_by`, so they never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_grid_resume.ledger.errors import EXIT_LEASE_HELD
from airflow_grid_resume.ledger.records import Closed, Lease, Outcome
from airflow_grid_resume.ledger.status import SessionStatus
from airflow_grid_resume.ledger.status import ended_status as _ended


def ended_status(outcome: Outcome | None, closed: Closed | None) -> SessionStatus:
    """What ended the session, from its typed records."""
    return _ended(outcome.status if outcome else None, closed.status if closed else None)


def session_status(record: Mapping[str, Any]) -> SessionStatus:
    """:func:`ended_status` of a record in its JSON form (``{"outcome": {...}, "closed": {...}}``)."""
    return _ended((record.get("outcome") or {}).get("status"), (record.get("closed") or {}).get("status"))


LEASE_HELD = "lease held by"  # how a session refused by a live lease (agent exit 3) is told apart


def lease_refusal(outcome: Mapping[str, Any] | None) -> str | None:
    """ "lease held by session N" when the session's agent ran nothing because another live agent holds
    the run (its exit 3, recorded as an ``interrupted`` outcome): a hold-up of the infrastructure,
    counted like an interruption, never a boot failure or a failure of the script. None otherwise."""
    if not outcome or outcome.get("agent_exit_code") != EXIT_LEASE_HELD:
        return None
    holder = outcome.get("lease_held_by")
    return f"{LEASE_HELD} session {holder}" if holder is not None else f"{LEASE_HELD} another agent"


def lease_holder_elsewhere(lease: Lease | None, session: int, now: float) -> int | None:
    """The live session (0 when unknown) whose lease keeps ``session`` out, when ``session`` never
    started: its agent exited 3 (lease held) without recording it, which is not a boot failure."""
    if lease is None or not lease.held(now) or lease.session == session:
        return None
    return lease.session or 0


def ended_by(record: Mapping[str, Any]) -> str:
    """What ended a session, in the words a user needs: spot notice, lost instance, script failure."""
    outcome = record.get("outcome") or {}
    closed = record.get("closed") or {}
    if not (outcome or closed):
        return "running"
    status = session_status(record)
    if status == SessionStatus.SUCCEEDED:
        return "succeeded"
    refused = lease_refusal(outcome)
    if refused:
        return f"ran nothing ({refused})"
    if status == SessionStatus.INTERRUPTED:
        source = (outcome.get("notice") or {}).get("source")
        if source == "unwatched":
            return "stopped: no Airflow trigger watched the run (checkpoint saved)"
        if source == "lease":
            return "stopped: another agent took over the run"
        if source == "signal":
            return "spot interruption (the instance was shut down)"
        if source == "scheduled":
            action = (outcome.get("notice") or {}).get("action") or "stop"
            return f"EC2 scheduled event: instance {action} (checkpoint saved)"
        return "spot interruption notice"
    if status == SessionStatus.LOST:
        reason = closed.get("reason") or "no heartbeat, no outcome"
        return f"instance lost without notice ({reason})"
    if status == SessionStatus.FAILED:
        code = outcome.get("exit_code")
        reason = outcome.get("reason") or closed.get("reason") or "unknown reason"
        return f"script failed with exit code {code}" if code is not None else f"failed: {reason}"
    if status == SessionStatus.TIMEOUT:
        return "max_run reached: instance terminated"
    if status == SessionStatus.STOPPED:
        return "planned stop: the deadline policy went back to spot (checkpoint saved)"
    return str(status)
