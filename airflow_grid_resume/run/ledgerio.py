"""The ledger reads and writes the operator's decisions stand on: which generation of the run is current, what
its sessions say (``RunView`` for ``next_step``), the budgets spent, a session planned, the run ended.

Thin functions over ``RunLedger`` (the decisions themselves are pure, in ``nextstep``, ``verdict`` and
``budgets``), tested through the operator against the local spot cloud.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

from airflow_grid_resume.ec2.tags import expiry_tag
from airflow_grid_resume.ledger import layout
from airflow_grid_resume.ledger.records import Closed, Deadline, Decision, Final, LaunchAttempt, Outcome, Spec
from airflow_grid_resume.ledger.status import SessionStatus
from airflow_grid_resume.ledger.store import ConditionalWriteLost, RunLedger
from airflow_grid_resume.ledger.uri import parse_s3_uri
from airflow_grid_resume.run.budgets import budget_use, counted_after
from airflow_grid_resume.run.deadline import DeadlineContext, first_try_problem, parse_deadline
from airflow_grid_resume.run.ending import ended_status
from airflow_grid_resume.run.nextstep import RunView, final_contradiction
from airflow_grid_resume.run.pace import DEFAULT_CHANGEOVER_HOURS, PriorPace, measure

log = logging.getLogger(__name__)


def generation_uri(base_uri: str, generation: int) -> str:
    """Where generation ``generation`` of a run lives: a fresh re-run nests under the first one."""
    return base_uri if generation <= 1 else f"{base_uri}/{layout.rerun(generation)}"


def newest_generation(ledger: RunLedger, base_uri: str) -> tuple[int, RunLedger, Final | None]:
    """The newest generation of this task instance's run (``ledger`` is the first's), and how it ended (None:
    not yet)."""
    generation = 1
    final = believed_final(ledger)
    while final is not None:
        newer = RunLedger(ledger.client, parse_s3_uri(generation_uri(base_uri, generation + 1)), ledger.write_options)
        if newer.get(newer.key(layout.SPEC)) is None:
            break
        generation, ledger = generation + 1, newer
        final = believed_final(ledger)
    return generation, ledger, final


def believed_final(ledger: RunLedger) -> Final | None:
    """The run's ``final.json``, unless it says the run succeeded and the session it names does not agree
    (``final_contradiction``): then the run is taken as not ended, and the log says why."""
    final = ledger.read_final()
    if final is None or final.status != SessionStatus.SUCCEEDED:
        return final
    outcome = ledger.read_record(Outcome, final.session) if final.session is not None else None
    if outcome is not None and final.session is not None and not planned(ledger, final.session):
        outcome = None  # an outcome of a session the Airflow side never planned proves nothing
    closed = None if outcome is not None or final.session is None else ledger.read_record(Closed, final.session)
    problem = final_contradiction(
        final.status, final.session, outcome.status if outcome else None, closed.status if closed else None
    )
    if problem is None:
        return final
    log.warning("%s", problem)
    return None


def run_view(ledger: RunLedger, state: dict) -> RunView:
    """What the ledger and the task state store say of this generation's sessions, for ``next_step``."""
    sessions = ledger.list_sessions()
    newest = sessions[-1] if sessions else None
    newest_outcome = ledger.read_record(Outcome, newest) if newest else None
    latest = max([0, *sessions, int(state.get("session", 0))])
    if not latest:
        return RunView(newest, False, 0, False, False)
    launch = ledger.read_launch(latest)
    remembered = state.get("session") == latest and state.get("instance_id")
    return RunView(
        newest_in_ledger=newest,
        newest_succeeded=newest is not None
        and newest_outcome is not None
        and newest_outcome.status == SessionStatus.SUCCEEDED
        and planned(ledger, newest),
        latest=latest,
        has_outcome=ledger.get(ledger.key(layout.outcome(latest))) is not None,
        has_closed=ledger.get(ledger.key(layout.closed(latest))) is not None,
        launched_instance=launch.instance_id if launch else None,
        launched_at=launch.launched_at if launch else None,
        remembered_instance=state["instance_id"] if remembered else None,
        remembered_launched_at=state.get("launched_at") if remembered else None,
    )


def planned(ledger: RunLedger, session: int) -> bool:
    """Whether the Airflow side planned ``session`` (``launch-attempt.json``, written before any launch): an outcome
    of a session it never planned was not written by an agent it launched, and proves nothing."""
    return ledger.get(ledger.key(layout.launch_attempt(session))) is not None


def budget_history(ledger: RunLedger, before: int) -> tuple[int, int]:
    """(interruptions, failures) since the run last ended (a clear gives fresh budgets), from the ledger's
    records of the sessions before ``before``."""
    final = ledger.read_final()
    after = counted_after(final.status if final else None, final.session if final else None)
    statuses = []
    for session in ledger.list_sessions():
        if not after < session < before:  # not counted: no records to read
            continue
        outcome = ledger.read_record(Outcome, session)  # the Airflow side's verdict only matters without one
        closed = None if outcome else ledger.read_closed(session)
        statuses.append((session, ended_status(outcome, closed).value))
    return budget_use(
        statuses,
        final_status=final.status if final else None,
        final_session=final.session if final else None,
        before=before,
    )


