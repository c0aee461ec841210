"""What the try that watched a session does once it ended: one pure decision, in the words the task log shows.

``GridRunOperator.on_session_end`` reads the counts from the ledger, calls :func:`session_verdict`, and carries the
answer out: report the run, fail it (a budget is spent, or ``max_run`` was reached), or end this try for a retry,
as an interruption (the next try resumes promptly) or a script failure (the user's ``retry_delay``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_grid_resume.ledger.status import SessionStatus, ended_status
from airflow_grid_resume.run.budgets import Budgets
from airflow_grid_resume.run.ending import ended_by, lease_refusal

REPORT = "report"  # the run succeeded: report it
FAIL_RUN = "fail-run"  # the run ends as failed, without retry
RETRY_INTERRUPTED = "retry-interrupted"  # this try ends for a prompt retry that resumes
RETRY_FAILED = "retry-failed"  # this try ends for a retry after the user's retry_delay
NEXT_SESSION = "next-session"  # a planned stop (deadline=: back to spot): this try launches the next session


def spends_budget(status: str | None) -> bool:
    """Whether a session that ended with ``status`` spends a budget, so its verdict needs the counts."""
    return ended_status(status, None) not in (SessionStatus.SUCCEEDED, SessionStatus.TIMEOUT, SessionStatus.STOPPED)


@dataclass(frozen=True)
class Verdict:
    action: str
    message: str = ""


def session_verdict(
    status: str | None,
    session: int,
    outcome: Mapping[str, Any] | None,
    *,
    closed_reason: str | None,
    interruptions: int,
    failures: int,
    budgets: Budgets,
    max_run: float | None,
) -> Verdict:
    """The verdict on ``session``, which ended with ``status`` (the watch's event; the agent's ``outcome`` when it
    wrote one). ``interruptions`` and ``failures`` count the run's sessions since it last ended, this one included.
    An interruption's message says what ended it; the operator adds where the next try resumes from."""
    ended = ended_status(status, None)
    if ended == SessionStatus.SUCCEEDED:
        return Verdict(REPORT)
    if ended == SessionStatus.STOPPED:
        return Verdict(NEXT_SESSION, f"session {session} ended by a planned stop (checkpoint saved): back to spot")
    if ended == SessionStatus.TIMEOUT:
        limit = f"{max_run:.0f} s" if max_run else "the limit"
        return Verdict(FAIL_RUN, f"max_run ({limit}) reached in session {session}: the instance was terminated")
    outcome = outcome or {}
    reason = outcome.get("reason") or closed_reason
    exhausted = budgets.exhausted(
        ended.value,
        session,
        interruptions,
        failures,
        reason=reason,
        hint=outcome.get("hint"),
        cause=outcome.get("cause"),
    )
    tail = "\n".join(outcome.get("tail") or [])  # the script's last lines, for a failure's message
    if exhausted:
        return Verdict(FAIL_RUN, f"{exhausted}\n{tail}" if tail and ended == SessionStatus.FAILED else exhausted)
    if ended.is_interruption:
        how = ended_by({"outcome": dict(outcome), "closed": {"status": ended.value, "reason": closed_reason}})
        if lease_refusal(outcome):  # exit 3: the last session's agent still held the run, so this one ran nothing
            how += " (that agent had not ended yet; the next try takes over once it has)"
        return Verdict(RETRY_INTERRUPTED, how)
    hint = f" {outcome['hint']}" if outcome.get("hint") else ""  # the agent's own failure, e.g. a full disk
    return Verdict(RETRY_FAILED, f"session {session} failed: {reason}.{hint}\n{tail}")
