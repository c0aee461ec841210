"""A ``deadline=`` run's glue to the deadline policy (``policy/``), pure: the deadline resolved once, the view the
policy decides from, the decision as the ledger keeps it and as people read it.

The policy is the one ``grid-resume simulate`` replays; this module only says what the run knows at a decision
point: hours since the run's first try, the work and progress in hours (``run/pace.py``), the changeover, the
pools (one per instance type and zone) and what EC2 last answered for each, and the on-demand price. The
context the triggers carry (:class:`DeadlineContext`) is plain JSON, measured by the operator before deferring.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_grid_resume.ec2.launch import ON_DEMAND, SPOT, Pair
from airflow_grid_resume.ledger.records import Decision as DecisionRecord
from airflow_grid_resume.policy import Decision, PolicyView, PoolView, decide

# What the fleet record counts as a spell that lasted (its lasting counters, which ``PoolView.lasting_hours`` is
# read from): the operator passes it on with a session's end, since spot/ does not import policy/.
from airflow_grid_resume.policy.view import LASTED_HOURS as LASTED_HOURS
from airflow_grid_resume.spot.fleetrecord import PoolStats, pool_stats

WAIT = "wait"
STOP = "stop"  # the decision record's action for a planned stop of an on-demand session (back to spot, or to wait)


def parse_deadline(given: Any, *, first_started_at: float) -> float:
    """The deadline as epoch seconds: a timezone-aware datetime, a timedelta from the run's first try, or the
    ISO datetime a template rendered to. Raises ValueError saying what to write instead."""
    if isinstance(given, timedelta):
        return first_started_at + given.total_seconds()
    if isinstance(given, datetime):
        moment = given
    elif isinstance(given, str):
        text = given.strip()
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"deadline {text!r} is not an ISO datetime: a template must render to one, e.g. "
                "'{{ data_interval_end + macros.timedelta(hours=7) }}'"
            ) from None
    else:
        raise ValueError(f"deadline must be a datetime, a timedelta or an ISO datetime string, got {given!r}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"deadline {moment.isoformat()} has no time zone: give one (e.g. +00:00)")
    return moment.timestamp()


def first_try_problem(deadline_at: float, now: float, expected_hours: float) -> str | None:
    """At the run's first try: a deadline already past is a mistake in the DAG (one that leaves less than the
    expected runtime is not: the policy runs on-demand and says it will be late)."""
    if deadline_at <= now:
        return (
            f"deadline {utc(deadline_at)} is already past at the run's first try ({utc(now)}): give a later one, "
            "or a timedelta from the first try"
        )
    return None


def utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%H:%M")


def pool_name(pair: Pair, pairs: Sequence[Pair]) -> str:
    """A pool is an instance type in a zone; named by the zone alone when the run has one type."""
    one_type = len({p.instance_type for p in pairs}) == 1
    return pair.zone if one_type else f"{pair.zone}:{pair.instance_type}"


def pool_zones(instance_types: Sequence[str], zones: Iterable[str]) -> dict[str, str]:
    """Each pool's name and its zone, as the run watch asks EC2 about them (names as :func:`pool_name`)."""
    pairs = _watch_pairs(instance_types, zones)
    return {pool_name(p, pairs): p.zone for p in pairs}


def pool_history(
    record: Mapping[str, Any] | None, instance_types: Sequence[str], zones: Iterable[str]
) -> dict[str, PoolStats]:
    """What the fleet record says of each spot pool the run watch asks about, by the names of :func:`pool_zones`."""
    if not record:
        return {}
    pairs = _watch_pairs(instance_types, zones)
    return {pool_name(p, pairs): pool_stats(record, p.pool(SPOT)) for p in pairs}


def _watch_pairs(instance_types: Sequence[str], zones: Iterable[str]) -> list[Pair]:
    return [Pair(t, z, z) for z in dict.fromkeys(zones) for t in instance_types]


