"""What the run view and the fleet dashboard show, as pure functions: ledger documents and Airflow's
tries in, a view model (plain dicts) out. No I/O here; ``ui/source.py`` reads, ``ui/render.py`` draws.

A run's ledger documents, as ``ui/source.py`` gathers them (any may be missing)::

    {"run_uri": "s3://...", "spec": {...}, "final": {...},
     "sessions": [{"session": 1, "start": session.json, "launch": launch.json, "heartbeat": heartbeat.json,
                   "outcome": outcome.json, "closed": closed.json}, ...],
     "manifests": [{"name", "session", "seq", "committed_at", "bytes", "files"}, ...]}   newest first

Airflow's tries: ``[{"try_number", "state", "start_date", "end_date"}]`` (epoch seconds or ISO strings).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_grid_resume.ec2.launch import region_of_zone
from airflow_grid_resume.ledger.status import counts_as_interruption
from airflow_grid_resume.run.budgets import budget_use
from airflow_grid_resume.run.deadline import decision_line
from airflow_grid_resume.run.ending import ended_by, session_status
from airflow_grid_resume.run.summary import (
    epoch_seconds,
    hourly_prices,
    interruption_losses,
    reported_progress,
    session_costs,
    session_span,
)
from airflow_grid_resume.spot.fleetrecord import expected_hours, fleet_stats

# How close to a budget a run must be to be flagged on the dashboard: at most this many left.
CLOSE_TO_BUDGET = 1


def session_row(record: Mapping[str, Any], now: float) -> dict[str, Any]:
    """One session as the run view lists it; a running session counts until ``now``."""
    launch = record.get("launch") or {}
    outcome = record.get("outcome") or {}
    start, end = session_span(record)
    live = not outcome and not record.get("closed")
    if live:
        end = now
    seconds = max(0.0, end - start) if start is not None and end is not None else 0.0
    paid, od = hourly_prices(launch)
    cost, od_cost, transfer = session_costs(record, seconds)
    progress = reported_progress(record)
    return {
        "session": int(record.get("session") or 0),
        "status": "running" if live else session_status(record),
        "ended_by": ended_by(record),
        "instance_id": launch.get("instance_id") or (record.get("start") or {}).get("instance_id"),
        "instance_type": launch.get("instance_type"),
        "zone": launch.get("zone"),
        "region": launch.get("region") or (region_of_zone(str(launch["zone"])) if launch.get("zone") else None),
        "resolved_types": list(launch.get("resolved_types") or []),
        "lifecycle": launch.get("lifecycle") or "spot",
        "price_per_hour": paid,
        "on_demand_per_hour": od,
        "waited_seconds": float(launch.get("waited_seconds") or 0),
        "start": start,
        "end": end,
        "seconds": round(seconds, 1),
        "cost_usd": None if cost is None else round(cost, 4),  # with its data transfer between regions
        "on_demand_cost_usd": None if od_cost is None else round(od_cost, 4),
        "transfer_cost_usd": transfer["usd"],
        "transfer_bytes": transfer["bytes"],
        "transfer_at_least": transfer["at_least"] and not live,
        "notice_at": epoch_seconds((outcome.get("notice") or {}).get("time")),
        "exit_code": outcome.get("exit_code"),
        "progress_first": progress.get("first"),
        "progress_last": progress.get("last"),
        "progress_total": progress.get("total"),
        # a lost session's last step is its last heartbeat's: it may have got further
        "progress_last_at_least": progress["last_is_lower_bound"] and not live,
        "tail": list(outcome.get("tail") or [])[-10:],
        "policy": decision_line(record["decision"]) if record.get("decision") else None,
    }


def match_tries(tries: Sequence[Mapping[str, Any]], sessions: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per Airflow try with the session it ran (one try is one session): a session belongs
    to the newest try that started before its instance was launched."""
    ordered = sorted(tries, key=lambda t: int(t.get("try_number") or 0))
    starts = [epoch_seconds(t.get("start_date")) for t in ordered]
    by_try: dict[int, list[Mapping[str, Any]]] = {}
    for s in sessions:
        owner = None
        for index, started in enumerate(starts):
            if started is not None and s.get("start") is not None and started <= float(s["start"]) + 1:
                owner = index
        if owner is not None:
            by_try.setdefault(owner, []).append(s)
    rows = []
    for index, t in enumerate(ordered):
        ran = by_try.get(index, [])
        last = ran[-1] if ran else None
        state = t.get("state")
        if last is not None:
            ended = last["ended_by"] if last["status"] != "running" else "running"
        elif state in ("deferred", "running", "queued", "scheduled", None):
            ended = "waiting for capacity" if state == "deferred" else str(state or "starting")
        else:
            ended = f"ended before an instance was launched ({state})"
        rows.append(
            {
                "try_number": int(t.get("try_number") or 0),
                "state": state,
                "start": epoch_seconds(t.get("start_date")),
                "end": epoch_seconds(t.get("end_date")),
                "sessions": [s["session"] for s in ran],
                "instance_id": last["instance_id"] if last else None,
                "ended_by": ended,
                "kind": _kind(last),
            }
        )
    return rows


