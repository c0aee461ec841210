"""The run summary: sessions, interruptions, failures, seconds and cost, computed from the ledger.

The ledger is the source of truth, so the summary (the task's XCom, the demo's report) is a pure
function of the records each session left there:

- ``launch.json`` (written by the Airflow side when the instance was launched): type, zone,
  spot or on-demand, the hourly prices, ``launched_at``;
- ``outcome.json`` (written by the agent): status and ``ended_at``;
- ``closed.json`` (written by the Airflow side when it saw the session end): its verdict, which is
  the only record of a *lost* session, and ``at``;
- ``heartbeat.json`` of a session without an outcome: how far its command got (``progress``), and the bytes it
  had moved (``transfer``).

A session in another region than the run's bucket (``launch.json``'s ``region`` and ``bucket_region``) also pays
data transfer for the checkpoint bytes it moved (the outcome's ``transfer``), at ``ec2/prices.py``'s rates.

Seconds are counted from launch to the end the ledger knows of: an estimate of EC2's per-second
billing (which also counts boot and shutdown), good to a few seconds per session.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from airflow_grid_resume.agent.progress import steps_lost
from airflow_grid_resume.ec2.prices import GB, transfer_usd_per_gb
from airflow_grid_resume.ledger.records import Decision, Heartbeat, Outcome, as_dict
from airflow_grid_resume.ledger.status import SessionStatus
from airflow_grid_resume.run.deadline import clock, decision_line
from airflow_grid_resume.run.ending import ended_by, session_status


def epoch_seconds(value: Any) -> float | None:
    """Seconds since the epoch from a number or an ISO-8601 UTC string, None if neither."""
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def session_span(record: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """(launch, end) in epoch seconds: from the launch to the last end the ledger recorded."""
    launch = record.get("launch") or {}
    outcome = record.get("outcome") or {}
    closed = record.get("closed") or {}
    start = epoch_seconds(launch.get("launched_at"))
    if start is None:
        start = epoch_seconds(outcome.get("started_at"))
    ends = [e for e in (epoch_seconds(closed.get("at")), epoch_seconds(outcome.get("ended_at"))) if e is not None]
    return start, max(ends) if ends else None


def reported_progress(record: Mapping[str, Any]) -> dict[str, Any]:
    """``{"first", "last", "total", "last_is_lower_bound"}`` the session's command reported (values may
    be None): from its outcome, else (a session lost without one) from its last heartbeat, whose
    ``done`` is up to one heartbeat interval old, so its ``last`` is only a lower bound."""
    outcome = (record.get("outcome") or {}).get("progress") or {}
    if outcome:
        return {**_steps(outcome, "first", "last", "total"), "last_is_lower_bound": False}
    beat = (record.get("heartbeat") or {}).get("progress") or {}
    return {**_steps(beat, "first", "done", "total"), "last_is_lower_bound": beat.get("done") is not None}


def _steps(doc: Mapping[str, Any], first: str, last: str, total: str) -> dict[str, int | None]:
    def number(value: Any) -> int | None:
        try:
            return None if value is None else int(value)
        except (TypeError, ValueError):
            return None

    return {"first": number(doc.get(first)), "last": number(doc.get(last)), "total": number(doc.get(total))}


def interruption_losses(records: Sequence[Mapping[str, Any]]) -> dict[int, tuple[int | None, bool]]:
    """Per interrupted session followed by another: (steps the next one redid, whether that is only
    "at least": the interrupted session was lost and its last heartbeat is all that says how far it got)."""
    out: dict[int, tuple[int | None, bool]] = {}
    for current, following in itertools.pairwise(records):
        if not session_status(current).is_interruption:
            continue
        before, after = reported_progress(current), reported_progress(following)
        lost = steps_lost(before["last"], after["first"])
        out[int(current.get("session") or 0)] = (lost, lost is not None and before["last_is_lower_bound"])
    return out


def hourly_prices(launch: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """(price paid, on-demand price) per hour of a session's ``launch.json`` (None: not known)."""
    try:
        on_demand = float(launch["on_demand_price"]) if launch.get("on_demand_price") is not None else None
        paid = on_demand if launch.get("lifecycle") == "on-demand" else launch.get("spot_price")
        return (float(paid) if paid is not None else None), on_demand
    except (TypeError, ValueError):
        return None, None


def moved_bytes(record: Mapping[str, Any]) -> tuple[dict[str, int] | None, bool]:
    """(``{"uploaded_bytes", "downloaded_bytes"}`` the session moved, whether that is only "at least"): from its
    outcome; a session without one from its last heartbeat (up to a beat old: a lower bound); none of either: its
    agent never ran, so nothing moved. None: an agent older than the count."""
    outcome, beat = record.get("outcome"), record.get("heartbeat")
    doc, at_least = (outcome, False) if outcome else (beat, True) if beat else (None, False)
    if doc is None:
        return {"uploaded_bytes": 0, "downloaded_bytes": 0}, False
    moved = doc.get("transfer")
    if not isinstance(moved, Mapping):
        return None, False
    return {k: int(moved.get(k) or 0) for k in ("uploaded_bytes", "downloaded_bytes")}, at_least


