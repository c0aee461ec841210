"""ledger/errors.py: errors and hints that say what to fix. Pure: no server."""

from __future__ import annotations

import errno

from airflow_grid_resume.ledger.errors import crash_hint


def test_crash_hints_say_what_to_fix() -> None:
    assert "root_volume_gb" in crash_hint(OSError(errno.ENOSPC, "No space left on device"))
    assert "bug" in crash_hint(KeyError("x"))