def _kind(session: Mapping[str, Any] | None) -> str:
    """A CSS-friendly class: interruption, failure, success, running, none."""
    if session is None:
        return "none"
    status = session["status"]
    if counts_as_interruption(status):
        return "interruption"
    if status == "succeeded":
        return "success"
    if status == "running":
        return "running"
    return "failure"


def budgets(spec: Mapping[str, Any] | None, final: Mapping[str, Any] | None, rows: Sequence[Mapping]) -> dict:
    """Interruption and failure budgets used and left since the run last ended (a clear gives fresh
    budgets), as the operator counts them. Limits come from the spec the operator wrote."""
    limits = (spec or {}).get("budgets") or {}
    final = final or {}
    used_i, used_f = budget_use(
        [(int(r["session"]), str(r["status"])) for r in rows],
        final_status=final.get("status"),
        final_session=int(final.get("session") or 0),
    )
    out: dict[str, Any] = {"interruptions_used": used_i, "failures_used": used_f}
    for name, used, key in (("interruptions", used_i, "max_interruptions"), ("failures", used_f, "failure_retries")):
        limit = limits.get(key)
        out[f"{name}_limit"] = limit
        out[f"{name}_left"] = None if limit is None else max(0, int(limit) - used)
    return out


def current_state(
    docs: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    ti_state: str | None,
    now: float,
    waiting: Mapping[str, Any] | None = None,
    retry_at: float | None = None,
) -> dict[str, Any]:
    """The run's state right now in one sentence, plus what a progress bar and a countdown need.

    ``waiting``: what the capacity trigger waits for (``instance_types``, ``started_at``,
    ``max_wait``), when the task is deferred for capacity. ``retry_at``: when Airflow retries the
    task, when it is up for retry (Airflow's own value, by the scheduler's clock).
    ``countdown``: ``{"text", "seconds"}``, the part of ``text`` a page may count down itself.
    """
    final = docs.get("final") or {}
    last = rows[-1] if rows else None
    sessions = [r for r in docs.get("sessions") or [] if any(r.get(k) for k in ("launch", "outcome", "closed"))]
    record = sessions[-1] if sessions else {}
    beat = (record.get("heartbeat") or {}) if last and last["status"] == "running" else {}
    progress = beat.get("progress") or {}
    done, total = progress.get("done"), progress.get("total")
    if done is None and last is not None:
        done, total = last.get("progress_last"), last.get("progress_total")
    state: dict[str, Any] = {
        "phase": "unknown",
        "text": "",
        "done": done,
        "total": total,
        "eta_seconds": None,
        "countdown": None,
    }
    if final.get("status") == "succeeded" and (last is None or last["status"] == "succeeded"):
        state.update(phase="succeeded", text=f"succeeded in session {final.get('session')}")
    elif final.get("status") == "failed" and ti_state in ("failed", None, "success", "upstream_failed"):
        state.update(phase="failed", text=f"failed: {final.get('reason')}")
    elif last is not None and last["status"] == "running":
        age = now - float(beat["epoch"]) if beat.get("epoch") is not None else None
        what = str(beat.get("state") or "booting")
        if what == "stopping":
            text = "stopping: spot notice received, saving a checkpoint"
        elif beat:
            text = f"{what} on {last['instance_type']} in {last['zone']}, heartbeat {age:.0f} s ago"
        else:
            text = f"booting {last['instance_type']} in {last['zone']} (no heartbeat yet)"
        if done is not None:
            text += f", step {done}" + (f" of {total}" if total else "")
        state.update(phase="running", text=text, eta_seconds=_eta(rows, record, now))
    elif waiting or (ti_state == "deferred" and (last is None or last["status"] != "succeeded")):
        newest = (docs.get("sessions") or [{}])[-1]
        wait = capacity_wait(newest if not newest.get("launch") else {}, waiting or {}, now)
        state.update(phase="waiting", text=wait["text"], countdown=wait["countdown"], wait=wait)
    elif last is not None and last["status"] == "succeeded" and ti_state in ("deferred", "running", "queued"):
        state.update(phase="running", text=f"session {last['session']} succeeded; Airflow is finishing the task")
    elif ti_state == "up_for_retry":
        text, countdown = "Airflow retry pending", None
        if retry_at is not None:
            left = round(retry_at - now)
            when = time.strftime("%H:%M:%S UTC", time.gmtime(retry_at))
            countdown = {"text": f"in {left} s", "seconds": left} if left > 0 else None
            text += f": next try at {when}" + (f" ({countdown['text']})" if countdown else " (due now)")
        state.update(phase="waiting", text=text + "; it resumes from the last checkpoint", countdown=countdown)
    elif last is not None:
        state.update(phase=last["status"], text=f"session {last['session']}: {last['ended_by']}")
    else:
        state.update(phase="waiting", text="no session yet")
    return state


