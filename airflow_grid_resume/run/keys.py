"""Where things of one task live under ``artifacts_uri``: S3-safe names for a task instance's run and for the
task itself (its pace record sits beside its runs)."""

from __future__ import annotations

import hashlib
import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]")


def _safe(part: str) -> str:
    return _UNSAFE.sub("_", part)


def run_key(dag_id: str, task_id: str, run_id: str, map_index: int) -> str:
    """A stable, S3-safe name for the run of one task instance: retries find the same run."""
    raw = f"{dag_id}/{task_id}/{run_id}" + (f"/{map_index}" if map_index >= 0 else "")
    safe = "/".join(_safe(part) for part in raw.split("/"))
    return safe if safe == raw else f"{safe}-{hashlib.sha256(raw.encode()).hexdigest()[:8]}"


def task_key(dag_id: str, task_id: str) -> str:
    """The task's folder, the one its runs' keys begin with."""
    return f"{_safe(dag_id)}/{_safe(task_id)}"


__all__ = ["run_key", "task_key"]