def session_transfer(record: Mapping[str, Any]) -> dict[str, Any]:
    """What a session paid for data transfer between its region and the bucket's: ``usd`` (0 in the bucket's
    region, and for a launch that names no ``bucket_region``: the one-region form; None when the bytes or the rate
    are unknown), ``bytes`` (both directions), ``at_least`` (a lost session's count, from its last heartbeat)."""
    launch = record.get("launch") or {}
    region, bucket_region = launch.get("region"), launch.get("bucket_region")
    moved, at_least = moved_bytes(record)
    total = None if moved is None else moved["uploaded_bytes"] + moved["downloaded_bytes"]
    if not region or not bucket_region or region == bucket_region:
        return {"usd": 0.0, "bytes": total, "at_least": at_least}
    up, down = transfer_usd_per_gb(region, bucket_region), transfer_usd_per_gb(bucket_region, region)
    if moved is None or up is None or down is None:
        return {"usd": None, "bytes": total, "at_least": at_least}
    usd = (moved["uploaded_bytes"] * up + moved["downloaded_bytes"] * down) / GB
    return {"usd": round(usd, 6), "bytes": total, "at_least": at_least}


def session_costs(record: Mapping[str, Any], seconds: float) -> tuple[float | None, float | None, dict[str, Any]]:
    """(what the session cost, the same on demand, its transfer): the instance's hours at the price paid (and at
    the on-demand price) plus the transfer, which the same bytes would cost on either market. None: unknown."""
    paid, on_demand = hourly_prices(record.get("launch") or {})
    transfer = session_transfer(record)
    moved = transfer["usd"]
    cost = None if paid is None or moved is None else paid * seconds / 3600 + moved
    reference = None if on_demand is None or moved is None else on_demand * seconds / 3600 + moved
    return cost, reference, transfer


def session_seconds(record: Mapping[str, Any]) -> float:
    """Seconds the session's instance ran."""
    start, end = session_span(record)
    return 0.0 if start is None or end is None else max(0.0, end - start)


def deadline_summary(
    records: Sequence[Mapping[str, Any]], deadline: Mapping[str, Any] | None, final_outcome: str | None
) -> dict[str, Any] | None:
    """A deadline= run: the deadline, when the run finished (the last session's end, once it succeeded) and
    whether that met it, the latest prediction, and each session's decision in words."""
    if not deadline:
        return None
    deadline_at = epoch_seconds(deadline.get("deadline_at"))
    decisions = [
        {"session": r.get("session"), **dict(r["decision"]), "line": decision_line(r["decision"])}
        for r in records
        if r.get("decision")
    ]
    finished = session_span(records[-1])[1] if records and final_outcome == SessionStatus.SUCCEEDED.value else None
    return {
        "deadline_at": deadline_at,
        "expected_hours": deadline.get("expected_hours"),
        "finished_at": finished,
        "met": None if finished is None or deadline_at is None else finished <= deadline_at,
        "predicted_finish": next(
            (d.get("predicted_finish") for d in reversed(decisions) if d.get("predicted_finish")), None
        ),
        "decisions": [{"session": d["session"], "action": d.get("action"), "line": d["line"]} for d in decisions],
    }


