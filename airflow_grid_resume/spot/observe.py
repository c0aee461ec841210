"""What the fleet record learns from a run, and what the launch order learns from the run itself: pure
translations of launcher events and session records into fleet observations and a ``RunState``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from airflow_grid_resume.ec2.launch import ON_DEMAND, SPOT, pool_key, region_of_zone
from airflow_grid_resume.ledger.status import counts_as_interruption
from airflow_grid_resume.spot import fleetrecord
from airflow_grid_resume.spot.fleetrecord import Observation
from airflow_grid_resume.spot.placement import RunState

# Capacity answers one launch event carries (the latest ones): the record's window is smaller anyway.
MAX_ANSWERS = 40


def session_pool(launch: Mapping[str, Any]) -> str | None:
    """The pool a session's instance ran in, from its launch record or launched event; None if unknown."""
    zone, instance_type = launch.get("zone"), launch.get("instance_type")
    if not zone or not instance_type:
        return None
    market = ON_DEMAND if launch.get("lifecycle") == ON_DEMAND else SPOT
    return pool_key(str(launch.get("region") or region_of_zone(str(zone))), str(zone), str(instance_type), market)


def answers_of_launch(event: Mapping[str, Any], run_uri: str, session: int) -> list[Observation]:
    """A launcher event's capacity answers (``answers``: ``[pool, kind, at]``), the capacity it found, and the
    spot price paid. Ids from the run and session make a retried write harmless."""
    found: list[Observation] = []
    for n, item in enumerate(event.get("answers") or []):
        pool, kind, at = str(item[0]), str(item[1]), float(item[2])
        found.append(Observation(pool, kind, at, oid=f"{run_uri}#{session}#a{n}@{at:.3f}"))
    launched = session_pool(event) if event.get("status") == "launched" and not event.get("reused") else None
    if launched:
        at = float(event.get("launched_at") or 0.0)
        found.append(Observation(launched, fleetrecord.CAPACITY, at, oid=f"{run_uri}#{session}#launched"))
        if event.get("spot_price"):
            price = float(event["spot_price"])
            found.append(Observation(launched, fleetrecord.PRICE, at, price, oid=f"{run_uri}#{session}#price"))
    return found


def end_of_session(
    launch: Mapping[str, Any] | None, status: str | None, at: float, run_uri: str, session: int
) -> list[Observation]:
    """A session ended: how long it ran in its pool, and whether the pool reclaimed it."""
    if not launch or not status:
        return []
    pool = session_pool(launch)
    launched_at = launch.get("launched_at")
    if pool is None or launched_at is None:
        return []
    kind = fleetrecord.INTERRUPTED if counts_as_interruption(status) else fleetrecord.ENDED
    up = max(0.0, at - float(launched_at))
    return [Observation(pool, kind, at, round(up, 3), oid=f"{run_uri}#{session}#ended")]


def run_state(sessions: Sequence[tuple[Mapping[str, Any] | None, str | None]]) -> RunState:
    """The run's own story, from its earlier sessions' (launch record, how it ended), oldest first."""
    pools: list[str] = []
    interrupted: dict[str, int] = {}
    reclaimed: str | None = None
    for launch, status in sessions:
        pool = session_pool(launch) if launch else None
        reclaimed = pool if pool and status and counts_as_interruption(status) else None
        if pool is None:
            continue
        pools.append(pool)
        if reclaimed:
            interrupted[pool] = interrupted.get(pool, 0) + 1
    return RunState(reclaimed_in=reclaimed, last_pools=tuple(pools[-5:]), interruptions_by_pool=interrupted)


def capacity_answers(answers: Iterable[Mapping[str, Any]], at: float) -> list[list]:
    """The ``answers`` of a round (SessionLauncher's per-pair answers) as ``[pool, kind, at]`` items: only the
    capacity errors are about the pool (throttling and 5xx are about the account or the API)."""
    items = []
    for answer in answers:
        if answer.get("kind") != "capacity":
            continue
        pool = session_pool(answer)
        if pool:
            items.append([pool, fleetrecord.NO_CAPACITY, round(at, 3)])
    return items


__all__ = ["MAX_ANSWERS", "answers_of_launch", "capacity_answers", "end_of_session", "run_state", "session_pool"]