# What EC2's answer to a launch means, for the run view (codes: ec2.launch.CAPACITY_CODES and THROTTLE_CODES).
EC2_ANSWERS = {
    "InsufficientInstanceCapacity": "no capacity for it there now",
    "InsufficientCapacity": "no capacity for it there now",
    "UnfulfillableCapacity": "EC2 cannot fulfil it there now",
    "SpotMaxPriceTooLow": "the spot price is above the max price",
    "MaxSpotInstanceCountExceeded": "the account's spot instance limit is reached",
    "VcpuLimitExceeded": "the account's vCPU limit is reached",
    "InsufficientFreeAddressesInSubnet": "the subnet has no free IP address",
}
KIND_ANSWERS = {"throttle": "EC2 throttled the request", "transient": "no clear answer (retried with the same token)"}
# A round starts at its time or a little later (the triggerer is busy, the launch bucket is empty):
# only this much later is it called overdue.
OVERDUE_AFTER_SECONDS = 30


def ec2_answer(answer: Mapping[str, Any]) -> str:
    """``InsufficientInstanceCapacity (no capacity for it there now)``: the code and what it means."""
    code = str(answer.get("code") or "no answer")
    meaning = EC2_ANSWERS.get(code) or KIND_ANSWERS.get(str(answer.get("kind")))
    return f"{code} ({meaning})" if meaning else code


def _pairs_text(pairs: Sequence[tuple[str, str]]) -> str:
    """``g5.xlarge or g4dn.xlarge in us-east-1a or us-east-1b`` when every type was tried in every zone,
    else each pair: ``g5.xlarge in us-east-1a, g4dn.xlarge in us-east-1b``."""
    unique = list(dict.fromkeys(pairs))
    types = list(dict.fromkeys(t for t, _ in unique))
    zones = list(dict.fromkeys(z for _, z in unique))
    if len(unique) > 1 and len(unique) == len(types) * len(zones):
        return f"{' or '.join(types)} in {' or '.join(zones)}"
    return ", ".join(f"{t} in {z}" for t, z in unique)


