"""Our deadline-aware policy, and ``decide``: the one entry point the operator, the triggers and
``grid-resume simulate`` call.

The quantity that matters is the slack S = (deadline - now) - (work left): it never grows (idle time spends
it hour for hour, each start of an instance spends the changeover d, running on spot or on-demand keeps
it). Finishing on on-demand from here needs S >= d; a start on spot needs S >= 2d (its changeover, then
the changeover of the on-demand instance that must follow if spot goes away). So:

1. on spot and the pool still has it: stay (the slack was checked when the spell began);
2. S below 2d, no return to spot can ever be paid: on-demand to the end (committed), the safety net;
3. spot in a pool worth starting (from on-demand, only when spot has been there half an hour already, so a
   flicker after a long spell is sat out, and what such a spell can expect pays the switch's changeovers three
   times over: the window's mean spell, or how long the whole history's spells went on after half an hour,
   whichever is longer): the cheapest pool, the first given unless the whole known history's mean spell of
   another one, counted up to the work left, is clearly (2 times) longer (the window's mean and spot's age now
   only move cost around between pools that differ less);
4. otherwise wait only while the slack stays above a line falling steeply (straight for tight deadlines) from
   the initial slack to a reserve of a few changeovers at the deadline; below it, on-demand, kept until spot
   worth a switch returns (stopping it to idle would buy an on-demand changeover at each restart). The line
   only pays when spot later comes back in spells worth leaving on-demand for: where the history says it
   will not (no pool's spells pay a return by rule 3's measure, each mean divided by 1 + 2.5 / sqrt(n) for the
   n spells behind it and counted only up to the work a return could still do, with a window's worth of time
   left, with 20 spells seen where the whole history is thin (under 10 lasting spells, or not known), or with
   the whole history agreeing; or the pools' whole known history, 10 spells or more that lasted half an hour
   (2 where the window agrees, its spells counted in the margin), shows them going on too briefly after that to
   pay one, with a margin that shrinks as the spells add up), or the initial slack is under 8 changeovers,
   there is no line: wait down to the net, as greedy does. Nor under 3 changeovers of slack: on-demand started
   there could never be left for spot, so it costs the same started at the net. A run that went on-demand on
   its line before the history said so leaves on-demand to wait as greedy would, when the spot that waiting can
   catch saves more than the changeover of the restart.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from airflow_grid_resume.policy.baselines import greedy, on_demand, uniform_progress
from airflow_grid_resume.policy.view import (
    HOURS_TOLERANCE,
    LASTED_HOURS,
    ON_DEMAND,
    SPOT,
    WAIT,
    Decision,
    PolicyView,
    PoolView,
)

HISTORY_SPAN_HOURS = 12.0
"""The span of ``PoolView``'s history (``traces.HISTORY_HOURS``; the operator's pool history keeps the same)."""


@dataclass(frozen=True)
class Tuning:
    """The default policy's knobs (the values are the ones docs/benchmarks.md measured best)."""

    reserve_changeovers: float = 12.0
    """At most this much slack beyond the net is kept for the end, in changeovers: room for several returns to spot
    near the deadline (a two-day run at 0.6 keeps 11, at 0.8 4)."""
    min_spell_changeovers: float = 0.0
    """Skip pools whose mean spell is shorter than this many changeovers (0: take any spell from idle)."""
    reserve_share: float = 0.07
    """At most this share of the initial slack (beyond the net's 2 changeovers) is kept as the reserve."""
    pace_power: float = 6.0
    """Shape of the line: 1 spends the slack evenly (as Uniform Progress), larger spends it sooner (greedier)."""
    tight_fraction: float = 0.85
    """From this job fraction (work / deadline) on, the line is straight (Uniform Progress's pacing)."""
    switch_changeovers: float = 3.0
    """Leave on-demand for spot when the mean spell's saving pays this many on-demand changeovers."""
    greedy_below_changeovers: float = 8.0
    """Initial slack under this many changeovers: no line, wait down to the net (greedy)."""
    no_return_hours: float = HISTORY_SPAN_HOURS
    """With this little time left, trust the history: no pool worth a return from on-demand means no line."""
    no_return_spells: float = 20.0
    """With this many spells in the window, trust it for longer runs too, but only where the whole history is thin
    (fewer than ``lasting_spells`` lasting spells, or not known): a history that rich is the better judge."""
    rank_lead: float = 2.0
    """Among equal prices, take a pool other than the first given only when its whole history's mean spell (up to
    the work left) is this many times the first's."""
    return_seen_hours: float = LASTED_HOURS
    """Leave on-demand only for spot seen there this long already (``PoolView.up_hours``; unknown: no filter)."""
    line_floor_changeovers: float = 3.0
    """Below this slack in changeovers, no line: wait to the net (3: on-demand could never be left for spot)."""
    restart_changeovers: float = 1.0
    """Leave on-demand to wait for spot (where no return pays) when waiting saves this many on-demand changeovers."""
    lasting_spells: float = 10.0
    """Trust the pools' whole known history (``PoolView.lasting_hours``) once it holds this many spells."""
    lasting_margin: float = 1.4
    """The whole history rules out a return from on-demand when spells that lasted half an hour went on for less
    than 1 / margin of what a return needs (``lasting_hours`` is a mean: stay clear of the bar); the margin is
    this, or more with few spells (``lasting_z``)."""
    lasting_z: float = 2.5
    """With n spells the margin is at least 1 + this / sqrt(n): the mean of n spells of a memoryless length is off
    by about 1 / sqrt(n) of itself, so few spells must clear the bar by more (10 spells: 1.79, 40 and more: 1.4).
    The same margin (without the floor) discounts the spells that show a return paying, before a line bets on it."""
    agreeing_spells: float = 2.0
    """Where the window's spells pay no return either, the whole history rules a return out from this many
    spells (with the margin ``lasting_z`` sets for them and the window's spells together)."""
    return_wait_hours: float = 0.7
    """What a line's bet on a return allows for spot, gone when the line sends the run to on-demand, to come back:
    the return's spell counts only up to the work left (plus its own changeover) once on-demand has run this and
    ``return_seen_hours`` after its changeover (0.5 h dropped fewer of the late bets that greedy beat, 1 h more of
    those that won; docs/benchmarks.md)."""


