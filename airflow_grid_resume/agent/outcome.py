"""Classification of how a session ended. Pure: decided from what the agent knows, not only the code."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field

from airflow_grid_resume.ledger.status import SessionStatus

SUCCEEDED = SessionStatus.SUCCEEDED.value
INTERRUPTED = SessionStatus.INTERRUPTED.value
STOPPED = SessionStatus.STOPPED.value  # an interruption the Airflow side asked for (a planned stop)
FAILED = SessionStatus.FAILED.value

EXIT_COMMAND_NOT_FOUND = 127
EXIT_COMMAND_NOT_EXECUTABLE = 126


@dataclass(frozen=True)
class Classification:
    """The session's status, whether the child stopped cleanly, and why (for humans)."""

    status: str
    exit_code: int
    clean: bool
    reason: str
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def agent_exit_code(self) -> int:
        """0 for succeeded and interrupted; the child's own code (never 0) for failed."""
        if self.status == FAILED:
            return self.exit_code if self.exit_code != 0 else 1
        return 0


def shell_exit_code(returncode: int) -> int:
    """Popen's returncode as a shell reports it: a child killed by signal N exits 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def classify(returncode: int, *, signalled: bool, killed_after_deadline: bool = False) -> Classification:
    """Decide the outcome of a session.

    ``signalled`` means the agent sent SIGTERM to the child because of a notice; only then can
    the session count as interrupted. A child that saved its state exits 0 (the contract); 143
    (its default SIGTERM action) is accepted with a warning; anything else after the signal is
    an unclean interruption, as is a child the agent had to SIGKILL after the deadline.
    """
    code = shell_exit_code(returncode)
    if not signalled:
        if code == 0:
            return Classification(SUCCEEDED, 0, True, "the command exited 0")
        return Classification(FAILED, code, False, _failure_reason(code))
    if killed_after_deadline:
        return Classification(
            INTERRUPTED,
            code,
            False,
            "the command did not exit before the deadline after SIGTERM and was killed",
            ("work since the last committed checkpoint may be lost: make the script save and exit on SIGTERM",),
        )
    if code == 0:
        return Classification(INTERRUPTED, 0, True, "the command saved its state and exited 0 after SIGTERM")
    if code == 128 + signal.SIGTERM:
        return Classification(
            INTERRUPTED,
            code,
            True,
            "the command exited 143 after SIGTERM",
            ("the command died of SIGTERM (exit 143); the contract is to save state and exit 0",),
        )
    return Classification(
        INTERRUPTED,
        code,
        False,
        f"the command exited {code} after SIGTERM",
        (f"exit {code} after SIGTERM: the command may not have saved its state",),
    )


def _failure_reason(code: int) -> str:
    if code == EXIT_COMMAND_NOT_FOUND:
        return "the command was not found (exit 127)"
    if code == EXIT_COMMAND_NOT_EXECUTABLE:
        return "the command is not executable (exit 126)"
    if code > 128 and code - 128 < signal.NSIG:
        try:
            name = signal.Signals(code - 128).name
        except ValueError:
            name = f"signal {code - 128}"
        return f"the command was killed by {name} (exit {code}) without a notice"
    return f"the command exited {code}"
