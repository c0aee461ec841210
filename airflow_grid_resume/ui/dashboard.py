"""The fleet dashboard's morning questions, as pure functions over the runs' view models (``ui/model.py``'s
``run_view``): which of last night's runs met their deadlines, what spot cost and saved per day, which capacity
pools interrupted or kept runs waiting, which runs are close to a budget. ``ui/charts.py`` draws the answers.

A run here is ``{"dag_id", "task_id", "run_id", "map_index", "view", "deadline"}``; ``deadline`` is the run's
deadline in epoch seconds, or None (:func:`run_deadline` reads it from the run's ``deadline.json``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_grid_resume.ledger.status import counts_as_interruption
from airflow_grid_resume.run.summary import epoch_seconds
from airflow_grid_resume.ui.model import CLOSE_TO_BUDGET

NIGHT_SECONDS = 24 * 3600  # "last night": the runs that ran in the day before now


def run_deadline(docs: Mapping[str, Any]) -> float | None:
    """The run's deadline in epoch seconds, if it has one: ``deadline.json``'s ``deadline_at`` (a ``deadline=``
    run's record, in the documents as ``deadline``)."""
    return epoch_seconds((docs.get("deadline") or {}).get("deadline_at"))


def _label(run: Mapping[str, Any]) -> str:
    index = run.get("map_index")
    mapped = f"[{index}]" if index is not None and int(index) >= 0 else ""
    return f"{run['dag_id']}.{run['task_id']}{mapped}"


def _span(view: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """(start, end) of a run: its first capacity wait's start to its last session's end (None: still going)."""
    sessions = [s for s in view["sessions"] if s.get("start") is not None]
    if not sessions:
        return None, None
    first = sessions[0]
    start = float(first["start"]) - float(first.get("waited_seconds") or 0)
    finished = view["state"]["phase"] not in ("running", "waiting")
    return start, (float(sessions[-1]["end"]) if finished and sessions[-1].get("end") is not None else None)


def _status(view: Mapping[str, Any]) -> str:
    """running, waiting, succeeded, or failed (any other end)."""
    phase = view["state"]["phase"]
    return phase if phase in ("running", "waiting", "succeeded") else "failed"


def last_night(runs: Sequence[Mapping[str, Any]], *, now: float) -> list[dict[str, Any]]:
    """The runs that ran in the last day (started, still going or ended in it), oldest start first."""
    rows = []
    for run in runs:
        start, end = _span(run["view"])
        if start is None or (end is not None and end < now - NIGHT_SECONDS):
            continue
        rows.append(
            {
                "label": _label(run),
                "status": _status(run["view"]),
                "start": start,
                "end": end,
                "deadline": run.get("deadline"),
            }
        )
    return sorted(rows, key=lambda r: r["start"])


def _day(epoch: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(epoch))


def cost_per_day(runs: Sequence[Mapping[str, Any]], *, since: float, now: float) -> list[dict[str, Any]]:
    """Per UTC day of the period (every day, none skipped): the sessions' cost and the same hours on demand,
    each session counted on the day it was launched; sessions whose price is unknown are left out."""
    days: dict[str, dict[str, float]] = {}
    t = since
    while t <= now + 1:
        days.setdefault(_day(t), {"spot_usd": 0.0, "on_demand_usd": 0.0})
        t += 86400
    days.setdefault(_day(now), {"spot_usd": 0.0, "on_demand_usd": 0.0})
    for run in runs:
        for s in run["view"]["sessions"]:
            if s.get("start") is None or s["start"] < since or s["cost_usd"] is None or s["on_demand_cost_usd"] is None:
                continue
            day = days.setdefault(_day(s["start"]), {"spot_usd": 0.0, "on_demand_usd": 0.0})
            day["spot_usd"] += s["cost_usd"]
            day["on_demand_usd"] += s["on_demand_cost_usd"]
    return [
        {"day": d, "spot_usd": round(v["spot_usd"], 4), "on_demand_usd": round(v["on_demand_usd"], 4)}
        for d, v in sorted(days.items())
    ]


def per_pool(runs: Sequence[Mapping[str, Any]], *, since: float) -> list[dict[str, Any]]:
    """Per capacity pool (EC2's term: an instance type in an availability zone), over the sessions launched in
    the period: interruptions, seconds waited for capacity before the launch, sessions. Most troubled first."""
    pools: dict[str, dict[str, Any]] = {}
    for run in runs:
        for s in run["view"]["sessions"]:
            if s.get("start") is None or s["start"] < since:
                continue
            name = f"{s.get('instance_type') or '?'} {s.get('zone') or '?'}"
            pool = pools.setdefault(name, {"pool": name, "interruptions": 0, "waited_seconds": 0.0, "sessions": 0})
            pool["sessions"] += 1
            pool["waited_seconds"] += float(s.get("waited_seconds") or 0)
            if counts_as_interruption(s["status"]):
                pool["interruptions"] += 1
    return sorted(pools.values(), key=lambda p: (-p["interruptions"], -p["waited_seconds"], p["pool"]))


def budget_rows(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each budget of each run still going that has a limit: used, limit, and whether it is close (at most
    ``CLOSE_TO_BUDGET`` left). Closest first."""
    rows = []
    for run in runs:
        view = run["view"]
        if view["state"]["phase"] not in ("running", "waiting"):
            continue
        b = view["budgets"]
        for name in ("interruptions", "failures"):
            limit, left = b.get(f"{name}_limit"), b.get(f"{name}_left")
            if limit is None or left is None:
                continue
            rows.append(
                {
                    "label": _label(run),
                    "budget": name,
                    "used": int(b.get(f"{name}_used") or 0),
                    "limit": int(limit),
                    "close": int(left) <= CLOSE_TO_BUDGET,
                }
            )
    return sorted(rows, key=lambda r: (-(r["used"] / r["limit"] if r["limit"] else 1.0), r["label"]))


def pictures(runs: Sequence[Mapping[str, Any]], *, now: float, since: float) -> dict[str, Any]:
    """Everything the dashboard draws, for ``ui/render.py``'s ``fleet_page``."""
    return {
        "last_night": last_night(runs, now=now),
        "cost_per_day": cost_per_day(runs, since=since, now=now),
        "per_pool": per_pool(runs, since=since),
        "budgets": budget_rows(runs),
        "now": now,
    }
