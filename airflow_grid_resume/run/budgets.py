"""Whether a run may go on after one of its sessions ended: the interruption and failure budgets.

One judgement for the try that sees the session end (``on_session_end``) and for the try after it,
which judges again when the one before died between recording its verdict (``closed.json``) and acting
on it: a budget is spent from the ledger's records, so a try lost in between cannot overspend it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from airflow_grid_resume.ledger.records import CAUSE_DISK_FULL, CAUSE_IMAGE, CAUSE_TAMPERED
from airflow_grid_resume.ledger.status import SessionStatus, counts_as_interruption
from airflow_grid_resume.run.ending import LEASE_HELD


@dataclass(frozen=True)
class Budgets:
    """What the operator allows: ``max_interruptions`` interruptions (when ``auto_resume``) and
    ``failure_retries`` script failures, counted since the run last ended."""

    auto_resume: bool
    max_interruptions: int
    failure_retries: int

    def exhausted(
        self,
        status: str,
        session: int,
        interruptions: int,
        failures: int,
        *,
        reason: str | None = None,
        hint: str | None = None,
        cause: str | None = None,
    ) -> str | None:
        """Why the run must fail now that ``session`` ended with ``status`` (the counts include it), in
        the words the task log shows; None when the next session may start. A failure that is not the
        script's and that every retry would meet again (``cause`` disk_full: the checkpoint does not fit
        on the instance's disk) fails the run at once, whatever the budget."""
        if status == SessionStatus.FAILED and cause == CAUSE_DISK_FULL:
            return f"session {session} could not restore: {reason}. {hint or ''}".rstrip()
        if status == SessionStatus.FAILED and cause == CAUSE_IMAGE:  # the image cannot run the agent, ever
            return f"session {session} could not start on this image: {reason}"
        if status == SessionStatus.FAILED and cause == CAUSE_TAMPERED:  # a security matter: a person must look
            return f"session {session} refused to start: {reason}"
        what = "interrupted" if status == SessionStatus.INTERRUPTED else f"lost ({reason})"
        if status == SessionStatus.INTERRUPTED and str(reason or "").startswith(
            LEASE_HELD
        ):  # refused by a live lease (exit 3)
            what = f"interrupted ({str(reason).split(':')[0]})"
        if counts_as_interruption(status):
            if not self.auto_resume:
                return f"session {session} was {what} and auto_resume is off"
            if interruptions > self.max_interruptions:
                return (
                    f"interruption budget exhausted: {interruptions} interruptions > max_interruptions="
                    f"{self.max_interruptions} (session {session} was {what})"
                )
            return None
        if status == SessionStatus.FAILED and failures > self.failure_retries:
            return (
                f"script failure budget exhausted: {failures} failures > retries={self.failure_retries}. "
                f"Session {session}: {reason}. {hint or ''}"
            )
        return None


def counted_after(final_status: str | None, final_session: int | None) -> int:
    """The session after which budgets count: where a run that failed ended (a clear gives fresh budgets), else 0."""
    return (final_session or 0) if final_status not in (None, SessionStatus.SUCCEEDED.value) else 0


def budget_use(
    statuses: Iterable[tuple[int, str]],
    *,
    final_status: str | None,
    final_session: int | None,
    before: int | None = None,
) -> tuple[int, int]:
    """(interruptions, failures) among ``(session, status)`` since the run last ended (a clear after a failed run
    gives fresh budgets; ``final.json`` says where it ended) and before session ``before``: what the operator
    spends and what the run view shows as used."""
    after = counted_after(final_status, final_session)
    counted = [status for session, status in statuses if after < session and (before is None or session < before)]
    interruptions = sum(1 for status in counted if counts_as_interruption(status))
    return interruptions, counted.count(SessionStatus.FAILED.value)


def first_try_of_cycle(try_number: int | None, max_tries: int | None, retries: int) -> bool:
    """True for the first try after the task was (re)started or cleared, False for Airflow's retries.
    Airflow sets ``max_tries = try_number + retries`` on a clear and reads the cycle's first try as
    ``max_tries - retries + 1`` (``RuntimeTaskInstance.get_first_reschedule_date``); unknown counts are
    taken as a retry, so a budget is never reset on a guess."""
    if not try_number or max_tries is None:
        return False
    return try_number <= max_tries - retries + 1
