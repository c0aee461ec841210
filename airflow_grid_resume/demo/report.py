"""What the demo tells the user at the end, computed from the ledger: pure functions of the
records and log text the driver reads, so they are tested without any server."""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_grid_resume.ledger.status import SessionStatus, counts_as_interruption

_STEP = re.compile(r"^(?:step |grid-resume: progress )(\d+)\b", re.M)
_SAVED = re.compile(r"checkpoint saved at step (\d+)")
_RESUMED = re.compile(r"resumed from checkpoint at step (\d+)")


def last_step(log_text: str) -> int | None:
    """The furthest training step a session's output reports (progress lines or a SIGTERM save)."""
    found = [int(m) for m in _STEP.findall(log_text)] + [int(m) for m in _SAVED.findall(log_text)]
    return max(found) if found else None


def resumed_at(log_text: str) -> int | None:
    """The step a session started from: its checkpoint's, 0 for a fresh start, None if unknown."""
    match = _RESUMED.search(log_text)
    if match:
        return int(match.group(1))
    return 0 if "fresh start" in log_text else None


def steps_lost(sessions: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """For each interrupted or lost session: how far it got, where the next one resumed, the
    difference (work redone). ``sessions``: ``{"session", "status", "log"}`` in session order."""
    lost = []
    for current, following in itertools.pairwise(sessions):
        if not counts_as_interruption(current["status"]):
            continue
        reached = last_step(current["log"])
        resumed = resumed_at(following["log"])
        lost.append(
            {
                "session": current["session"],
                "status": current["status"],
                "reached": reached,
                "resumed_at": resumed,
                "steps_lost": None if reached is None or resumed is None else max(0, reached - resumed),
            }
        )
    return lost


def misread_sessions(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Sessions the Airflow side closed differently from how the agent said they ended (a watch that
    called a finished session lost, say): the ledger's two views must agree."""
    found = []
    for record in records:
        agent = (record.get("outcome") or {}).get("status")
        airflow = (record.get("closed") or {}).get("status")
        if agent and airflow and agent != airflow:
            found.append(f"session {record.get('session')}: the agent said {agent}, the Airflow side saw {airflow}")
    return found


def verdict(
    *,
    dag_state: str,
    statuses: Sequence[str],
    expected_interruptions: int,
    metric: Any,
    reference: Any,
    misread: Sequence[str] = (),
) -> list[str]:
    """Why the lifecycle did not work, one line per problem; empty means it worked."""
    problems = list(misread)
    if dag_state != "success":
        problems.append(f"the DAG run ended {dag_state}")
    interruptions = sum(1 for s in statuses if counts_as_interruption(s))
    if interruptions != expected_interruptions:
        problems.append(f"{interruptions} interruptions happened, the schedule had {expected_interruptions}")
    if not statuses or statuses[-1] != SessionStatus.SUCCEEDED:
        problems.append(f"the last session did not succeed: {list(statuses)}")
    if metric is None or metric != reference:
        problems.append(f"the final metric {metric!r} differs from the uninterrupted reference {reference!r}")
    return problems


def summary_lines(
    summary: Mapping[str, Any],
    losses: Sequence[Mapping[str, Any]],
    *,
    waited_seconds: float,
    metric: Mapping[str, Any] | None,
    reference: Mapping[str, Any] | None,
) -> list[str]:
    """The closing report, in plain words."""
    lines = [
        f"sessions:        {summary['sessions']} ("
        + ", ".join(f"{d['session']}: {d['status']} on {d['instance_type']}" for d in summary["session_details"])
        + ")",
        f"interruptions:   {summary['interruptions']}",
    ]
    for loss in losses:
        how = "spot notice" if loss["status"] == SessionStatus.INTERRUPTED else "lost without notice"
        if loss["steps_lost"] is None:
            lines.append(f"  session {loss['session']} ({how}): steps lost unknown")
        else:
            lines.append(
                f"  session {loss['session']} ({how}): reached step {loss['reached']}, next session resumed at "
                f"{loss['resumed_at']}: {loss['steps_lost']} steps redone"
            )
    lines.append(f"capacity waited: {waited_seconds:.0f} s (deferred in the triggerer, no worker slot)")
    cost, on_demand = summary.get("estimated_cost_usd"), summary.get("on_demand_cost_usd")
    if cost is not None and on_demand:
        lines.append(
            f"cost (estimate): {cost:.4f} USD on spot for {summary['spot_seconds']:.0f} s, against "
            f"{on_demand:.4f} USD on demand ({100 * (1 - cost / on_demand):.0f} % saved)"
        )
    accuracy = (metric or {}).get("test_accuracy")
    ref_accuracy = (reference or {}).get("test_accuracy")
    same = metric is not None and metric == reference
    lines.append(
        f"final metric:    test accuracy {accuracy} (uninterrupted reference: {ref_accuracy}) "
        + ("- identical, weights included" if same else "- DIFFERENT")
    )
    return lines
