"""The run's own pace, measured from its ledger (pure): steps per hour, the work in hours, how far it got, and
what one changeover costs (launch, boot, restore, steps redone).

A ``deadline=`` run starts from the DAG author's ``expected_runtime``; once the command has printed progress lines
(``grid-resume: progress DONE/TOTAL``, agent/progress.py) the agent records when it read the first and the latest
of each session (``first_at``, ``done_at``/``last_at``), and the run's own rate replaces the guess. Every number is
from the session records :func:`~airflow_grid_resume.run.summary.read_records` gives (launch, outcome, heartbeat).
Until the run has measured its own, what earlier runs of the same task measured stands in (``PriorPace``, from the
task's pace record: ``with_run`` adds a finished run to it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_grid_resume.agent.progress import steps_lost
from airflow_grid_resume.run.summary import epoch_seconds

# What a changeover costs until this run has measured one (the and the paper's 0.2 h).
DEFAULT_CHANGEOVER_HOURS = 0.2
# A rate is trusted once a session advanced this many steps over a measured span.
MIN_STEPS_FOR_RATE = 2
# The task's pace record keeps this many of its latest runs (a new model or new data moves the pace: recent counts).
PRIOR_RUNS = 5
PACE_FORMAT = "grid-resume-task-pace/1"


@dataclass(frozen=True)
class SessionPace:
    """What one session's progress reports say: its first and latest step and when they were read."""

    session: int
    launched_at: float | None
    first: int | None
    first_at: float | None
    last: int | None
    last_at: float | None
    total: int | None


@dataclass(frozen=True)
class Pace:
    """The run's pace as measured so far. ``steps_per_hour``, ``total_steps`` and ``changeover_measured`` are this
    run's own (None / False until measured); ``work_hours`` and ``changeover_hours`` are what the policy uses: the
    run's own, else earlier runs' (``PriorPace``), else the author's guess and the default."""

    work_hours: float
    progress_hours: float
    changeover_hours: float
    steps_per_hour: float | None = None
    done_steps: int | None = None
    total_steps: int | None = None
    changeover_measured: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "work_hours": self.work_hours,
            "progress_hours": self.progress_hours,
            "changeover_hours": self.changeover_hours,
            "steps_per_hour": self.steps_per_hour,
            "done_steps": self.done_steps,
            "total_steps": self.total_steps,
            "changeover_measured": self.changeover_measured,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Pace:
        return cls(
            work_hours=float(doc["work_hours"]),
            progress_hours=float(doc["progress_hours"]),
            changeover_hours=float(doc["changeover_hours"]),
            steps_per_hour=None if doc.get("steps_per_hour") is None else float(doc["steps_per_hour"]),
            done_steps=None if doc.get("done_steps") is None else int(doc["done_steps"]),
            total_steps=None if doc.get("total_steps") is None else int(doc["total_steps"]),
            changeover_measured=bool(doc.get("changeover_measured")),
        )


@dataclass(frozen=True)
class PriorPace:
    """What earlier runs of the same task measured (means over ``runs`` of them; each None when none did)."""

    runs: int
    steps_per_hour: float | None = None
    total_steps: int | None = None
    """The latest run's total (the same script prints the same total until its config changes)."""
    changeover_hours: float | None = None


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def prior_pace(record: Mapping[str, Any] | None) -> PriorPace | None:
    """The task's pace record (``with_run``'s documents) as a prior; None without a run in it."""
    runs = [r for r in (record or {}).get("runs") or [] if isinstance(r, Mapping)]
    if not runs:
        return None

    def floats(name: str) -> list[float]:
        out = []
        for r in runs:
            try:
                value = float(r[name])
            except (KeyError, TypeError, ValueError):
                continue
            if value > 0:
                out.append(value)
        return out

    totals = [t for t in (_int(r.get("total_steps")) for r in runs) if t]
    return PriorPace(
        runs=len(runs),
        steps_per_hour=_mean(floats("steps_per_hour")),
        total_steps=totals[-1] if totals else None,
        changeover_hours=_mean(floats("changeover_hours")),
    )


