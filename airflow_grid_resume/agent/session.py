"""Claiming a session number and building the command's environment."""

from __future__ import annotations

import dataclasses
import os

from airflow_grid_resume.ledger import records
from airflow_grid_resume.ledger.errors import UsageError
from airflow_grid_resume.ledger.store import ConditionalWriteLost, RunLedger

# Environment variables the command sees (documented in docs/agent.md).
ENV_SESSION = "GRID_RESUME_SESSION"
ENV_RUN_URI = "GRID_RESUME_RUN_URI"
ENV_WORKDIR = "GRID_RESUME_WORKDIR"
ENV_RESUMED = "GRID_RESUME_RESUMED"
ENV_MANIFEST = "GRID_RESUME_MANIFEST"
ENV_INSTANCE_ID = "GRID_RESUME_INSTANCE_ID"


def claim_session(
    ledger: RunLedger, start: records.SessionStart, explicit: int | None = None, attempts: int = 20
) -> int:
    """Claim ``explicit`` or the next free session number by creating its start record (``start``
    with that number)."""
    if explicit is not None:
        if explicit < 1:
            raise UsageError(f"--session must be 1 or more, got {explicit}")
        if not _claim(ledger, start, explicit):
            raise UsageError(
                f"session {explicit} of {ledger.location} was already started by another agent; "
                "each session number runs once (omit --session to take the next one)"
            )
        return explicit
    candidate = (max(ledger.list_sessions(), default=0)) + 1
    for _ in range(attempts):
        if _claim(ledger, start, candidate):
            return candidate
        candidate += 1
    raise UsageError(f"could not claim a session number in {ledger.location} after {attempts} attempts")


def _claim(ledger: RunLedger, start: records.SessionStart, session: int) -> bool:
    """Create session ``session``'s start record; False if that number is taken (a 412 whose stored
    record is exactly ours was our own write with a lost answer: claimed)."""
    try:
        ledger.write_record(dataclasses.replace(start, session=session), session)
    except ConditionalWriteLost:
        return False
    return True


def command_env(
    base: dict[str, str], *, session: int, run_uri: str, workdir: str, manifest: str | None, instance_id: str | None
) -> dict[str, str]:
    env = dict(base)
    env.update(
        {
            ENV_SESSION: str(session),
            ENV_RUN_URI: run_uri,
            ENV_WORKDIR: os.path.abspath(workdir),
            # The workdir snapshot (session 0's manifest) is the start, not a checkpoint to resume from.
            ENV_RESUMED: "1" if manifest and not manifest.startswith("000000-") else "0",
            ENV_MANIFEST: manifest or "",
            ENV_INSTANCE_ID: instance_id or "",
        }
    )
    return env
