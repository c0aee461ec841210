"""The baselines of issue 25, exactly as written there (after "Can't Be Late", Wu et al., NSDI '24, section 3).

With t the hours since the start, cp the progress so far, C = work - cp, R = deadline - t,
ep(x) = x * work / deadline and d the changeover, the rules are tried in order:

- ``uniform-progress``: (1) on spot and still available: stay; (2) committed to on-demand, or not on spot
  and R < C + 2d: on-demand to the end; (3) on on-demand and cp < ep(t + 2d): stay; (4) spot available in
  some pool: the first such pool, in the order given; (5) cp < ep(t): on-demand; (6) idle.
- ``greedy``: (1) as above; (2) as above; (3) spot available: the first such pool; (4) idle.
- ``on-demand``: on-demand from the first decision to the end.

The comparisons are those of exact arithmetic (``HOURS_TOLERANCE``): in floats, a slack of exactly 2d after a
few ticks of 1/6 h lands on either side of the net by rounding alone.
"""

from __future__ import annotations

from airflow_grid_resume.policy.view import HOURS_TOLERANCE, ON_DEMAND, SPOT, WAIT, Decision, PolicyView


def _on_spot(view: PolicyView) -> str | None:
    """The pool the run is on when that pool still has spot now (rule 1), else ``None``."""
    if view.current is None or view.current == ON_DEMAND:
        return None
    for pool in view.pools:
        if pool.name == view.current:
            return pool.name if pool.available_now else None
    return None


def _first_available(view: PolicyView) -> str | None:
    for pool in view.pools:
        if pool.available_now:
            return pool.name
    return None


def _safety_net(view: PolicyView) -> Decision | None:
    """Rule 2 of both baselines: on-demand to the end once the remaining time is short."""
    remaining_work = view.work_left_hours
    remaining_time = view.deadline_hours - view.hours_elapsed
    if view.committed_on_demand:
        return Decision(ON_DEMAND, None, "on-demand to the end: committed", commit=True)
    if remaining_time < remaining_work + 2 * view.changeover_hours - HOURS_TOLERANCE:
        return Decision(
            ON_DEMAND,
            None,
            f"on-demand to the end: {remaining_time:.1f} h left for {remaining_work:.1f} h of work",
            commit=True,
        )
    return None


def uniform_progress(view: PolicyView) -> Decision:
    """Uniform Progress: stay at or ahead of the straight line from no progress to the work at the deadline."""
    pool = _on_spot(view)
    if pool is not None:
        return Decision(SPOT, pool, f"stay on spot in {pool}")
    net = _safety_net(view)
    if net is not None:
        return net
    t, cp, d = view.hours_elapsed, view.progress_hours, view.changeover_hours

    def expected(x: float) -> float:
        return x * view.work_hours / view.deadline_hours

    if view.current == ON_DEMAND and cp < expected(t + 2 * d) - HOURS_TOLERANCE:
        return Decision(ON_DEMAND, None, f"stay on on-demand: {expected(t + 2 * d) - cp:.1f} h behind the line")
    pool = _first_available(view)
    if pool is not None:
        return Decision(SPOT, pool, f"spot in {pool}")
    if cp < expected(t) - HOURS_TOLERANCE:
        return Decision(ON_DEMAND, None, f"on-demand: {expected(t) - cp:.1f} h behind the line")
    return Decision(WAIT, None, f"wait: {cp - expected(t):.1f} h ahead of the line")


def greedy(view: PolicyView) -> Decision:
    """Greedy: spot whenever some pool has it, idle otherwise, on-demand to the end when time runs short."""
    pool = _on_spot(view)
    if pool is not None:
        return Decision(SPOT, pool, f"stay on spot in {pool}")
    net = _safety_net(view)
    if net is not None:
        return net
    pool = _first_available(view)
    if pool is not None:
        return Decision(SPOT, pool, f"spot in {pool}")
    return Decision(WAIT, None, "wait for spot")


def on_demand(view: PolicyView) -> Decision:
    """On-demand from the first decision to the end."""
    return Decision(ON_DEMAND, None, "on-demand to the end", commit=True)