def with_run(record: Mapping[str, Any] | None, run: str, pace: Pace, at: float) -> dict[str, Any] | None:
    """The task's pace record with ``run``'s measurements (replacing an earlier entry of the same run), keeping
    the latest ``PRIOR_RUNS``; None when the run measured nothing worth keeping (no rate, no changeover)."""
    if pace.steps_per_hour is None and not pace.changeover_measured:
        return None
    entry = {
        "run": run,
        "at": round(at, 3),
        "steps_per_hour": pace.steps_per_hour,
        "total_steps": pace.total_steps,
        "changeover_hours": pace.changeover_hours if pace.changeover_measured else None,
    }
    runs = [r for r in (record or {}).get("runs") or [] if isinstance(r, Mapping) and r.get("run") != run]
    return {"format": PACE_FORMAT, "runs": [*runs, entry][-PRIOR_RUNS:]}


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def session_pace(record: Mapping[str, Any]) -> SessionPace:
    """One session's progress: from its outcome, else (still running, or lost) from its last heartbeat."""
    launch = record.get("launch") or {}
    outcome = (record.get("outcome") or {}).get("progress") or {}
    beat = (record.get("heartbeat") or {}).get("progress") or {}
    if outcome:
        last, last_at = _int(outcome.get("last")), epoch_seconds(outcome.get("last_at"))
        doc = outcome
    else:
        last, last_at = _int(beat.get("done")), epoch_seconds(beat.get("done_at"))
        doc = beat
    return SessionPace(
        session=int(record.get("session") or 0),
        launched_at=epoch_seconds(launch.get("launched_at")),
        first=_int(doc.get("first")),
        first_at=epoch_seconds(doc.get("first_at")),
        last=last,
        last_at=last_at,
        total=_int(doc.get("total")),
    )


def steps_per_hour(sessions: Sequence[SessionPace]) -> float | None:
    """Steps over the hours between each session's first and latest progress line, all sessions together
    (a restore or a boot is not in it: that is the changeover's). None until enough was measured."""
    steps = seconds = 0.0
    for s in sessions:
        if None in (s.first, s.last, s.first_at, s.last_at):
            continue
        assert s.first is not None and s.last is not None and s.first_at is not None and s.last_at is not None
        if s.last > s.first and s.last_at > s.first_at:
            steps += s.last - s.first
            seconds += s.last_at - s.first_at
    if steps < MIN_STEPS_FOR_RATE or seconds <= 0:
        return None
    return steps * 3600.0 / seconds


def changeover_hours(sessions: Sequence[SessionPace], rate: float | None) -> float | None:
    """The mean cost of starting a session, in hours without new progress: from its launch to its first
    progress line, plus the steps it redid (the previous session's last minus its first, at ``rate``).
    None until a session has both a launch and a first progress line."""
    costs = []
    previous: SessionPace | None = None
    for s in sessions:
        if s.launched_at is not None and s.first_at is not None and s.first_at >= s.launched_at:
            hours = (s.first_at - s.launched_at) / 3600.0
            redone = steps_lost(previous.last if previous else None, s.first)
            if redone and rate:
                hours += redone / rate
            costs.append(hours)
        previous = s
    return sum(costs) / len(costs) if costs else None


def measure(
    records: Sequence[Mapping[str, Any]],
    *,
    expected_hours: float,
    now: float,
    running_since: float | None = None,
    default_changeover_hours: float = DEFAULT_CHANGEOVER_HOURS,
    prior: PriorPace | None = None,
) -> Pace:
    """The run's pace from its session records (in session order). Without progress lines the progress is
    the hours its sessions ran past their changeover (an estimate; a printed total makes it exact). What the
    run has not measured yet, earlier runs of the task (``prior``) did: their rate, their total (until this run
    prints its own) and their changeover, before ``expected_hours`` and ``default_changeover_hours``."""
    sessions = [session_pace(r) for r in records]
    own_rate = steps_per_hour(sessions)
    rate = own_rate if own_rate is not None else (prior.steps_per_hour if prior else None)
    measured = changeover_hours(sessions, rate)
    prior_change = prior.changeover_hours if prior else None
    change = next((c for c in (measured, prior_change) if c is not None), default_changeover_hours)
    own_total = next((s.total for s in reversed(sessions) if s.total), None)
    total = own_total if own_total is not None else (prior.total_steps if prior else None)
    done = max((s.last for s in sessions if s.last is not None), default=None)
    work = total / rate if total and rate else expected_hours
    if done is not None and total:
        progress = work * min(1.0, done / total)
    elif done is not None and rate:
        progress = min(work, done / rate)
    else:
        ran = 0.0
        for r, s in zip(records, sessions, strict=True):
            start = s.launched_at
            end = _session_end(r) or (now if running_since is not None and s is sessions[-1] else None)
            if start is not None and end is not None:
                ran += max(0.0, (end - start) / 3600.0 - change)
        progress = min(work, ran)
    return Pace(
        work_hours=work,
        progress_hours=progress,
        changeover_hours=change,
        steps_per_hour=own_rate,
        done_steps=done,
        total_steps=own_total,
        changeover_measured=measured is not None,
    )


def _session_end(record: Mapping[str, Any]) -> float | None:
    ends = [
        epoch_seconds((record.get("outcome") or {}).get("ended_at")),
        epoch_seconds((record.get("closed") or {}).get("at")),
    ]
    known = [e for e in ends if e is not None]
    return max(known) if known else None