def plan_session(ledger: RunLedger, session: int, expiry_hours: float) -> str:
    """Fix session ``session`` in the ledger before anything is launched for it, with the expiry tag every launch
    attempt of the session carries (a retried RunInstances must repeat its parameters exactly, or EC2 rejects its
    ClientToken). Returns that expiry."""
    record = ledger.read_record(LaunchAttempt, session)
    if record is not None and record.expires_at:
        return record.expires_at
    planned = LaunchAttempt(
        session=session, expires_at=expiry_tag(time.time(), expiry_hours), attempt=None, at=time.time()
    )
    try:  # created once here (the capacity trigger then overwrites it before each attempt, keeping the expiry)
        ledger.write_record(planned, session, create=True)
    except ConditionalWriteLost:
        record = ledger.read_record(LaunchAttempt, session)  # another try planned it first: use its expiry
        return record.expires_at if record is not None and record.expires_at else planned.expires_at
    return planned.expires_at


def end_run(ledger: RunLedger, session: int, status: SessionStatus, reason: str) -> None:
    """Record that the run ended (a later clear of the task starts from here)."""
    ledger.write_record(Final(status=status.value, session=session, reason=reason, at=time.time()))


def sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def ensure_agent(ledger: RunLedger, remembered: str | None, build: Callable[[], bytes]) -> str:
    """The SHA-256 of the run's agent zipapp as this task wrote it, for the user data: ``remembered`` (what an
    earlier try uploaded, from the task's state store) while S3 still holds those very bytes, else a fresh
    ``build()`` uploaded now. Never a digest of bytes read from S3 alone: any instance may have written them."""
    key = ledger.key(layout.AGENT_ZIPAPP)
    if remembered:
        stored = ledger.get(key)
        if stored is not None and sha256(stored) == remembered:
            return remembered
        if stored is not None:
            log.warning("the agent zipapp in S3 is not the one this task uploaded (changed after upload?): replaced")
    body = build()
    ledger.put(key, body)
    return sha256(body)


def ensure_spec(ledger: RunLedger, spec: Spec) -> tuple[str, bool]:
    """Write ``spec`` unless S3 holds exactly its bytes (fields a newer writer added are kept); (the SHA-256 of
    the bytes written, for the user data; whether the command changed)."""
    raw = ledger.get(ledger.key(layout.SPEC))
    stored = ledger.read_spec() if raw is not None else None
    wanted = dataclasses.replace(spec, extra=stored.extra) if stored is not None else spec
    body = wanted.to_json()
    if raw != body:
        ledger.write_record(wanted)
    return sha256(body), stored is not None and stored.command != spec.command


def deadline_context(
    ledger: RunLedger,
    *,
    given: Any,
    expected_hours: float,
    first_started_at: float,
    now: float,
    on_demand_price: float,
    records: list[dict[str, Any]],
    expected_changeover_hours: float = DEFAULT_CHANGEOVER_HOURS,
    policy: str = "default",
    prior: PriorPace | None = None,
) -> DeadlineContext:
    """A deadline= run's context for the policy: the deadline as the run's first try resolved it (written to
    ``deadline.json`` then, read back by every later try), the pace measured from ``records`` (``read_records``;
    what it has not measured yet, from ``prior``: earlier runs of the task), and whether an earlier decision
    committed the run to on-demand. Raises ValueError for a deadline that is
    not one, or one already past at the first try."""
    stored = ledger.read_record(Deadline)
    if stored is None:
        deadline_at = parse_deadline(given, first_started_at=first_started_at)
        problem = first_try_problem(deadline_at, now, expected_hours)
        if problem:
            raise ValueError(problem)
        record = Deadline(
            deadline_at=deadline_at, expected_hours=expected_hours, first_started_at=first_started_at, given=str(given)
        )
        try:
            ledger.write_record(record)
        except ConditionalWriteLost:  # another try wrote it first: theirs stands
            stored = ledger.read_record(Deadline)
        stored = stored or record
    pace = measure(
        records,
        expected_hours=stored.expected_hours,
        now=now,
        default_changeover_hours=expected_changeover_hours,
        prior=prior,
    )
    committed = any(d.get("commit") and d.get("action") == "on-demand" for d in session_decisions(ledger).values())
    return DeadlineContext(
        deadline_at=stored.deadline_at,
        first_started_at=stored.first_started_at,
        work_hours=pace.work_hours,
        progress_hours=pace.progress_hours,
        changeover_hours=pace.changeover_hours,
        on_demand_price=on_demand_price,
        committed=committed,
        policy=policy,
    )


def session_decisions(ledger: RunLedger) -> dict[int, dict[str, Any]]:
    """Each session's latest policy decision (``decision.json``), by session (a run without deadline= has none)."""
    found = {}
    for session in ledger.list_sessions():
        record = ledger.read_record(Decision, session)
        if record is not None:
            found[session] = record.to_dict()
    return found
