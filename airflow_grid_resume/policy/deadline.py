"""Our deadline-aware policy, and ``decide``: the one entry point the operator, the triggers and
``grid-resume simulate`` call.

The quantity that matters is the slack S = (deadline - now) - (work left): it never grows (idle time spends
it hour for hour, each start of an instance spends the changeover d, running on spot or on-demand keeps
it). Finishing on on-demand from here needs S >= d; a start on spot needs S >= 2d (its changeover, then
the changeover of the on-demand instance that must follow if spot goes away). So:

1. on spot and the pool still has it: stay (the slack was checked when the spell began);
2. S too small to ever pay a return to spot: on-demand to the end (committed), the safety net;
3. spot in a pool worth starting (its spells last longer than a changeover; from on-demand, long enough
   that the switch pays its two changeovers back): the pool with the longest spells;
4. otherwise wait only while the slack stays above a line falling steeply (straight for tight deadlines) from
   the initial slack to a reserve of a few changeovers at the deadline; below it, on-demand, kept until spot
   worth a switch returns (stopping it to idle would buy an on-demand changeover at each restart). Greedy
   spends the slack at once and then finishes on on-demand with spot around; Uniform Progress paces it to
   zero, restarting on-demand each time it falls behind, and ends committed too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from airflow_grid_resume.policy import baselines
from airflow_grid_resume.policy.view import ON_DEMAND, SPOT, WAIT, Decision, PolicyView, PoolView

EPSILON = 1e-6
NET_TOLERANCE = 1e-10
"""Float drift (sums of 1/6 h ticks) allowed at the net; as greedy, a slack of exactly 2d may still start spot."""
HISTORY_SPAN_HOURS = 12.0


@dataclass(frozen=True)
class Tuning:
    """The default policy's knobs (the values are the ones docs/benchmarks.md measured best)."""

    reserve_changeovers: float = 4.0
    """Slack kept for the end, in changeovers: enough for a few returns to spot near the deadline."""
    min_spell_changeovers: float = 0.0
    """Skip pools whose mean spell is shorter than this many changeovers (spot there only pays changeovers)."""
    reserve_share: float = 0.1
    """At most this share of the initial slack (beyond the net's 2 changeovers) is kept as the reserve."""
    pace_power: float = 6.0
    """Shape of the line: 1 spends the slack evenly (as Uniform Progress), larger spends it sooner (greedier)."""
    tight_fraction: float = 0.85
    """From this job fraction (work / deadline) on, the line is straight (Uniform Progress's pacing)."""
    switch_changeovers: float = 2.0
    """Leave on-demand for spot when the mean spell's saving pays this many on-demand changeovers."""
    greedy_when_no_return: bool = False
    """No pool's spells would pay a return from on-demand: keep no reserve, wait down to the net (greedy)."""
    leave_on_demand: bool = False
    leave_everywhere: bool = False
    greedy_below_changeovers: float = 8.0
    no_return_greedy_hours: float = 12.0
    need_evidence: bool = True
    flat_when_no_return: bool = False
    cycle_reserve: float = 0.0
    exact_net: int = 1
    greedy_min_spells: float = 20.0
    model: bool = False
    pace_scale: float = 1.0
    switch_keeps_line: int = 0
    switch_margin_changeovers: float = 0.0
    """Initial slack under this many changeovers: no line, wait down to the net (greedy)."""
    switch_slack_changeovers: float = 2.0
    """Leave on-demand for spot only with at least this many changeovers of slack."""
    """Straight line: leave on-demand to idle once ahead of the line 2d on (Uniform Progress's hysteresis)."""


DEFAULT_TUNING = Tuning()


def _pool_worth(pool: PoolView, view: PolicyView, tuning: Tuning, from_on_demand: bool) -> bool:
    if not pool.available_now:
        return False
    d = view.changeover_hours
    spell = pool.mean_up_hours
    if spell is None:
        return True
    if spell < tuning.min_spell_changeovers * d:
        return False
    if from_on_demand:
        return _spell_pays_switch(spell, pool.spot_price, view, tuning)
    return True


