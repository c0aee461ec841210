"""A night of runs as their ledgers would tell it, for the dashboard's tests (pure and in the browser)."""

from __future__ import annotations

import time
from typing import Any

from airflow_grid_resume.ui import dashboard, model

HOUR = 3600.0
NOW = 1_800_000_000.0 - (1_800_000_000.0 % 86400) + 8 * HOUR  # 08:00 UTC, the morning after
LAUNCH = {"lifecycle": "spot", "spot_price": 0.4, "on_demand_price": 1.0}


def session(
    n: int,
    pool: tuple[str, str],
    launched: float,
    ended: float | None,
    status: str | None,
    *,
    waited: float = 0.0,
) -> dict[str, Any]:
    """One session's documents: launched at ``launched`` after ``waited`` s of capacity wait; ``status`` None:
    still running."""
    record: dict[str, Any] = {
        "session": n,
        "launch": {
            **LAUNCH,
            "instance_id": f"i-{n}{int(launched) % 1000}",
            "instance_type": pool[0],
            "zone": pool[1],
            "launched_at": launched,
            "waited_seconds": waited,
        },
        "outcome": None,
        "closed": None,
    }
    if status is not None:
        record["outcome"] = {"status": status, "ended_at": ended, "exit_code": 0 if status == "succeeded" else None}
        record["closed"] = {"status": status, "at": ended}
    else:
        record["heartbeat"] = {"epoch": NOW - 5, "state": "running", "progress": {"done": 10, "total": 100}}
    return record


def run(
    dag_id: str,
    sessions: list[dict[str, Any]],
    *,
    deadline: float | str | None = None,
    limits: tuple[int, int] = (5, 1),
) -> dict[str, Any]:
    """A run as the dashboard gets it: the view model of its documents, its deadline from its deadline.json."""
    last = sessions[-1]
    final_status = (last.get("outcome") or {}).get("status")
    finished = final_status in ("succeeded", "failed")
    docs = {
        "run_uri": f"s3://bucket/grid-runs/{dag_id}/train/r1",
        "spec": {"budgets": {"max_interruptions": limits[0], "failure_retries": limits[1]}},
        # deadline.json of a deadline= run, as ui/source.py reads it
        "deadline": None if deadline is None else {"deadline_at": deadline, "expected_hours": 5.0},
        "final": {"status": final_status, "session": last["session"]} if finished else None,
        "sessions": sessions,
        "manifests": [],
    }
    ti_state = ("success" if final_status == "succeeded" else "failed") if finished else "deferred"
    tries = [{"try_number": 1, "state": ti_state, "start_date": sessions[0]["launch"]["launched_at"] - 1}]
    view = model.run_view(docs, tries, now=NOW, ti_state=ti_state)
    return {
        "dag_id": dag_id,
        "task_id": "train",
        "run_id": "r1",
        "map_index": -1,
        "ti_state": ti_state,
        "view": view,
        "deadline": dashboard.run_deadline(docs),
    }


G5A, G5B, G4A = ("g5.xlarge", "us-east-1a"), ("g5.xlarge", "us-east-1b"), ("g4dn.xlarge", "us-east-1a")


def night() -> list[dict[str, Any]]:
    """Last night: one run on time, one late (two interruptions), one without a deadline, one still going near
    its interruption budget; and one from three days ago."""
    t = NOW - 7 * HOUR  # 01:00 UTC
    return [
        run(
            "ranker",
            [session(1, G5A, t + 600, t + 3 * HOUR, "succeeded", waited=600)],
            deadline=NOW - HOUR,  # 07:00: finished at 04:00
        ),
        run(
            "text_encoder",
            [
                session(1, G5A, t + 60, t + HOUR, "interrupted", waited=60),
                session(2, G5B, t + HOUR + 1800, t + 2 * HOUR, "lost", waited=1800),
                session(3, G4A, t + 2 * HOUR + 60, NOW - 40 * 60, "succeeded", waited=60),
            ],
            deadline=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - HOUR)),  # 07:00, finished 07:20: late
        ),
        run("image_classifier", [session(1, G4A, t + 120, t + 2 * HOUR, "succeeded")]),
        run(
            "forecaster",
            [
                session(1, G5B, t + 300, t + HOUR, "interrupted", waited=300),
                session(2, G5B, t + HOUR + 900, None, None, waited=900),
            ],
            limits=(2, 1),
        ),
        run("old_model", [session(1, G5A, NOW - 3 * 86400, NOW - 3 * 86400 + HOUR, "succeeded")]),
    ]