DEFAULT_TUNING = Tuning()


def _spell_pays_switch(spell: float, spot_price: float | None, view: PolicyView, tuning: Tuning) -> bool:
    # Staying on on-demand for a spell L costs L * od; switching costs L * spot for L - d of progress,
    # then d more on on-demand and a changeover back: worth it when L * (od - spot) > k * d * od.
    price = spot_price if spot_price is not None else 0.0
    gain = view.on_demand_price - price
    return gain > 0 and spell * gain > tuning.switch_changeovers * view.changeover_hours * view.on_demand_price


def _pool_worth(pool: PoolView, view: PolicyView, tuning: Tuning, from_on_demand: bool) -> bool:
    if not pool.available_now:
        return False
    if from_on_demand and pool.up_hours is not None and pool.up_hours < tuning.return_seen_hours - HOURS_TOLERANCE:
        return False
    spell = pool.mean_up_hours
    if spell is None:
        return True
    if spell < tuning.min_spell_changeovers * view.changeover_hours:
        return False
    return not from_on_demand or _spell_pays_switch(_return_spell(pool, tuning), pool.spot_price, view, tuning)


def _return_measures(pool: PoolView, tuning: Tuning) -> list[tuple[float, float]]:
    """What a return from on-demand to this pool can expect of the spell, as (hours, spells behind them): the
    window's mean spell, and, where the whole known history holds enough spells, how long its spells went on after
    lasting half an hour (a return waits that long). Either says the pool has spells worth leaving on-demand for
    (the window sees a recent change that the whole history's mean hides, the history sees the heavy tail that a
    window of short spells misses)."""
    measures = [(pool.mean_up_hours, _window_spells(pool))] if pool.mean_up_hours else []
    if pool.lasting_hours is not None and (pool.lasting_spells or 0) >= tuning.lasting_spells:
        measures.append((pool.lasting_hours, float(pool.lasting_spells or 0)))
    return measures


def _return_spell(pool: PoolView, tuning: Tuning) -> float:
    """The longer of ``_return_measures``: what rule 3 takes a return for."""
    return max((hours for hours, _ in _return_measures(pool, tuning)), default=0.0)


def _history_spell(pool: PoolView) -> float | None:
    """The pool's mean spell over its whole known history, else over its 12-hour window."""
    return pool.long_mean_up_hours if pool.long_mean_up_hours is not None else pool.mean_up_hours


def _spot_price(pool: PoolView) -> float:
    return pool.spot_price if pool.spot_price is not None else 0.0  # not known: as free (the ranking's tie)


def _best_pool(view: PolicyView, tuning: Tuning, from_on_demand: bool) -> PoolView | None:
    usable = [p for p in view.pools if _pool_worth(p, view, tuning, from_on_demand)]
    if not usable:
        return None
    # A spell is worth at most what the work left can use: beyond, pools are alike.
    needed = _spell_room(view)

    def lasting(pool: PoolView) -> float:
        # The whole history's mean spell, not spot's age there now: between pools that differ less than that,
        # it is noise, and picking by noise only moves cost around.
        return min(_history_spell(pool) or 0.0, needed)

    cheapest = min(_spot_price(p) for p in usable)
    usable = [p for p in usable if _spot_price(p) == cheapest]
    longest = max(usable, key=lasting)
    # The pools in the order given (the user's preference, greedy's order), unless another one's spells are
    # clearly longer.
    return longest if lasting(longest) > tuning.rank_lead * lasting(usable[0]) else usable[0]