def _spell_pays_switch(spell: float, spot_price: float | None, view: PolicyView, tuning: Tuning) -> bool:
    # Staying on on-demand for a spell L costs L * od; switching costs L * spot for L - d of progress,
    # then d more on on-demand and a changeover back: worth it when L > 2d * od / (od - spot).
    price = spot_price if spot_price is not None else 0.0
    gain = view.on_demand_price - price
    return gain > 0 and spell * gain > tuning.switch_changeovers * view.changeover_hours * view.on_demand_price


def _best_pool(view: PolicyView, tuning: Tuning, from_on_demand: bool) -> PoolView | None:
    usable = [p for p in view.pools if _pool_worth(p, view, tuning, from_on_demand)]
    if not usable:
        return None

    def rank(pool: PoolView) -> tuple[float, float]:
        price = pool.spot_price if pool.spot_price is not None else 0.0
        return (price, -(pool.mean_up_hours or 0.0))

    return min(usable, key=rank)


def _spells_seen(view: PolicyView) -> float:
    """How many spells of spot the pools' history windows held (their evidence), from share and mean spell."""
    seen = 0.0
    for pool in view.pools:
        if pool.availability is not None and pool.mean_up_hours:
            seen += HISTORY_SPAN_HOURS * pool.availability / pool.mean_up_hours
    return seen


def _cycle_hours(view: PolicyView, tuning: Tuning) -> float | None:
    """Mean hours from one spell worth a return from on-demand to the next, across pools (rates add)."""
    rate = 0.0
    for pool in view.pools:
        a, up = pool.availability, pool.mean_up_hours
        if a is None or up is None or a <= 0 or not _spell_pays_switch(up, pool.spot_price, view, tuning):
            continue
        rate += 1 / (up / a)
    return 1 / rate if rate > 0 else None


def _spot_cycle(view: PolicyView, tuning: Tuning) -> float | None:
    """Mean length of a spot cycle (a spell and the gap after it) across the pools, when following every spell
    from on-demand pays more per hour of slack than waiting for spot; ``None`` when waiting pays more."""
    d = view.changeover_hours
    od = view.on_demand_price
    rates = []
    for pool in view.pools:
        a, up = pool.availability, pool.mean_up_hours
        if a is None or up is None or a <= 0:
            continue
        down = up * (1 - a) / a
        rates.append((1 / max(down, 1e-3), up, pool.spot_price if pool.spot_price is not None else 0.0))
    if not rates:
        return None
    total = sum(r for r, _, _ in rates)
    down = 1 / total
    up = sum(r * u for r, u, _ in rates) / total
    price = sum(r * p for r, _, p in rates) / total
    wait_value = ((up - d) * od - up * price) / (down + d)
    pace_value = (up * (od - price) - d * od) / (2 * d)
    if not _spell_pays_switch(up, price, view, tuning) or pace_value <= max(wait_value, 0.0):
        return None
    return up + down


