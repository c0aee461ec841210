"""How long the command may run after a notice, planned from what is pending (pure).

The final sync needs the bytes still to upload when the notice arrives plus the checkpoint the
command writes on SIGTERM (about as large as the last checkpoint uploaded), at the measured upload
rate. The reclaim time comes from the notice, checked against the agent's own observation: an
instance whose clock is off would otherwise plan from a wrong "now" (EC2 posts notices about two
minutes ahead, so a notice that seems further away, or already past, is read as "two minutes after
it was first seen").
"""

from __future__ import annotations

from dataclasses import dataclass

NOTICE_WINDOW = 120.0  # EC2 posts a spot notice about two minutes before the reclaim


def seconds_until_reclaim(notice_time: float, now: float, seen_ago: float, window: float = NOTICE_WINDOW) -> float:
    """Seconds left before the reclaim. ``notice_time`` and ``now`` are wall clock (the notice's time
    and the instance's clock, which can be skewed); ``seen_ago`` is how long ago the agent first saw
    the notice, on its monotonic clock."""
    by_notice = notice_time - now
    if 0 < by_notice <= window + 5:
        return by_notice
    return window - seen_ago  # skewed clock (ahead: the time seems past; behind: it seems far away)


@dataclass(frozen=True)
class SyncPlan:
    reserve: float  # seconds kept for the final sync before the reclaim
    warnings: tuple[str, ...] = ()


def plan_final_sync(
    *,
    pending_bytes: int,
    checkpoint_bytes: int,
    bytes_per_s: float | None,
    floor: float,
    seconds_left: float,
    min_grace: float,
) -> SyncPlan:
    """The final-sync reserve, and warnings for a late notice or a checkpoint too large for the window."""
    expected = pending_bytes + checkpoint_bytes
    reserve = floor if not bytes_per_s else max(floor, 1.5 * expected / bytes_per_s + 2.0)
    warnings = []
    if seconds_left < min_grace + reserve:
        warnings.append(
            f"late notice: {max(seconds_left, 0):.0f} s left before the reclaim, and the final sync is expected to "
            f"need {reserve:.0f} s: work since the last checkpoint may be lost"
        )
    if reserve > NOTICE_WINDOW - min_grace:
        warnings.append(
            f"the final sync is expected to need {reserve:.0f} s ({expected / 1e6:.0f} MB at "
            f"{(bytes_per_s or 0) / 1e6:.1f} MB/s), more than a spot notice leaves: checkpoint smaller, or sync "
            "more often (--sync-interval) so less is pending"
        )
    return SyncPlan(reserve, tuple(warnings))