def summarize(
    records: Sequence[Mapping[str, Any]],
    *,
    final_outcome: str | None = None,
    deadline: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Aggregate per-session records (in session order) into the run summary (``deadline``: a deadline= run's
    ``deadline.json``, with each record's ``decision``)."""
    sessions = []
    totals = {"spot": 0.0, "on-demand": 0.0}
    cost = on_demand_cost = transfer_cost = 0.0
    cost_known = transfer_known = True
    for record in records:
        launch = record.get("launch") or {}
        market = "on-demand" if launch.get("lifecycle") == "on-demand" else "spot"
        seconds = session_seconds(record)
        totals[market] += seconds
        session_cost, session_od, transfer = session_costs(record, seconds)
        if transfer["usd"] is None:
            transfer_known = False
        else:
            transfer_cost += transfer["usd"]
        if session_cost is None or session_od is None:
            cost_known = False
        else:
            cost += session_cost
            on_demand_cost += session_od
        sessions.append(
            {
                "session": record.get("session"),
                "status": session_status(record).value,
                "ended_by": ended_by(record),
                "instance_id": launch.get("instance_id"),
                "instance_type": launch.get("instance_type"),
                "zone": launch.get("zone"),
                "lifecycle": market,
                "seconds": round(seconds, 1),
                "estimated_cost_usd": None if session_cost is None else round(session_cost, 4),
                "transfer_cost_usd": transfer["usd"],
                "transfer_bytes": transfer["bytes"],
                "transfer_at_least": transfer["at_least"],
            }
        )
    # Steps an interruption lost, from the progress protocol: done at the end of one session minus what the
    # next one resumed from (None when either side printed no progress lines; "at least" for a lost session).
    losses = interruption_losses(records)
    for record, detail in zip(records, sessions, strict=True):
        progress = reported_progress(record)
        detail["progress"] = progress if progress["last"] is not None else None
        lost, at_least = losses.get(int(record.get("session") or 0), (None, False))
        detail["steps_lost"], detail["steps_lost_at_least"] = lost, at_least
    redone = [d["steps_lost"] for d in sessions if d["steps_lost"] is not None]
    statuses = [s["status"] for s in sessions]
    return {
        "steps_lost": sum(redone) if redone else None,
        "steps_lost_at_least": any(d["steps_lost_at_least"] for d in sessions),
        "sessions": len(sessions),
        "interruptions": sum(1 for s in statuses if SessionStatus(s).is_interruption),
        "failures": statuses.count(SessionStatus.FAILED.value),
        "spot_seconds": round(totals["spot"], 1),
        "on_demand_seconds": round(totals["on-demand"], 1),
        "estimated_cost_usd": round(cost, 4) if cost_known else None,
        "on_demand_cost_usd": round(on_demand_cost, 4) if cost_known else None,
        "transfer_cost_usd": round(transfer_cost, 6) if transfer_known else None,
        "final_outcome": final_outcome or (statuses[-1] if statuses else None),
        "session_details": sessions,
        **(
            {
                "deadline": deadline_summary(
                    records, deadline, final_outcome or (str(statuses[-1]) if statuses else None)
                )
            }
            if deadline
            else {}
        ),
    }


def read_records(ledger: Any, *, decisions: bool = False) -> list[dict[str, Any]]:
    """Each session's launch, outcome and closing records, read from a ``RunLedger`` as typed records
    (a newer format than this code knows is refused) and given to :func:`summarize` in their JSON form;
    a session without an outcome also its last heartbeat (how far a lost session got); with ``decisions``
    (a deadline= run) the policy's latest decision about it."""
    records = []
    for session in ledger.list_sessions():
        record = {
            "session": session,
            "launch": as_dict(ledger.read_launch(session)),
            "outcome": as_dict(ledger.read_record(Outcome, session)),
            "closed": as_dict(ledger.read_closed(session)),
        }
        if record["launch"] or record["outcome"] or record["closed"]:  # planned but never launched: no session
            if record["outcome"] is None:
                record["heartbeat"] = as_dict(ledger.read_record(Heartbeat, session))
            if decisions:
                record["decision"] = as_dict(ledger.read_record(Decision, session))
            records.append(record)
    return records


def transfer_note(session: Mapping[str, Any]) -> str:
    """What a session's line says of its data transfer between regions: nothing when there was none."""
    usd, moved = session.get("transfer_cost_usd"), session.get("transfer_bytes")
    if not usd:
        return ""
    at_least = "at least " if session.get("transfer_at_least") else ""
    return f" (of which {at_least}{usd:.6f} USD data transfer: {(moved or 0) / 1048576:.1f} MiB to and from the bucket)"


def summary_lines(summary: Mapping[str, Any], *, run_uri: str) -> list[str]:
    """The run summary as the last try's log ends with it: every session and what ended it, the
    cost against on-demand, where the newest checkpoint is."""
    lines = [
        f"run summary: {summary['sessions']} sessions, {summary['interruptions']} interruptions, "
        f"{summary['failures']} failures; {summary.get('final_outcome')}"
    ]
    for d in summary["session_details"]:
        cost = d.get("estimated_cost_usd")
        lines.append(
            f"  session {d['session']}: {d.get('ended_by') or d['status']} on {d['instance_type']} {d['lifecycle']} in "
            f"{d['zone']} ({d['instance_id']}), {d['seconds']:.0f} s"
            + (f", {cost:.4f} USD" if cost is not None else "")
            + transfer_note(d)
            + (
                f", {'at least ' if d.get('steps_lost_at_least') else ''}{d['steps_lost']} steps redone after it"
                if d.get("steps_lost") is not None
                else ""
            )
        )
    cost, on_demand = summary.get("estimated_cost_usd"), summary.get("on_demand_cost_usd")
    if cost is not None and on_demand:
        lines.append(
            f"  cost (estimate): {cost:.4f} USD against {on_demand:.4f} USD on demand "
            f"({100 * (1 - cost / on_demand):.0f} % saved)"
            + (
                f", including {summary['transfer_cost_usd']:.6f} USD of data transfer between regions"
                if summary.get("transfer_cost_usd")
                else ""
            )
        )
    deadline = summary.get("deadline")
    if deadline and deadline.get("deadline_at"):
        finished = deadline.get("finished_at")
        verdict = (
            f"{'met' if deadline.get('met') else 'MISSED'}: finished {clock(finished)} UTC"
            if finished
            else (
                f"predicted finish {clock(deadline['predicted_finish'])} UTC"
                if deadline.get("predicted_finish")
                else ""
            )
        )
        lines.append(f"  deadline {clock(deadline['deadline_at'])} UTC" + (f", {verdict}" if verdict else ""))
        for d in deadline.get("decisions") or []:
            lines.append(f"    session {d['session']}, policy: {d['line']}")
    last = summary.get("last_manifest")
    lines.append(
        f"  newest checkpoint: {run_uri.rstrip('/')}/manifests/{last}" if last else "  no checkpoint was committed"
    )
    return lines