@dataclass(frozen=True)
class DeadlineContext:
    """What a decision needs besides the clock and EC2's latest answers: plain JSON (``as_dict``) for triggers."""

    deadline_at: float
    first_started_at: float
    work_hours: float
    progress_hours: float
    changeover_hours: float
    on_demand_price: float
    committed: bool = False
    policy: str = "default"
    spot_prices: dict[str, float] = field(default_factory=dict)  # by pool name, when known

    def as_dict(self) -> dict[str, Any]:
        return {
            "deadline_at": self.deadline_at,
            "first_started_at": self.first_started_at,
            "work_hours": self.work_hours,
            "progress_hours": self.progress_hours,
            "changeover_hours": self.changeover_hours,
            "on_demand_price": self.on_demand_price,
            "committed": self.committed,
            "policy": self.policy,
            "spot_prices": dict(self.spot_prices),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> DeadlineContext:
        return cls(
            deadline_at=float(doc["deadline_at"]),
            first_started_at=float(doc["first_started_at"]),
            work_hours=float(doc["work_hours"]),
            progress_hours=float(doc["progress_hours"]),
            changeover_hours=float(doc["changeover_hours"]),
            on_demand_price=float(doc["on_demand_price"]),
            committed=bool(doc.get("committed")),
            policy=str(doc.get("policy") or "default"),
            spot_prices={str(k): float(v) for k, v in (doc.get("spot_prices") or {}).items()},
        )

    def view(
        self,
        now: float,
        *,
        pools: Mapping[str, bool | None],
        current: str | None = None,
        progress_hours: float | None = None,
        changeover_left_hours: float = 0.0,
        tick_seconds: float = 0.0,
        history: Mapping[str, PoolStats] | None = None,
        spot_since: Mapping[str, float] | None = None,
    ) -> PolicyView:
        """The policy's view at ``now``: ``pools`` maps each pool's name to whether spot is there now (None:
        not known), ``current`` is None (no instance), ``"on-demand"`` or the spot pool's name; ``history`` what
        the fleet record says of each pool (the share of capacity answers that had capacity, hours of spot per
        interruption, how long sessions that lasted ``LASTED_HOURS`` went on);
        ``spot_since`` when the caller first saw spot in a pool in an unbroken run of answers (epoch seconds)."""
        history = history or {}
        since = spot_since or {}
        return PolicyView(
            hours_elapsed=max(0.0, (now - self.first_started_at) / 3600.0),
            progress_hours=self.progress_hours if progress_hours is None else progress_hours,
            work_hours=self.work_hours,
            deadline_hours=max(0.0, (self.deadline_at - self.first_started_at) / 3600.0),
            changeover_hours=self.changeover_hours,
            on_demand_price=self.on_demand_price,
            current=current,
            committed_on_demand=self.committed,
            pools=tuple(
                self._pool_view(name, up, history.get(name), now, since.get(name)) for name, up in pools.items()
            ),
            changeover_left_hours=changeover_left_hours,
            tick_hours=tick_seconds / 3600.0,
        )

    def _pool_view(
        self, name: str, up: bool | None, stats: PoolStats | None, now: float, since: float | None
    ) -> PoolView:
        """One pool as the policy sees it: spot now, and what the fleet record says of it (``stats``, None when
        it has nothing on the pool)."""
        return PoolView(
            name=name,
            available_now=up,
            availability=stats.availability if stats else None,
            mean_up_hours=stats.mean_spell_hours if stats else None,
            spot_price=self.spot_prices.get(name),
            up_hours=up_hours(stats, up, now, since),
            long_mean_up_hours=stats.mean_spell_hours if stats else None,  # the record is its whole history
            lasting_hours=stats.lasting_hours if stats else None,
            lasting_spells=stats.lasting_spells if stats else None,
            mean_up_spells=stats.mean_spell_count if stats else None,
        )

    def decide(self, view: PolicyView) -> Decision:
        return decide(view, self.policy)


def up_hours(stats: PoolStats | None, up: bool | None, now: float, since: float | None = None) -> float | None:
    """How long a pool with spot now has had it: since the caller first saw it there (``since``), else as far as
    the fleet record knows, since its last answer without capacity or its last interruption (None: not known,
    or never seen without spot; 0 when spot is not there)."""
    if up is None:
        return None
    if not up:
        return 0.0
    seen = (since,) if stats is None else (since, stats.last_no_capacity_at, stats.last_interrupted_at)
    known = [at for at in seen if at is not None]
    return max(0.0, (now - max(known)) / 3600.0) if known else None


def ahead_hours(view: PolicyView) -> float:
    """Progress against the straight line from nothing at the first try to all the work at the deadline
    (hours of work; negative: behind)."""
    if view.deadline_hours <= 0:
        return view.progress_hours - view.work_hours
    return view.progress_hours - view.work_hours * min(1.0, view.hours_elapsed / view.deadline_hours)


def predicted_finish(view: PolicyView, decision: Decision, ctx: DeadlineContext) -> float | None:
    """When the run ends if it runs from now on as decided (epoch seconds): the policy's own prediction when it
    gives one, else the work left plus a changeover when an instance has to start. None while it waits."""
    if decision.predicted_finish_hours is not None:
        return ctx.first_started_at + decision.predicted_finish_hours * 3600.0
    if decision.action == WAIT:
        return None
    left = max(0.0, view.work_left_hours)
    starting = view.current is None or (decision.action == SPOT and decision.pool != view.current)
    start = view.changeover_hours if starting else view.changeover_left_hours
    return ctx.first_started_at + (view.hours_elapsed + start + left) * 3600.0


def decision_record(
    decision: Decision, view: PolicyView, ctx: DeadlineContext, *, point: str, now: float, action: str | None = None
) -> DecisionRecord:
    """The ledger's record of one decision (``sessions/N/decision.json``)."""
    return DecisionRecord(
        action=action or decision.action,
        at=now,
        point=point,
        pool=decision.pool,
        reason=decision.reason,
        commit=bool(decision.commit or ctx.committed),
        deadline_at=ctx.deadline_at,
        predicted_finish=predicted_finish(view, decision, ctx),
        ahead_hours=round(ahead_hours(view), 4),
        work_hours=round(view.work_hours, 6),
        progress_hours=round(view.progress_hours, 6),
        changeover_hours=round(view.changeover_hours, 6),
    )


def same_decision(a: DecisionRecord | None, b: DecisionRecord) -> bool:
    """Whether ``b`` says what ``a`` said (then it is not written again: one PUT per change, never per poll)."""
    return a is not None and (a.action, a.pool, a.point, a.commit) == (b.action, b.pool, b.point, b.commit)


def decision_line(doc: Mapping[str, Any]) -> str:
    """A decision as the run view and the task log say it: what, why, the predicted finish and the deadline."""
    action, pool, reason = doc.get("action"), doc.get("pool"), str(doc.get("reason") or "")
    words = {
        SPOT: f"spot in {pool}" if pool else "spot",
        ON_DEMAND: "on-demand" + (" to the end" if doc.get("commit") else ""),
        WAIT: "wait for spot",
        STOP: f"planned stop, back to spot in {pool}" if pool else "planned stop, to wait for spot",
    }.get(str(action), str(action))
    # The policy's reason starts with what it decided ("on-demand: 1.3 h behind the line"); a stop says it first.
    parts = [f"{words}: {reason}" if action == STOP or not reason else reason]
    ahead = doc.get("ahead_hours")
    deadline_at = doc.get("deadline_at")
    if isinstance(ahead, (int, float)) and isinstance(deadline_at, (int, float)):
        side = "ahead of" if ahead >= 0 else "behind"
        parts.append(f"{abs(ahead):.2f} h {side} the line to {clock(deadline_at)}")
    finish = doc.get("predicted_finish")
    if isinstance(finish, (int, float)):
        late = isinstance(deadline_at, (int, float)) and finish > deadline_at
        parts.append(f"predicted finish {clock(finish)} UTC{' (late)' if late else ''}")
    return "; ".join(parts)


class LaunchChooser:
    """The policy at a session's launch (the operator's first round, every capacity round), as the launch
    planner (``spot/planner.py``) asks it: ``(pairs, answers, waited) -> (market, pair keys first, record)``.

    ``answers`` holds, by pair key, what EC2 answered this round (False: no spot capacity); a pool not asked
    yet counts as available, since asking is how it is known (a spot request without capacity costs nothing):
    so each round asks the policy first as if spot were there, and again once the pools it named said no.
    ``record`` is the decision for the ledger (the launcher records a round's last one when it changed). Once a
    decision commits to on-demand, every later one keeps it."""

    def __init__(
        self,
        ctx: DeadlineContext,
        *,
        point: str,
        tick_seconds: float,
        clock_now: Any = None,
        record: Mapping[str, Any] | None = None,
    ) -> None:
        self.ctx = ctx
        self.record = record  # the fleet record (spot/fleetrecord.py): each pool's availability and lifetimes
        self.point = point
        self.tick_seconds = tick_seconds
        self.last: DecisionRecord | None = None
        self.clock_now = clock_now or time.time

    def __call__(
        self, pairs: Sequence[Pair], answers: Mapping[str, bool | None], waited: float
    ) -> tuple[str, tuple[str, ...], DecisionRecord | None]:
        now = self.clock_now()
        pools: dict[str, bool | None] = {}
        for pair in pairs:
            name = pool_name(pair, pairs)
            answer = answers.get(pair.key)
            pools[name] = bool(pools.get(name)) or (True if answer is None else bool(answer))
        history = {pool_name(p, pairs): pool_stats(self.record, p.pool(SPOT)) for p in pairs} if self.record else {}
        view = self.ctx.view(now, pools=pools, tick_seconds=self.tick_seconds, history=history)
        decision = self.ctx.decide(view)
        if decision.commit and not self.ctx.committed:
            self.ctx = replace(self.ctx, committed=True)
        record = decision_record(decision, view, self.ctx, point=self.point, now=now)
        self.last = record
        first = tuple(p.key for p in pairs if decision.pool and pool_name(p, pairs) == decision.pool)
        market = {SPOT: SPOT, ON_DEMAND: ON_DEMAND}.get(decision.action, WAIT)
        return market, first, record


def watch_choice(
    ctx: DeadlineContext,
    pools: Mapping[str, bool | None],
    *,
    now: float,
    launched_at: float,
    progress_hours: float,
    tick_seconds: float,
    spot_since: Mapping[str, float] | None = None,
    history: Mapping[str, PoolStats] | None = None,
) -> DecisionRecord:
    """The decision about a session running on on-demand (the run watch, periodically): stay, or a planned
    stop to go back to spot (``stop``) when the policy would rather wait for spot or start it. ``pools`` says
    which pools have spot now, as far as known (None: not known; the policy then stays on on-demand);
    ``spot_since`` when the watch first saw spot in each, in an unbroken run of checks (the policy leaves
    on-demand only for spot that has lasted a while); ``history`` what the fleet record says of each pool
    (:func:`pool_history`: with it, the policy can also stop on-demand to wait where no return to spot pays)."""
    changeover_left = max(0.0, ctx.changeover_hours - (now - launched_at) / 3600.0)
    view = ctx.view(
        now,
        pools=pools,
        current=ON_DEMAND,
        progress_hours=progress_hours,
        changeover_left_hours=changeover_left,
        tick_seconds=tick_seconds,
        spot_since=spot_since,
        history=history,
    )
    decision = ctx.decide(view)
    stop = decision.action in (SPOT, WAIT) and not decision.commit
    return decision_record(decision, view, ctx, point="watch", now=now, action=STOP if stop else ON_DEMAND)


def running_progress(
    ctx: DeadlineContext, progress: Mapping[str, Any] | None, *, now: float, launched_at: float
) -> float:
    """Progress in hours of a session running now: from its heartbeat's DONE/TOTAL when it printed them, else
    the progress before it plus the hours it ran past a changeover."""
    if progress:
        try:
            done, total = int(progress.get("done") or 0), int(progress.get("total") or 0)
        except (TypeError, ValueError):
            done = total = 0
        if total > 0:
            return ctx.work_hours * min(1.0, done / total)
    ran = max(0.0, (now - launched_at) / 3600.0 - ctx.changeover_hours)
    return min(ctx.work_hours, ctx.progress_hours + ran)


# A spot placement score (1 to 10) from which spot counts as there now: EC2 documents 10 as "highly likely" to
# succeed and 1 as "not likely"; a return to spot costs a changeover, so only a high score is taken.
PLACEMENT_SCORE_AVAILABLE = 7


def pools_from_scores(pools: Mapping[str, str], scores: Mapping[str, int] | None) -> dict[str, bool | None]:
    """Whether each pool (name -> zone) has spot now, from EC2's placement scores by zone (None: not known)."""
    if scores is None:
        return dict.fromkeys(pools)
    return {
        name: (scores[zone] >= PLACEMENT_SCORE_AVAILABLE if zone in scores else None) for name, zone in pools.items()
    }


def watch_interval(ctx: DeadlineContext) -> float:
    """Seconds between the run watch's questions to the policy about an on-demand session: a quarter of a
    changeover (a stop decided later than that costs less than the changeover it would pay), 5 s to 5 min."""
    return min(300.0, max(5.0, ctx.changeover_hours * 3600.0 / 4))