def _window_spells(pool: PoolView) -> float:
    """How many spells ``mean_up_hours`` is the mean over (the evidence): as the view says, else from the share
    of spot and the mean spell over the 12-hour window (0 when neither is known)."""
    if pool.mean_up_spells is not None:
        return float(pool.mean_up_spells) if pool.mean_up_hours else 0.0
    if pool.availability is None or not pool.mean_up_hours:
        return 0.0
    return HISTORY_SPAN_HOURS * pool.availability / pool.mean_up_hours


def _spells_seen(view: PolicyView) -> float:
    """The spells behind all pools' mean spells (the window's evidence)."""
    return sum(_window_spells(pool) for pool in view.pools)


def _lasting_seen(view: PolicyView) -> int | None:
    """The lasting spells of all pools' whole known history (None: some pool's history is not known)."""
    if any(p.lasting_spells is None for p in view.pools):
        return None
    return sum(p.lasting_spells or 0 for p in view.pools)


def _evidence_margin(spells: float, tuning: Tuning) -> float:
    """How far a mean over ``spells`` spells must clear a bar to be believed: the mean of n spells of a
    memoryless length is off by about 1 / sqrt(n) of itself (no spells: infinitely far)."""
    return 1.0 + tuning.lasting_z / math.sqrt(spells) if spells > 0 else math.inf


def _spell_room(view: PolicyView, progress_first: float = 0.0) -> float:
    """The most hours of a spot spell that help: the work left once ``progress_first`` more hours are done (on
    on-demand, before the spell begins), plus the spell's own changeover."""
    return view.work_left_hours + view.changeover_hours - progress_first


def _spell_within(mean: float, hours: float) -> float:
    """What a spell of memoryless length with this mean gives up to ``hours``: E[min(L, hours)] (a spell that
    never ends gives them all)."""
    if not (mean > 0 and hours > 0):
        return 0.0
    return hours if math.isinf(mean) else mean * -math.expm1(-hours / mean)


def _return_shown(pool: PoolView, view: PolicyView, tuning: Tuning) -> bool:
    """The pool's spells pay a return from on-demand by rule 3's measures, each believed only as far as the spells
    behind it go (divided by ``_evidence_margin``), and counted only up to the work a return could still do. A
    line is a bet on such returns; one spell of an hour in a window of rare spot is no ground for it, nor are long
    spells when little work is left: on-demand started now runs while spot comes back (``return_wait_hours``) and
    shows itself (``return_seen_hours``), and a spell beyond the rest of the work (and its changeover) saves
    nothing more."""
    shown = [hours / _evidence_margin(spells, tuning) for hours, spells in _return_measures(pool, tuning)]
    if not shown:
        return False
    before_return = max(0.0, tuning.return_wait_hours + tuning.return_seen_hours - view.changeover_hours)
    spell = _spell_within(max(shown), _spell_room(view, before_return))
    return _spell_pays_switch(spell, pool.spot_price, view, tuning)


def _history_rules_out_return(
    view: PolicyView, tuning: Tuning, min_spells: float, *, window_spells: float = 0.0
) -> bool:
    """Every pool's whole known history is given, holds ``min_spells`` spells that lasted half an hour or more,
    and in none of them did such a spell go on long enough (with a margin, wider for fewer spells) to pay a return
    from on-demand: the pools' spells are short for good, whatever a 12-hour window with a handful of spells in it
    says. ``window_spells``: spells of a window that says the same, counted in the margin's evidence."""
    spells = _lasting_seen(view)
    if spells is None or spells < min_spells:
        return False
    margin = max(tuning.lasting_margin, _evidence_margin(spells + window_spells, tuning))
    return not any(
        _spell_pays_switch(margin * p.lasting_hours, p.spot_price, view, tuning) for p in view.pools if p.lasting_hours
    )


def _no_return_expected(view: PolicyView, tuning: Tuning, remaining_time: float, settled: bool) -> bool:
    """The whole history rules a return out (``settled``: with ``lasting_spells`` spells), or no pool shows
    spells that pay a return from on-demand (``_return_shown``: rule 3's measure, believed only as far as the
    spells behind it go) and either the whole history agrees (from as few as ``agreeing_spells``; a window with
    no spell at all agrees too) or the window shows spells and is recent enough (little time left) or, where the
    whole history is thin, rich enough (many spells) to be believed for the rest of the run."""
    if settled:
        return True
    if any(_return_shown(p, view, tuning) for p in view.pools):
        return False
    window_spells = _spells_seen(view)
    if _history_rules_out_return(view, tuning, tuning.agreeing_spells, window_spells=window_spells):
        return True
    window_seen = any(p.mean_up_hours is not None for p in view.pools)
    lasting = _lasting_seen(view)
    thin = lasting is None or lasting < tuning.lasting_spells
    rich = thin and window_spells >= tuning.no_return_spells
    return window_seen and (remaining_time <= tuning.no_return_hours or rich)


