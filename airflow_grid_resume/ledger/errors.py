"""Errors the agent reports to its user, each with the process exit code it ends with."""

from __future__ import annotations

# Agent-level exit codes. A failed training command exits with its own code instead.
EXIT_OK = 0
EXIT_USAGE = 2
EXIT_LEASE_HELD = 3
EXIT_LEDGER_UNAVAILABLE = 4
EXIT_NO_RESTORABLE_CHECKPOINT = 5
EXIT_SYNC_FAILED = 75
EXIT_AGENT_CRASHED = 70  # EX_SOFTWARE: an unexpected error in the agent, recorded as a failed outcome


class AgentError(Exception):
    """An error that ends the session with a clear message and a specific exit code."""

    exit_code = EXIT_USAGE


class UsageError(AgentError):
    """Bad input from the user: a malformed URI, an unwritable directory, a bad option."""

    exit_code = EXIT_USAGE


class LedgerUnavailableError(AgentError):
    """The run ledger cannot be reached: missing bucket, no credentials, access denied."""

    exit_code = EXIT_LEDGER_UNAVAILABLE


class LeaseHeldError(AgentError):
    """Another live agent already holds this run."""

    exit_code = EXIT_LEASE_HELD


class NoRestorableCheckpointError(AgentError):
    """Checkpoints exist but none verifies; starting over would silently lose work."""

    exit_code = EXIT_NO_RESTORABLE_CHECKPOINT


class UnsafePathError(ValueError):
    """A path read back from the ledger would escape the execution directory."""


class ManifestError(ValueError):
    """A manifest is malformed or references something unusable."""


class CorruptObjectError(ValueError):
    """An object's bytes do not match the sha256 it is stored under."""


class UnsupportedFormatError(NoRestorableCheckpointError):
    """A ledger document has a newer format than this agent knows: it refuses rather than guess."""


def crash_hint(exc: BaseException) -> str:
    """What to do about an unexpected agent error, for the outcome and the task log."""
    import errno

    code = getattr(exc, "errno", None)
    if code == errno.ENOSPC:
        return "The instance's disk is full: raise root_volume_gb, or keep less in the working directory."
    if code in (errno.EACCES, errno.EPERM):
        return "A file in the working directory is not accessible to the agent: check its permissions."
    if code == errno.EMFILE:
        return "Too many open files: raise the instance's open-file limit (ulimit -n) or open fewer files."
    if isinstance(exc, MemoryError):
        return "The agent ran out of memory: use an instance type with more memory."
    return "This looks like a bug in grid-resume: the traceback is in the task log; please report it."
