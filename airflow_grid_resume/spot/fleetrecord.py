"""What each capacity pool did for this deployment's runs: the fleet record, pure (no I/O).

A pool is (region, zone, instance type, market) (``ec2.launch.pool_key``). The record is one small JSON document
kept next to the runs (``<artifacts prefix>/fleet/pools.json``, written by ``spot/fleetstore.py``) with, per pool,
counters since the first observation and a bounded window of the latest observations:

- a capacity answer: a launch that worked (``capacity``) or EC2's capacity error (``no-capacity``);
- an interruption (``interrupted``: the session's instance was reclaimed), with how long it had run;
- a session that ended otherwise (``ended``: finished, failed, stopped), with how long it had run;
- the spot price paid at launch (``price``).

A spot session's lifetime stands for a spell of capacity in its pool (it launched because capacity was there): an
interruption ends the spell, any other end leaves it lasting at least that long. Per pool, the record also sums
what the deadline policy asks of the pool's whole history (``PoolStats.lasting_hours``): over the sessions that
ran at least ``lasted_hours`` (``policy.view.LASTED_HOURS``, passed in by the writer since ``spot/`` does not
import ``policy/``), the seconds they ran past it and how many of them were interrupted.

Applying observations is a pure merge, so a writer that lost a conditional write re-reads and re-applies its
observations to the newer record: two writers at once lose nothing. Observations carry an id; one already in the
window is not counted twice (a retried write whose answer was lost).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

VERSION = 1
RECENT = 32  # observations kept per pool
MAX_POOLS = 400  # pools kept; the ones observed longest ago go first
AVAILABILITY_WINDOW = 20  # the latest capacity answers that availability is the share of

CAPACITY = "capacity"
NO_CAPACITY = "no-capacity"
INTERRUPTED = "interrupted"
ENDED = "ended"
PRICE = "price"
KINDS = (CAPACITY, NO_CAPACITY, INTERRUPTED, ENDED, PRICE)

_COUNTERS = (
    "capacity",
    "no_capacity",
    "interruptions",
    "sessions",
    "up_seconds",
    "price_sum",
    "prices",
    "lasting_seconds",
    "lasting_interruptions",
)


@dataclass(frozen=True)
class Observation:
    """One thing a pool did: ``kind`` (above), when (epoch seconds), and its value (seconds up for
    ``interrupted``/``ended``, USD/h for ``price``). ``oid`` makes re-applying it harmless."""

    pool: str
    kind: str
    at: float
    value: float | None = None
    oid: str = ""

    def as_list(self) -> list:
        return [round(self.at, 3), self.kind, self.value, self.oid]


def empty() -> dict:
    return {"version": VERSION, "pools": {}}


def _pool_doc() -> dict:
    return {**{name: 0 for name in _COUNTERS}, "recent": [], "last_at": 0.0}


def apply(
    record: Mapping[str, Any] | None, observations: Iterable[Observation], *, lasted_hours: float | None = None
) -> dict:
    """The record with ``observations`` added: counters, the bounded window, at most ``MAX_POOLS`` pools.

    ``lasted_hours``: a session that ran this long counts toward the lasting counters (``lasting_seconds``,
    ``lasting_interruptions``); None leaves them as they are (the writer of session ends passes
    ``policy.view.LASTED_HOURS``; capacity answers and prices have nothing to add to them)."""
    doc: dict = {"version": VERSION, "pools": {k: _copy(v) for k, v in ((record or {}).get("pools") or {}).items()}}
    for obs in observations:
        if obs.kind not in KINDS:
            raise ValueError(f"unknown observation kind {obs.kind!r}")
        pool = doc["pools"].setdefault(obs.pool, _pool_doc())
        if obs.oid and any(len(item) > 3 and item[3] == obs.oid for item in pool["recent"]):
            continue
        _count(pool, obs, lasted_hours)
        pool["recent"].append(obs.as_list())
        pool["recent"].sort(key=lambda item: item[0])
        del pool["recent"][:-RECENT]
        pool["last_at"] = max(float(pool["last_at"]), obs.at)
    if len(doc["pools"]) > MAX_POOLS:
        keep = sorted(doc["pools"], key=lambda k: doc["pools"][k]["last_at"], reverse=True)[:MAX_POOLS]
        doc["pools"] = {k: doc["pools"][k] for k in keep}
    return doc


def _copy(pool: Mapping[str, Any]) -> dict:
    doc = _pool_doc()
    for name in _COUNTERS:
        doc[name] = pool.get(name, 0) or 0
    doc["recent"] = [list(item) for item in pool.get("recent", [])][-RECENT:]
    doc["last_at"] = float(pool.get("last_at", 0.0) or 0.0)
    return doc


def _count(pool: dict, obs: Observation, lasted_hours: float | None) -> None:
    if obs.kind == CAPACITY:
        pool["capacity"] += 1
    elif obs.kind == NO_CAPACITY:
        pool["no_capacity"] += 1
    elif obs.kind in (INTERRUPTED, ENDED):
        pool["sessions"] += 1
        up = max(0.0, obs.value or 0.0)
        pool["up_seconds"] = round(pool["up_seconds"] + up, 3)
        if obs.kind == INTERRUPTED:
            pool["interruptions"] += 1
        if lasted_hours is not None and up >= lasted_hours * 3600:
            pool["lasting_seconds"] = round(pool["lasting_seconds"] + up - lasted_hours * 3600, 3)
            if obs.kind == INTERRUPTED:
                pool["lasting_interruptions"] += 1
    elif obs.kind == PRICE and obs.value is not None:
        pool["price_sum"] = round(pool["price_sum"] + obs.value, 6)
        pool["prices"] += 1


@dataclass(frozen=True)
class PoolStats:
    """What the launch order and the deadline policy read of one pool.

    ``availability``: the share of the latest capacity answers (up to ``AVAILABILITY_WINDOW``) that had capacity,
    None without any; ``mean_up_hours``: the mean lifetime of the pool's sessions that ended, None without any;
    ``interruption_rate``: interruptions per session hour, None without any session; ``lasting_hours``: over the
    sessions that ran at least ``lasted_hours`` (``apply``), the hours they ran past it per interruption among
    them: how long a spell that lasted that long goes on after it, counting the time of the sessions that ended
    otherwise (censored: the spell lasted at least as long) without counting them as ends; with such time and no
    interruption yet, that time as if one were ending now (spells not seen to end are long, not unknown), None
    without either;
    ``lasting_spells``: those interruptions (its evidence); ``mean_spell_hours``: the sessions' hours per
    interruption, the mean spell of spot the way ``lasting_hours`` counts (a session that finished or was stopped
    lasted at least that long, no end; with none reclaimed yet, the time as if one were ending now), None without
    any session: a pool whose runs finish quickly is not a pool of short spells, as ``mean_up_hours`` would say.
    """

    pool: str
    availability: float | None
    capacity_answers: int
    mean_up_hours: float | None
    sessions: int
    interruptions: int
    interruption_rate: float | None
    mean_price: float | None
    last_price: float | None
    last_interrupted_at: float | None
    last_no_capacity_at: float | None
    lasting_hours: float | None
    lasting_spells: int
    mean_spell_hours: float | None

    @property
    def mean_spell_count(self) -> int | None:
        """How many spells ``mean_spell_hours`` is the mean over (its evidence): the interruptions, at least one."""
        return max(1, self.interruptions) if self.mean_spell_hours is not None else None

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def pool_stats(record: Mapping[str, Any] | None, pool: str) -> PoolStats:
    """One pool's stats from a fleet record (an unknown pool: every figure None or 0)."""
    doc = ((record or {}).get("pools") or {}).get(pool) or {}
    recent = [item for item in doc.get("recent", []) if len(item) >= 2]
    answers = [item[1] for item in recent if item[1] in (CAPACITY, NO_CAPACITY)][-AVAILABILITY_WINDOW:]
    if answers:
        availability: float | None = sum(1 for a in answers if a == CAPACITY) / len(answers)
    else:
        total = int(doc.get("capacity", 0)) + int(doc.get("no_capacity", 0))
        availability = int(doc.get("capacity", 0)) / total if total else None
    sessions = int(doc.get("sessions", 0))
    up_hours = float(doc.get("up_seconds", 0.0)) / 3600
    interruptions = int(doc.get("interruptions", 0))
    prices = int(doc.get("prices", 0))
    price_items = [item for item in recent if item[1] == PRICE and item[2] is not None]
    lasting_hours = float(doc.get("lasting_seconds", 0.0) or 0.0) / 3600
    lasting_spells = int(doc.get("lasting_interruptions", 0) or 0)
    return PoolStats(
        pool=pool,
        availability=availability,
        capacity_answers=int(doc.get("capacity", 0)) + int(doc.get("no_capacity", 0)),
        mean_up_hours=up_hours / sessions if sessions else None,
        sessions=sessions,
        interruptions=interruptions,
        interruption_rate=interruptions / up_hours if sessions and up_hours > 0 else None,
        mean_price=float(doc.get("price_sum", 0.0)) / prices if prices else None,
        last_price=float(price_items[-1][2]) if price_items else None,
        last_interrupted_at=_last(recent, INTERRUPTED),
        last_no_capacity_at=_last(recent, NO_CAPACITY),
        lasting_hours=lasting_hours / max(1, lasting_spells) if lasting_hours > 0 or lasting_spells else None,
        lasting_spells=lasting_spells,
        mean_spell_hours=up_hours / max(1, interruptions) if sessions else None,
    )