def _waiting_pays(view: PolicyView, tuning: Tuning, slack: float) -> bool:
    """Waiting for spot from idle with the slack above the net saves more than the on-demand changeover the
    restart costs. Per hour of waiting in a pool with spot a share ``a`` of the time in spells of ``m`` hours:
    a * (od - spot) saved, less a / m spot starts that each cost a changeover at the on-demand price."""
    d, od = view.changeover_hours, view.on_demand_price
    best = 0.0
    for pool in view.pools:
        share, spell = pool.availability, _history_spell(pool)
        if share is None or not spell:
            continue
        best = max(best, share * (od - _spot_price(pool)) - share / spell * d * od)
    return best * (slack - 2 * d) > tuning.restart_changeovers * d * od


def deadline_aware(view: PolicyView, tuning: Tuning = DEFAULT_TUNING) -> Decision:
    """Our policy (the module docstring says why each rule is there)."""
    d = view.changeover_hours
    g = view.tick_hours
    t = view.hours_elapsed
    remaining_work = view.work_left_hours
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
    if slack < 2 * d - HOURS_TOLERANCE:
        return Decision(
            ON_DEMAND,
            None,
            f"on-demand to the end: {slack:.1f} h of slack cannot pay a return to spot",
            True,
            on_demand_finish,
        )

    settled = _history_rules_out_return(view, tuning, tuning.lasting_spells)  # two rules ask: once
    pool = _best_pool(view, tuning, on_demand_now)
    if pool is not None:
        return Decision(
            SPOT, pool.name, f"{'back to ' if on_demand_now else ''}spot in {pool.name}: {slack:.1f} h of slack"
        )
    if on_demand_now:
        if settled and _waiting_pays(view, tuning, slack):
            return Decision(WAIT, None, f"leave on-demand to wait for spot: {slack:.1f} h of slack, no return pays")
        # Otherwise stopping it to idle would only buy a changeover at the on-demand price when it restarts.
        return Decision(
            ON_DEMAND, None, f"stay on on-demand until spot: {slack:.1f} h of slack", False, on_demand_finish
        )

    initial = view.deadline_hours - view.work_hours
    reserve = 2 * d + min(tuning.reserve_changeovers * d, tuning.reserve_share * max(0.0, initial - 2 * d))
    # Under line_floor changeovers of slack, on-demand started now could never be left for spot (after its
    # changeover the slack is under the net): it costs the same started now or at the net, so wait there.
    no_line = (
        initial < tuning.greedy_below_changeovers * d
        or slack < tuning.line_floor_changeovers * d - HOURS_TOLERANCE
        or _no_return_expected(view, tuning, remaining_time, settled)
    )

    def line(x: float) -> float:
        if no_line:
            return 0.0
        share = max(0.0, view.deadline_hours - x) / view.deadline_hours
        power = 1.0 if view.work_hours >= tuning.tight_fraction * view.deadline_hours else tuning.pace_power
        return reserve + (initial - reserve) * share**power

    # Waiting one interval must leave the on-demand finish (S >= d) possible; with intervals no longer than
    # a changeover this is greedy's net (S >= 2d now), with longer ones it is stricter.
    floor = max(d, 2 * d - g) - HOURS_TOLERANCE
    if slack - g < max(line(t + g), floor):
        # Behind by the next decision (now the slack may still be a little above the line).
        behind = line(t + g) - (slack - g)
        reason = "on the net" if no_line else f"{behind:.2f} h behind the line by the next decision"
        return Decision(ON_DEMAND, None, f"on-demand: {reason}", False, on_demand_finish)
    if no_line:
        return Decision(WAIT, None, f"wait for spot: {slack:.1f} h of slack, no reserve pays here")
    return Decision(WAIT, None, f"wait for spot: {slack - line(t):.1f} h ahead of the line")


POLICIES: dict[str, Callable[[PolicyView], Decision]] = {
    "default": deadline_aware,
    "uniform-progress": uniform_progress,
    "greedy": greedy,
    "on-demand": on_demand,
}


def decide(view: PolicyView, policy: str = "default") -> Decision:
    """What to do now under ``policy`` (one of ``POLICIES``)."""
    try:
        rule = POLICIES[policy]
    except KeyError:
        raise ValueError(f"unknown policy {policy!r}: choose one of {', '.join(POLICIES)}") from None
    return rule(view)