def deadline_aware(view: PolicyView, tuning: Tuning = DEFAULT_TUNING) -> Decision:
    """Our policy (the module docstring says why each rule is there)."""
    d = view.changeover_hours
    g = view.tick_hours
    t = view.hours_elapsed
    remaining_work = view.work_hours - view.progress_hours
    remaining_time = view.deadline_hours - t
    slack = remaining_time - remaining_work
    current = view.current
    on_demand_now = current == ON_DEMAND
    on_demand_finish = t + remaining_work + (view.changeover_left_hours if on_demand_now else d)

    if current is not None and not on_demand_now:
        for here in view.pools:
            if here.name == current and here.available_now:
                return Decision(SPOT, current, f"stay on spot in {current}: {slack:.1f} h of slack")
    if view.committed_on_demand:
        return Decision(ON_DEMAND, None, "on-demand to the end: committed", True, on_demand_finish)
    if slack < 2 * d - NET_TOLERANCE * tuning.exact_net + EPSILON * (1 - tuning.exact_net):
        return Decision(
            ON_DEMAND,
            None,
            f"on-demand to the end: {slack:.1f} h of slack cannot pay a return to spot",
            True,
            on_demand_finish,
        )
    initial = view.deadline_hours - view.work_hours
    returnable = any(
        _spell_pays_switch(p.mean_up_hours, p.spot_price, view, tuning)
        for p in view.pools
        if p.mean_up_hours is not None
    )
    reserve = 2 * d + min(tuning.reserve_changeovers * d, tuning.reserve_share * max(0.0, initial - 2 * d))

    observed = any(p.mean_up_hours is not None for p in view.pools)
    greedy_mode = (
        (
            tuning.greedy_when_no_return
            or remaining_time <= tuning.no_return_greedy_hours
            or _spells_seen(view) >= tuning.greedy_min_spells
        )
        and not returnable
        and (observed or not tuning.need_evidence)
    ) or initial < tuning.greedy_below_changeovers * d

    cycle = _spot_cycle(view, tuning) if tuning.model else None
    cycle_len = _cycle_hours(view, tuning) if tuning.cycle_reserve > 0 else None

    def line(x: float) -> float:
        if greedy_mode:
            return 0.0
        if tuning.flat_when_no_return and not returnable and observed:
            return reserve
        if tuning.model:
            if cycle is None:
                return 0.0
            return 2 * d + tuning.pace_scale * 2 * d * max(0.0, view.deadline_hours - x) / cycle
        share = max(0.0, view.deadline_hours - x) / view.deadline_hours
        power = 1.0 if view.work_hours >= tuning.tight_fraction * view.deadline_hours else tuning.pace_power
        steep = reserve + (initial - reserve) * share**power
        if tuning.cycle_reserve > 0 and cycle_len is not None:
            follow = 2 * d + tuning.cycle_reserve * d * max(0.0, view.deadline_hours - x) / cycle_len
            return max(steep, min(follow, reserve + (initial - reserve) * share))
        return steep

    pool = _best_pool(view, tuning, on_demand_now)
    if pool is not None and on_demand_now and slack < tuning.switch_slack_changeovers * d:
        pool = None
    straight_line = view.work_hours >= tuning.tight_fraction * view.deadline_hours
    if (
        pool is not None
        and on_demand_now
        and (tuning.switch_keeps_line == 2 or (tuning.switch_keeps_line == 1 and straight_line))
        and slack - d < line(t + d) + tuning.switch_margin_changeovers * d
    ):
        pool = None
    if pool is not None:
        return Decision(
            SPOT, pool.name, f"{'back to ' if on_demand_now else ''}spot in {pool.name}: {slack:.1f} h of slack"
        )

    straight = view.work_hours >= tuning.tight_fraction * view.deadline_hours
    if on_demand_now and tuning.leave_on_demand and (straight or tuning.leave_everywhere):
        lead = 2 * d * view.work_hours / view.deadline_hours
        if slack - g >= max(line(t + g), max(d, 2 * d - g) + EPSILON) + lead:
            return Decision(WAIT, None, f"leave on-demand, wait for spot: {slack - line(t):.1f} h ahead of the line")
    if on_demand_now:
        # Stopping it to idle would only buy a changeover at the on-demand price when it restarts.
        return Decision(
            ON_DEMAND, None, f"stay on on-demand until spot: {slack:.1f} h of slack", False, on_demand_finish
        )
    # Waiting one interval must leave the on-demand finish (S >= d) possible; with intervals no longer than
    # a changeover this is greedy's net (S >= 2d now), with longer ones it is stricter.
    floor = max(d, 2 * d - g) - NET_TOLERANCE * tuning.exact_net + EPSILON * (1 - tuning.exact_net)
    if slack - g < max(line(t + g), floor):
        return Decision(ON_DEMAND, None, f"on-demand: {line(t) - slack:.1f} h behind the line", False, on_demand_finish)
    return Decision(WAIT, None, f"wait for spot: {slack - line(t):.1f} h ahead of the line")


POLICIES: dict[str, Callable[[PolicyView], Decision]] = {
    "default": deadline_aware,
    "uniform-progress": baselines.uniform_progress,
    "greedy": baselines.greedy,
    "on-demand": baselines.on_demand,
}


def decide(view: PolicyView, policy: str = "default") -> Decision:
    """What to do now under ``policy`` (one of ``POLICIES``)."""
    try:
        rule = POLICIES[policy]
    except KeyError:
        raise ValueError(f"unknown policy {policy!r}: choose one of {', '.join(POLICIES)}") from None
    return rule(view)
