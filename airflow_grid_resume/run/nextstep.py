"""What a try does next, from what the run's ledger and the task's state store say: one pure decision.

A try starts in ``GridRunOperator.execute`` knowing nothing but the ledger (the source of truth) and the state
store (what an earlier try of this task instance remembered): it may be the first try, a retry after an
interruption, a try whose predecessor died anywhere between launching and deferring, or a clear of a run that
ended long ago. :func:`choose_generation` decides which run the try belongs to, :func:`next_step` what it does in
it; the operator reads the ledger, calls them, and carries out the answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from airflow_grid_resume.ledger.status import SessionStatus


@dataclass(frozen=True)
class ReportSucceeded:
    """The run already succeeded in ``session``: report it, train nothing."""

    session: int | None
    note: str


@dataclass(frozen=True)
class StartFresh:
    """The run ended and ``rerun='fresh'``: start a new generation of it."""

    note: str


@dataclass(frozen=True)
class Resume:
    """Go on with the newest generation (``note``: why, when it had ended)."""

    note: str | None = None


def choose_generation(
    final_status: str | None, final_session: int | None, final_reason: str | None, rerun: str
) -> ReportSucceeded | StartFresh | Resume:
    """Which run a try belongs to, from how the newest generation ended (``final.json``; None: it has not)."""
    if final_status is None:
        return Resume()
    if rerun == "fresh":
        return StartFresh(f"the run ended ({final_status}) before; rerun='fresh': starting over")
    if final_status == SessionStatus.SUCCEEDED:
        return ReportSucceeded(
            final_session, f"the run already succeeded in session {final_session}; rerun='resume': nothing to run"
        )
    return Resume(
        f"the run failed before ({final_reason}); rerun='resume': resuming from its last checkpoint with fresh budgets"
    )


def final_contradiction(
    final_status: str | None, final_session: int | None, outcome_status: str | None, closed_status: str | None
) -> str | None:
    """Why a ``final.json`` saying the run succeeded is not believed, None when it is: the bucket is written by the
    instances too, so a forged one must not make a try report success without training. The session it names must
    have ended succeeded by the agent's outcome or by the Airflow side's verdict (``closed.json``)."""
    if final_status != SessionStatus.SUCCEEDED:
        return None
    if SessionStatus.SUCCEEDED in (outcome_status, closed_status):
        return None
    return (
        f"final.json says the run succeeded in session {final_session}, but that session's records say "
        f"{outcome_status or closed_status or 'nothing'}: not believed (written by someone else than this task?)"
    )


@dataclass(frozen=True)
class RunView:
    """What the ledger and the state store say about the sessions of one generation.

    ``latest`` is the newest session either knows of (the state store may know of one the ledger does not show
    yet); the other fields describe that session.
    """

    newest_in_ledger: int | None  # the newest session with a directory in the ledger
    newest_succeeded: bool  # that session's agent wrote a "succeeded" outcome
    latest: int  # 0: no session yet
    has_outcome: bool  # the agent's outcome.json of ``latest`` exists
    has_closed: bool  # the Airflow side's verdict (closed.json) of ``latest`` exists
    launched_instance: str | None = None  # ``launch.json``'s instance of ``latest``
    launched_at: float | None = None
    remembered_instance: str | None = None  # the state store's instance, when it remembers ``latest``
    remembered_launched_at: float | None = None


@dataclass(frozen=True)
class Reattach:
    """Session ``session`` is open on ``instance_id``: watch it (never launch a second instance for it)."""

    session: int
    instance_id: str
    launched_at: float | None


@dataclass(frozen=True)
class Launch:
    """Launch session ``session``. First, when set: close ``close_unwatched`` (a session that ended while no try
    watched it) and judge the budgets after ``judge`` (the try that saw it end may have died before acting)."""

    session: int
    close_unwatched: int | None = None
    judge: int | None = None


def next_step(view: RunView) -> ReportSucceeded | Reattach | Launch:
    """What the try does in this generation.

    At most one instance per session: a session that is not closed yet (neither the agent's outcome nor our
    verdict) is resumed, never skipped, whatever line of a try or a trigger died before. Such a session with no
    instance known anywhere is launched again under its own number, so its launches keep their ClientTokens.
    """
    if view.newest_succeeded and view.newest_in_ledger is not None:
        # Airflow re-running a try whose result it lost (the run ended before it was recorded).
        return ReportSucceeded(
            view.newest_in_ledger, f"the run already succeeded in session {view.newest_in_ledger}: nothing to run"
        )
    latest = view.latest
    if not latest:
        return Launch(1)
    if not view.has_outcome and not view.has_closed:
        instance = view.remembered_instance or view.launched_instance
        launched_at = view.remembered_launched_at if view.remembered_instance else view.launched_at
        if instance:
            return Reattach(latest, instance, launched_at)
        return Launch(latest)
    unwatched = latest if view.has_outcome and not view.has_closed else None
    return Launch(latest + 1, close_unwatched=unwatched, judge=latest)