def fleet_stats(record: Mapping[str, Any] | None) -> dict[str, PoolStats]:
    """Every pool's stats, by pool key (what the fleet dashboard shows)."""
    return {pool: pool_stats(record, pool) for pool in sorted((record or {}).get("pools") or {})}


def _last(recent: list, kind: str) -> float | None:
    times = [float(item[0]) for item in recent if item[1] == kind]
    return max(times) if times else None


def expected_hours(stats: PoolStats, *, prior_availability: float = 0.5, prior_hours: float = 4.0) -> float:
    """The hours of running a launch into this pool is worth now: the chance it has capacity times how long
    its sessions last, each estimate pulled toward a prior while the pool has few observations (so one lucky
    answer does not outrank a pool with a long record)."""
    answers = min(stats.capacity_answers, AVAILABILITY_WINDOW)
    availability = ((stats.availability or 0.0) * answers + prior_availability * 2) / (answers + 2)
    hours = ((stats.mean_up_hours or 0.0) * stats.sessions + prior_hours) / (stats.sessions + 1)
    value = availability * hours
    return value if math.isfinite(value) else 0.0


__all__ = [
    "CAPACITY",
    "ENDED",
    "INTERRUPTED",
    "NO_CAPACITY",
    "PRICE",
    "Observation",
    "PoolStats",
    "apply",
    "empty",
    "expected_hours",
    "fleet_stats",
    "pool_stats",
]
