"""Where a session's launch goes, in which order: one pure decision over the run's pools, their fleet record
and the run's state, shared by the worker's first round and the capacity trigger (through ``LaunchPlanner``).

The rules, in this order:

1. A pair EC2 does not offer (``DescribeInstanceTypeOfferings``; or answered ``Unsupported`` in this session)
   is never tried.
2. Pairs that failed for capacity within the cool-down go last, the longest-ago failure first (the planner's
   rule since the first release).
3. The pool that just reclaimed this run (its last session was interrupted there) goes after every other pool
   that is not cooling down: the run does not walk straight back into it while another may have capacity.
4. The rest by what a launch there is worth (``fleetrecord.expected_hours``: recent capacity answers times
   session lifetimes, with priors), minus the run's own interruptions there; the spot price as the tie-breaker;
   then the DAG author's order.

Which market (spot, on-demand, or wait) is decided elsewhere (``MarketChoice``) and handed in: the fallback
counters today, the deadline policy when a run has a deadline. A choice that names a pool puts it first.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_grid_resume.ec2.launch import ON_DEMAND, SPOT, FallbackPolicy, Pair
from airflow_grid_resume.spot.fleetrecord import expected_hours, pool_stats

WAIT = "wait"
# Scores closer than this (in expected hours) count as equal, so the price decides between them.
SCORE_RESOLUTION = 0.25
# Each interruption of this very run in a pool halves what a launch there is worth to it.
OWN_INTERRUPTION_PENALTY = 0.5


@dataclass(frozen=True)
class RunState:
    """What the run itself knows: the pool its last session was reclaimed in (if it was), the pools of its
    sessions so far (oldest first), and its interruptions per pool."""

    reclaimed_in: str | None = None
    last_pools: tuple[str, ...] = ()
    interruptions_by_pool: Mapping[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "reclaimed_in": self.reclaimed_in,
            "last_pools": list(self.last_pools),
            "interruptions_by_pool": dict(self.interruptions_by_pool),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any] | None) -> RunState:
        doc = doc or {}
        return cls(
            reclaimed_in=doc.get("reclaimed_in") or None,
            last_pools=tuple(str(p) for p in doc.get("last_pools") or ()),
            interruptions_by_pool={str(k): int(v) for k, v in (doc.get("interruptions_by_pool") or {}).items()},
        )


@dataclass(frozen=True)
class MarketDecision:
    """``market``: spot, on-demand, or wait (no launch this round); ``pool``: a pair the decision prefers
    (goes first), if any; ``reason``: the words for the task log."""

    market: str
    reason: str = ""
    pool: Pair | None = None


@dataclass(frozen=True)
class MarketView:
    """What a market choice sees: the pairs the placement would try (best first), the session's counters, and
    the fleet record (``fleetrecord.pool_stats(view.record, pair.pool(SPOT))`` gives a pool's availability and
    mean session life) and the run's state."""

    pairs: Sequence[Pair]
    capacity_failures_in_a_row: int
    interruptions: int
    waited_seconds: float
    record: Mapping[str, Any] | None = None
    run: RunState | None = None


MarketChoice = Callable[[MarketView], MarketDecision]


def fallback_choice(policy: FallbackPolicy) -> MarketChoice:
    """The market choice of the ``fallback=`` counters: spot until a threshold, then on-demand."""

    def choose(view: MarketView) -> MarketDecision:
        failures, interruptions, waited = view.capacity_failures_in_a_row, view.interruptions, view.waited_seconds
        market = policy.market(capacity_failures_in_a_row=failures, interruptions=interruptions, waited_seconds=waited)
        if market == SPOT:
            return MarketDecision(market)
        reason = policy.reason(capacity_failures_in_a_row=failures, interruptions=interruptions, waited_seconds=waited)
        return MarketDecision(market, reason)

    return choose


def is_offered(pair: Pair, offered: Collection[tuple[str, str]] | None) -> bool:
    """Whether EC2 offers the pair's type in its zone; ``offered`` None: not known, so assumed."""
    return offered is None or (pair.instance_type, pair.zone) in offered


def order_pairs(
    pairs: Sequence[Pair],
    *,
    market: str,
    record: Mapping[str, Any] | None = None,
    run: RunState | None = None,
    offered: Collection[tuple[str, str]] | None = None,
    unsupported: Collection[str] = (),
    failed_at: Mapping[str, float] | None = None,
    now: float = 0.0,
    cool_down: float = 300.0,
    prices: Mapping[str, float] | None = None,
    first: Pair | None = None,
) -> list[Pair]:
    """The pairs to try for one round in ``market``, best first (the rules in the module's docstring).

    ``offered``: the (type, zone) pairs EC2 offers (None: unknown); ``unsupported``: keys of pairs answered
    ``Unsupported`` in this session; ``failed_at``: pair key -> when it last failed for capacity (the same clock
    as ``now``); ``prices``: pool key -> USD/h now (else the record's last price paid); ``first``: a pair the
    market choice prefers.
    """
    run = run or RunState()
    failed_at = failed_at or {}
    prices = prices or {}
    usable = [p for p in pairs if is_offered(p, offered) and p.key not in unsupported]
    fresh = [p for p in usable if now - failed_at.get(p.key, -1e18) >= cool_down]
    cooling = sorted((p for p in usable if p not in fresh), key=lambda p: failed_at[p.key])
    index = {p: i for i, p in enumerate(pairs)}

    def rank(pair: Pair) -> tuple:
        pool = pair.pool(market)
        stats = pool_stats(record, pool)
        worth = expected_hours(stats) * OWN_INTERRUPTION_PENALTY ** run.interruptions_by_pool.get(pool, 0)
        price = prices.get(pool, stats.last_price if stats.last_price is not None else float("inf"))
        return (pair != first, pool == run.reclaimed_in, -round(worth / SCORE_RESOLUTION), price, index[pair])

    return sorted(fresh, key=rank) + cooling


__all__ = [
    "ON_DEMAND",
    "SPOT",
    "WAIT",
    "MarketChoice",
    "MarketDecision",
    "MarketView",
    "RunState",
    "fallback_choice",
    "is_offered",
    "order_pairs",
]
