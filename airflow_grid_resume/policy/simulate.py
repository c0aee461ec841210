"""Replay spot traces through a policy, tick by tick, in the model of issue 25 ("Can't Be Late", section 3.1).

Time advances in ticks of the traces' gap from tick ``start``. A decision is taken at the start of each
tick knowing every pool's data up to and including that tick. A spot instance is preempted at the start of
the first tick its pool shows 0. Every start of an instance (from idle, or a switch between pools or markets)
bills ``changeover`` hours without progress; idle costs nothing; progress is never lost; billing stops the
instant progress reaches the work. A run that has not finished when the shortest trace ends has no cost and
no finish, and misses its deadline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from airflow_grid_resume.policy.deadline import decide
from airflow_grid_resume.policy.traces import HISTORY_HOURS, Trace, TraceError, check_aligned
from airflow_grid_resume.policy.view import HOURS_TOLERANCE, ON_DEMAND, SPOT, WAIT, Decision, PolicyView


@dataclass(frozen=True)
class SimResult:
    start: int
    policy: str
    cost: float | None
    finish_hours: float | None
    deadline_met: bool
    spot_hours: float
    on_demand_hours: float
    changeovers: int


def simulate(
    traces: Sequence[Trace],
    work: float,
    deadline: float,
    changeover: float,
    spot_prices: Mapping[str, float],
    on_demand_price: float,
    start: int,
    policy: str = "default",
    on_decision: Callable[[int, PolicyView, Decision], None] | None = None,
) -> SimResult:
    """One run from tick ``start`` (an index into the traces) under ``policy``; ``on_decision`` sees each
    tick's view and decision (for the explanations and for tests that play an adversary)."""
    check_aligned(traces)
    length = min(len(t.data) for t in traces)
    if not 0 <= start < length:
        raise TraceError(f"start {start} is outside the traces (ticks 0 to {length - 1})")
    if work <= 0 or deadline < work or changeover < 0:
        raise TraceError("need work > 0, deadline >= work and changeover >= 0 (hours)")
    missing = [t.name for t in traces if t.name not in spot_prices]
    if missing:
        raise TraceError(f"no spot price for {', '.join(missing)}")
    g = traces[0].tick_hours
    window = max(1, round(HISTORY_HOURS / g))
    pool_views = [t.pool_views(spot_prices[t.name], window) for t in traces]
    ups = [t.up for t in traces]
    by_name = {t.name: i for i, t in enumerate(traces)}

    current: str | None = None
    left = 0.0  # changeover still to pay on the current instance
    committed = False
    progress = 0.0
    spot_hours = on_demand_hours = cost = 0.0
    changeovers = 0
    for k in range(length - start):
        tick = start + k
        if current is not None and current != ON_DEMAND and not ups[by_name[current]][tick]:
            current, left = None, 0.0  # preempted at the start of the tick
        view = PolicyView(
            hours_elapsed=k * g,
            progress_hours=progress,
            work_hours=work,
            deadline_hours=deadline,
            changeover_hours=changeover,
            on_demand_price=on_demand_price,
            current=current,
            committed_on_demand=committed,
            pools=tuple(views[tick] for views in pool_views),
            changeover_left_hours=left,
            tick_hours=g,
        )
        decision = decide(view, policy)
        if on_decision is not None:
            on_decision(tick, view, decision)
        if decision.action == WAIT:
            target: str | None = None
        elif decision.action == ON_DEMAND:
            target = ON_DEMAND
        elif decision.action == SPOT and decision.pool in by_name and ups[by_name[decision.pool]][tick]:
            target = decision.pool
        else:
            raise ValueError(f"policy {policy} chose {decision} at tick {tick}, which the traces do not allow")
        committed = committed or decision.commit
        if target != current:
            current = target
            if target is not None:
                changeovers += 1
                left = changeover
        if current is None:
            continue
        paid = min(left, g)
        left -= paid
        price = on_demand_price if current == ON_DEMAND else spot_prices[current]
        billed = g
        done = progress + (g - paid) >= work - HOURS_TOLERANCE
        if done:
            billed = paid + (work - progress)
        progress += g - paid
        cost += billed * price
        if current == ON_DEMAND:
            on_demand_hours += billed
        else:
            spot_hours += billed
        if done:
            finish = k * g + billed
            return SimResult(
                start,
                policy,
                cost,
                finish,
                finish <= deadline + HOURS_TOLERANCE,
                spot_hours,
                on_demand_hours,
                changeovers,
            )
    return SimResult(start, policy, None, None, False, spot_hours, on_demand_hours, changeovers)
