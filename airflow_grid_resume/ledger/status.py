"""How a session ended: one name per ending, and the rule that says which endings are interruptions.

The agent writes ``succeeded``, ``interrupted``, ``stopped`` (a planned stop the Airflow side asked for: it spends
no budget) or ``failed`` in its outcome; the Airflow side writes its own
verdict in ``closed.json`` when there is no outcome to read (``lost``: the instance went away without one;
``timeout``: ``max_run`` was reached and the instance terminated). An interruption and a lost instance spend the
interruption budget, a failure the failure budget.
"""

from __future__ import annotations

from enum import Enum


class SessionStatus(str, Enum):
    """A session's ending. A ``str`` enum: it is written to and compared with the ledger's JSON as is."""

    SUCCEEDED = "succeeded"
    INTERRUPTED = "interrupted"  # the agent stopped the command on a notice or SIGTERM, saved, and synced
    FAILED = "failed"  # the command (or the agent) failed
    LOST = "lost"  # ended without an outcome: the instance went away without one
    TIMEOUT = "timeout"  # max_run reached: the Airflow side terminated the instance
    STOPPED = "stopped"  # a planned stop the Airflow side asked for (deadline=: back to spot), saved and synced

    def __str__(self) -> str:
        return self.value

    @property
    def is_interruption(self) -> bool:
        """Spends the interruption budget (the next try resumes), not the failure budget."""
        return counts_as_interruption(self.value)


_INTERRUPTIONS = frozenset({"interrupted", "lost"})


def counts_as_interruption(status: str) -> bool:
    """The rule, for a status read as text (a view's ``running`` included): an interruption or a lost instance."""
    return status in _INTERRUPTIONS


def ended_status(outcome_status: str | None, closed_status: str | None) -> SessionStatus:
    """What ended the session: the agent's outcome, else the Airflow side's verdict, else lost."""
    value = outcome_status or closed_status or SessionStatus.LOST.value
    try:
        return SessionStatus(value)
    except ValueError:  # a status a newer writer knows: counted as what the budgets would do with it, a failure
        return SessionStatus.FAILED
