"""What a deadline policy sees at a decision point, and what it answers: plain frozen records."""

from __future__ import annotations

from dataclasses import dataclass

ON_DEMAND = "on-demand"
SPOT = "spot"
WAIT = "wait"
LASTED_HOURS = 0.5
"""``PoolView.lasting_hours`` is about spells that lasted this long (the policy's return rule waits as long)."""
HOURS_TOLERANCE = 1e-9
"""Hours closer than this compare as equal: sums of 1/6 h ticks drift by about 1e-15 a step, and the contract's
rules (issue 25) are exact arithmetic, so a slack of exactly 2d must not fall on either side of the net by chance."""


@dataclass(frozen=True)
class PoolView:
    """One spot pool as its history shows it up to now (``None``: not known)."""

    name: str
    available_now: bool | None
    availability: float | None = None
    """Share of the recent time spot was available in this pool."""
    mean_up_hours: float | None = None
    """Mean length of a spell of availability."""
    spot_price: float | None = None
    up_hours: float | None = None
    """How long spot has been there without a break: since it was first seen there (0 when it just came back or
    is not there now)."""
    long_mean_up_hours: float | None = None
    """Mean length of a spell of availability over all the pool's known history."""
    lasting_hours: float | None = None
    """Over all the pool's known history (far longer than ``availability``'s and ``mean_up_hours``'s window), how
    long a spell that had lasted ``LASTED_HOURS`` went on after that, on average: what a return to spot there can
    expect, told apart from a run of luck or a temporary drought."""
    lasting_spells: int | None = None
    """How many spells that lasted ``LASTED_HOURS`` and ended ``lasting_hours`` is the mean over (its evidence)."""
    mean_up_spells: int | None = None
    """How many spells ``mean_up_hours`` is the mean over (its evidence; None: as many as ``availability`` and the
    mean spell make in the 12-hour window a trace replay shows)."""


@dataclass(frozen=True)
class PolicyView:
    """The run at a decision point: hours since its start, progress, the deadline and the pools.

    ``current`` is ``None`` when no instance runs, ``"on-demand"``, or the spot pool's name.
    """

    hours_elapsed: float
    progress_hours: float
    work_hours: float
    deadline_hours: float
    changeover_hours: float
    on_demand_price: float
    current: str | None
    committed_on_demand: bool
    pools: tuple[PoolView, ...]
    changeover_left_hours: float = 0.0
    """Changeover the current instance still has to pay before it makes progress."""
    tick_hours: float = 0.0
    """Time until the next decision point (waiting one interval spends this much slack)."""

    @property
    def work_left_hours(self) -> float:
        """Hours of work still to do (derived: one expression for every policy)."""
        return self.work_hours - self.progress_hours


@dataclass(frozen=True)
class Decision:
    """``action`` is ``"spot"`` (in ``pool``), ``"on-demand"`` or ``"wait"``; ``reason`` is for people."""

    action: str
    pool: str | None
    reason: str
    commit: bool = False
    """Committed to on-demand to the end (set once the slack can no longer pay for a return to spot)."""
    predicted_finish_hours: float | None = None