def capacity_wait(record: Mapping[str, Any], waiting: Mapping[str, Any], now: float) -> dict[str, Any]:
    """What a capacity wait is doing, from the newest session's launch-attempt record (``record``:
    ``{"attempt": doc, "attempt_seen": {"age", "read_at"}}``) and the trigger's kwargs (``waiting``).

    The next try is ``next_try_in`` seconds after the record was written. When it was written is taken
    from S3's clock (the object's age: the response's Date minus its Last-Modified), moved onto this
    server's clock at ``read_at``; so neither the triggerer's clock nor this server's skew counts, only
    S3's one-second resolution. Without that age the writer's ``at`` is used (a skewed triggerer clock
    then shifts the countdown by its skew)."""
    doc = record.get("attempt") or {}
    seen = record.get("attempt_seen") or {}
    tried = doc.get("attempt") or {}
    answers = [a for a in doc.get("answers") or [] if isinstance(a, Mapping)]
    market = str(doc.get("lifecycle") or tried.get("lifecycle") or "spot")
    if answers:
        what = _pairs_text([(str(a.get("instance_type")), str(a.get("zone"))) for a in answers])
    else:
        what = ", ".join(waiting.get("instance_types") or []) or "an instance"
    text = f"waiting for {market} capacity: {what}"
    countdown = None
    next_in, left = doc.get("next_try_in"), None
    if doc.get("phase") == "backing-off" and isinstance(next_in, (int, float)):
        if seen.get("age") is not None and seen.get("read_at") is not None:
            written = float(seen["read_at"]) - float(seen["age"])
        else:
            written = epoch_seconds(doc.get("at")) or now
        left = round(written + float(next_in) - now)
        if left > 0:
            countdown = {"text": f"next try in {left} s", "seconds": left}
            text += f", {countdown['text']}"
        elif left > -OVERDUE_AFTER_SECONDS:
            text += ", next try now"
        else:
            text += f", next try overdue by {-left} s (is the triggerer running?)"
    elif tried.get("instance_type"):
        text += f"; trying {tried['instance_type']} {tried.get('lifecycle') or 'spot'} in {tried.get('zone')}"
        at = epoch_seconds(doc.get("at"))
        if seen.get("age") is not None:
            text += f" (since {float(seen['age']):.0f} s)"
        elif at is not None:
            text += f" (since {max(0.0, now - at):.0f} s)"
    if answers:
        said = list(dict.fromkeys(ec2_answer(a) for a in answers))
        text += f"; EC2 answered {'; '.join(said)}"
    waited = now - float(waiting["started_at"]) if waiting.get("started_at") else None
    if waited is not None:
        text += f"; waited {waited:.0f} s"
        if waiting.get("max_wait"):
            text += f" of at most {float(waiting['max_wait']):.0f} s"
    if doc.get("rounds"):
        text += f" ({doc['rounds']} rounds)"
    return {
        "text": text,
        "countdown": countdown,
        "next_try_in": left,
        "market": market,
        "rounds": doc.get("rounds"),
        "answers": [
            {
                "instance_type": a.get("instance_type"),
                "zone": a.get("zone"),
                "lifecycle": a.get("lifecycle"),
                "answer": ec2_answer(a),
                "message": str(a.get("message") or ""),
            }
            for a in answers
        ],
    }


def _eta(rows: Sequence[Mapping[str, Any]], record: Mapping[str, Any], now: float) -> float | None:
    """Seconds to the end at this session's pace (steps since its first reported step)."""
    beat = record.get("heartbeat") or {}
    progress = beat.get("progress") or {}
    done, total, first = progress.get("done"), progress.get("total"), progress.get("first")
    start = rows[-1].get("start") if rows else None
    epoch = beat.get("epoch")
    if done is None or total is None or epoch is None or start is None:
        return None
    base = first if first is not None else (rows[-2].get("progress_last") or 0 if len(rows) > 1 else 0)
    elapsed = float(epoch) - float(start)
    if elapsed <= 0 or int(done) <= int(base):
        return None
    return max(0.0, (int(total) - int(done)) * elapsed / (int(done) - int(base)))


