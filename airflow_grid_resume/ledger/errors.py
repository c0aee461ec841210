"""Errors the agent reports to its user, each with the process exit code it ends with."""

from __future__ import annotations

# Agent-level exit codes. A failed training command exits with its own code instead.
EXIT_USAGE = 2
EXIT_LEASE_HELD = 3
EXIT_LEDGER_UNAVAILABLE = 4
EXIT_NO_RESTORABLE_CHECKPOINT = 5
EXIT_DISK_FULL = 6  # the checkpoint does not fit on the instance's disk: no retry can succeed as configured
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


class BucketRulesError(LedgerUnavailableError):
    """The bucket refused a write for want of an option it requires (server-side encryption, a
    checksum for Object Lock): the message names the operator parameter to set."""


class LeaseHeldError(AgentError):
    """Another live agent already holds this run (``holder_session``: its session, when known)."""

    exit_code = EXIT_LEASE_HELD

    def __init__(self, message: str, holder_session: int | None = None) -> None:
        super().__init__(message)
        self.holder_session = holder_session


class NoRestorableCheckpointError(AgentError):
    """Checkpoints exist but none verifies; starting over would silently lose work."""

    exit_code = EXIT_NO_RESTORABLE_CHECKPOINT


class DiskFullError(AgentError):
    """The disk filled up while restoring: the instance's disk is too small for the checkpoint. Not a
    script failure, and the same on every retry until the volume is made larger."""

    exit_code = EXIT_DISK_FULL


class UnsafePathError(ValueError):
    """A path read back from the ledger would escape the execution directory."""


class UnstorablePathError(ValueError):
    """The workdir holds a path no checkpoint can hold (restore could not recreate it): sync refuses
    to commit a manifest without it rather than lose it silently."""

    def __init__(self, paths: list[tuple[str, str]]) -> None:
        self.paths = paths
        shown = "; ".join(why for _, why in paths[:5]) + (f"; and {len(paths) - 5} more" if len(paths) > 5 else "")
        super().__init__(
            f"cannot checkpoint {len(paths)} path(s) in the working directory: {shown}. Rename or move them, "
            "or leave them out with --exclude; nothing was committed (the run keeps its previous checkpoint)"
        )


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
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "The instance's disk is full: raise root_volume_gb, or keep less in the working directory."
    if code in (errno.EACCES, errno.EPERM):
        return "A file in the working directory is not accessible to the agent: check its permissions."
    if code == errno.EMFILE:
        return "Too many open files: raise the instance's open-file limit (ulimit -n) or open fewer files."
    if isinstance(exc, MemoryError):
        return "The agent ran out of memory: use an instance type with more memory."
    return "This looks like a bug in grid-resume: the traceback is in the task log; please report it."