def checkpoints(docs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The run's checkpoints, newest first, each with where it is."""
    run_uri = str(docs.get("run_uri") or "").rstrip("/")
    return [
        {
            "name": m.get("name"),
            "session": m.get("session"),
            "committed_at": m.get("committed_at"),
            "bytes": m.get("bytes"),
            "files": m.get("files"),
            "uri": f"{run_uri}/manifests/{m.get('name')}",
        }
        for m in docs.get("manifests") or []
    ]


def run_view(
    docs: Mapping[str, Any],
    tries: Sequence[Mapping[str, Any]],
    *,
    now: float,
    ti_state: str | None = None,
    waiting: Mapping[str, Any] | None = None,
    retry_at: float | None = None,
) -> dict[str, Any]:
    """Everything the run view of one task instance shows."""
    # a session planned (launch-attempt.json) but not launched is no session yet (as in summary.read_records)
    records = [r for r in docs.get("sessions") or [] if any(r.get(k) for k in ("launch", "outcome", "closed"))]
    rows = [session_row(r, now) for r in records]
    lost = interruption_losses(records)
    for row in rows:
        row["steps_lost"], row["steps_lost_at_least"] = lost.get(row["session"], (None, False))
    cost = [r["cost_usd"] for r in rows]
    od = [r["on_demand_cost_usd"] for r in rows]
    known = bool(rows) and None not in cost and None not in od
    total_cost = round(sum(c for c in cost if c is not None), 4) if known else None
    total_od = round(sum(c for c in od if c is not None), 4) if known else None
    transfer = [r["transfer_cost_usd"] for r in rows]
    return {
        "run_uri": docs.get("run_uri"),
        "state": current_state(docs, rows, ti_state, now, waiting, retry_at),
        "sessions": rows,
        "tries": match_tries(tries, rows),
        "checkpoints": checkpoints(docs),
        "budgets": budgets(docs.get("spec"), docs.get("final"), rows),
        "cost": {
            "spot_usd": total_cost,
            "on_demand_usd": total_od,
            "saved_percent": round(100 * (1 - total_cost / total_od)) if known and total_od else None,
            "transfer_usd": None if None in transfer else round(sum(t for t in transfer if t is not None), 6),
        },
        "capacity_waited_seconds": round(sum(r["waited_seconds"] for r in rows) + _waiting_now(docs, waiting, now), 1),
        "interruptions": sum(1 for r in rows if counts_as_interruption(r["status"])),
        "steps_lost": sum(r["steps_lost"] for r in rows if r["steps_lost"] is not None)
        if any(r["steps_lost"] is not None for r in rows)
        else None,
        "steps_lost_at_least": any(r["steps_lost_at_least"] for r in rows),
        "timeline": timeline(rows, docs, now),
        "deadline": deadline_view(docs),
    }


def deadline_view(docs: Mapping[str, Any]) -> dict[str, Any] | None:
    """A deadline= run: the deadline, and the policy's latest decision (what, why, the predicted finish), which
    may be about a session still waiting for capacity."""
    deadline = docs.get("deadline")
    if not deadline:
        return None
    latest = next((r["decision"] for r in reversed(docs.get("sessions") or []) if r.get("decision")), None)
    return {
        "deadline_at": deadline.get("deadline_at"),
        "expected_hours": deadline.get("expected_hours"),
        "decision": decision_line(latest) if latest else None,
        "predicted_finish": (latest or {}).get("predicted_finish"),
        "decided_at": (latest or {}).get("at"),
    }


def _waiting_now(docs: Mapping[str, Any], waiting: Mapping[str, Any] | None, now: float) -> float:
    """Seconds the capacity wait going on now has lasted (0 when none): it counts before it ends."""
    newest = (docs.get("sessions") or [{}])[-1]
    if not waiting or not waiting.get("started_at") or newest.get("launch"):
        return 0.0
    return max(0.0, now - float(waiting["started_at"]))


def try_instance(
    docs: Mapping[str, Any], tries: Sequence[Mapping[str, Any]], try_number: int, *, now: float
) -> str | None:
    """The instance Airflow try ``try_number`` ran its session on, or None (it launched none)."""
    records = [r for r in docs.get("sessions") or [] if any(r.get(k) for k in ("launch", "outcome", "closed"))]
    rows = match_tries(tries, [session_row(r, now) for r in records])
    return next((r["instance_id"] for r in rows if r["try_number"] == try_number), None)


def timeline(rows: Sequence[Mapping[str, Any]], docs: Mapping[str, Any], now: float) -> list[dict[str, Any]]:
    """Events in time order: capacity waits, sessions, checkpoints, notices, ends."""
    events: list[dict[str, Any]] = []
    for r in rows:
        if r["start"] is None:
            continue
        if r["waited_seconds"]:
            events.append(
                {
                    "kind": "wait",
                    "session": r["session"],
                    "start": r["start"] - r["waited_seconds"],
                    "end": r["start"],
                    "text": f"waited {r['waited_seconds']:.0f} s for capacity",
                }
            )
        where = f"{r['instance_type']} {r['lifecycle']} in {r['zone']}"
        events.append(
            {
                "kind": "session",
                "session": r["session"],
                "start": r["start"],
                "end": r["end"] or now,
                "status": r["status"],
                "text": f"session {r['session']} on {where}: {r['ended_by']}",
            }
        )
        if r["notice_at"] is not None and counts_as_interruption(r["status"]):
            events.append(
                {
                    "kind": "notice",
                    "session": r["session"],
                    "start": r["notice_at"],
                    "end": r["notice_at"],
                    "text": "spot interruption notice",
                }
            )
        if r["status"] == "lost" and r["end"] is not None:
            events.append(
                {
                    "kind": "lost",
                    "session": r["session"],
                    "start": r["end"],
                    "end": r["end"],
                    "text": "instance lost without notice",
                }
            )
    for m in docs.get("manifests") or []:
        if m.get("committed_at") is not None and m.get("session"):
            events.append(
                {
                    "kind": "checkpoint",
                    "session": m["session"],
                    "start": m["committed_at"],
                    "end": m["committed_at"],
                    "text": f"checkpoint {m.get('name')}",
                }
            )
    return sorted(events, key=lambda e: (e["start"], e["kind"] != "session"))


def fleet(runs: Sequence[Mapping[str, Any]], *, now: float, since: float) -> dict[str, Any]:
    """The dashboard over many runs: ``runs`` are ``{"dag_id", "task_id", "run_id", "map_index",
    "ti_state", "view"}`` with ``view`` from :func:`run_view`. Counts only sessions started after ``since``."""
    rows: list[dict[str, Any]] = []
    per_pair: dict[Any, Any] = {}
    totals = {
        "waiting": 0,
        "running": 0,
        "finished": 0,
        "capacity_waited_seconds": 0.0,
        "spot_usd": 0.0,
        "on_demand_usd": 0.0,
        "interruptions": 0,
    }
    close = []
    for run in runs:
        view = run["view"]
        phase = view["state"]["phase"]
        group = "running" if phase == "running" else "waiting" if phase == "waiting" else "finished"
        totals[group] += 1
        for s in view["sessions"]:
            if s["start"] is None or s["start"] < since:
                continue
            totals["capacity_waited_seconds"] += s["waited_seconds"]
            if s["cost_usd"] is not None and s["on_demand_cost_usd"] is not None:
                totals["spot_usd"] += s["cost_usd"]
                totals["on_demand_usd"] += s["on_demand_cost_usd"]
            if counts_as_interruption(s["status"]):
                totals["interruptions"] += 1
                key = (s["instance_type"] or "?", s["zone"] or "?")
                per_pair[key] = per_pair.get(key, 0) + 1
        b = view["budgets"]
        near = [
            f"{name} {b[f'{name}_left']} left of {b[f'{name}_limit']}"
            for name in ("interruptions", "failures")
            if b.get(f"{name}_left") is not None and b[f"{name}_left"] <= CLOSE_TO_BUDGET and group != "finished"
        ]
        row = {
            **{k: run.get(k) for k in ("dag_id", "task_id", "run_id", "map_index", "ti_state")},
            "group": group,
            "state": view["state"]["text"],
            "sessions": len(view["sessions"]),
            "interruptions": view["interruptions"],
            "cost": view["cost"],
            "near_budget": near,
            "capacity_waited_seconds": view["capacity_waited_seconds"],
        }
        rows.append(row)
        if near:
            close.append(row)
    saved = totals["on_demand_usd"] - totals["spot_usd"]
    return {
        "runs": rows,
        "totals": {
            **totals,
            "spot_usd": round(totals["spot_usd"], 4),
            "on_demand_usd": round(totals["on_demand_usd"], 4),
            "saved_usd": round(saved, 4),
            "capacity_waited_seconds": round(totals["capacity_waited_seconds"], 1),
        },
        "interruptions_by_pair": [
            {"instance_type": t, "zone": z, "interruptions": n}
            for (t, z), n in sorted(per_pair.items(), key=lambda kv: -kv[1])
        ],
        "close_to_budget": close,
        "since": since,
        "now": now,
    }


def with_instance_links(view: dict[str, Any], conf: Mapping[str, Any]) -> dict[str, Any]:
    """Each try's and session's own instance link (the console, or the local spot cloud's page), from
    the operator's link settings: Airflow's own extra link shows the last try's instance on every try."""
    from airflow_grid_resume.links import instance_url

    for row in [*view["tries"], *view["sessions"]]:
        row["instance_url"] = instance_url(conf, row.get("instance_id"))
    return view


def pools(records: Sequence[Mapping[str, Any] | None]) -> list[dict]:
    """The fleet records' pools, one row each (the fleet dashboard's "Pools" table): what each (region, zone,
    type, market) did for this deployment's runs, the pools worth most first."""
    rows = []
    for record in records:
        for key, stats in fleet_stats(record).items():
            region, zone, instance_type, market = (key.split("|") + ["?"] * 4)[:4]
            rows.append(
                {
                    "region": region,
                    "zone": zone,
                    "instance_type": instance_type,
                    "market": market,
                    **stats.as_dict(),
                    "expected_hours": round(expected_hours(stats), 2),
                }
            )
    return sorted(rows, key=lambda r: (-r["expected_hours"], r["pool"]))
