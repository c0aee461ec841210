"""How long the command may run after a notice, planned from its own save (pure).

The final sync must upload the checkpoint the command writes on SIGTERM (about as large as the last
checkpoint uploaded), at the measured upload rate: that is what the command's time is planned from.
Bytes already pending when the notice arrives (files changed since the last sync) do not shrink it:
most are an older checkpoint that the newest one replaces, so the command's save comes first; a
backlog too large for the window is only warned about. The reclaim time comes from the notice,
checked against the agent's own observation: an instance whose clock is off would otherwise plan
from a wrong "now" (EC2 posts notices about two minutes ahead, so a notice that seems further away,
or already past, is read as "two minutes after it was first seen"). A shell that runs the trainer
and dies of the SIGTERM at once does not end the command's time: its group keeps it.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
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
    """The final-sync reserve, and warnings for a late notice, a checkpoint too large for the window, or
    a backlog of pending bytes that may not all be uploaded before the reclaim.

    The reserve covers the command's own save (``checkpoint_bytes``, or what is pending when no
    checkpoint was uploaded yet this session): older pending bytes never take time from that save."""
    save_bytes = checkpoint_bytes or pending_bytes
    reserve = floor if not bytes_per_s else max(floor, 1.5 * save_bytes / bytes_per_s + 2.0)
    warnings = []
    if seconds_left < min_grace + reserve:
        warnings.append(
            f"late notice: {max(seconds_left, 0):.0f} s left before the reclaim, and the final sync is expected to "
            f"need {reserve:.0f} s: work since the last checkpoint may be lost"
        )
    if reserve > NOTICE_WINDOW - min_grace:
        warnings.append(
            f"the final sync is expected to need {reserve:.0f} s ({save_bytes / 1e6:.0f} MB at "
            f"{(bytes_per_s or 0) / 1e6:.1f} MB/s), more than a spot notice leaves: checkpoint smaller, or sync "
            "more often (--sync-interval) so less is pending"
        )
    elif bytes_per_s and checkpoint_bytes and pending_bytes:
        everything = 1.5 * (pending_bytes + checkpoint_bytes) / bytes_per_s + 2.0
        if everything > max(seconds_left, 0) - min_grace:
            warnings.append(
                f"{pending_bytes / 1e6:.0f} MB changed since the last sync are still pending: the command keeps its "
                f"time to save, but uploading all of it with its new checkpoint would take about {everything:.0f} s "
                f"of the {max(seconds_left, 0):.0f} s left. Files the new checkpoint replaces cost nothing; others "
                "may miss the reclaim: sync more often (--sync-interval) or --exclude what is not needed to resume"
            )
    return SyncPlan(reserve, tuple(warnings))


def group_returncode(leader: int, rest: Sequence[int]) -> int:
    """The command's return code when its leader exited during a stop and the rest of its group went on.

    A leader killed by the SIGTERM (-15: a shell that does not exec the trainer) says nothing about the
    save: the processes it left (the trainer, a pipe's reader; ``rest``, in the order they exited) do.
    The last of them that failed gives the code, else 0. Any other leader exit is the command's own."""
    if leader != -signal.SIGTERM or not rest:
        return leader
    failed = [code for code in rest if code != 0]
    return failed[-1] if failed else 0


def group_kill_at(kill_at: float, leader_exited_at: float, min_grace: float) -> float:
    """When the rest of the command's group is killed after its leader exited during a stop.

    A shell that runs the trainer (``source env && python train.py``, ``python train.py && ...``,
    ``... | tee log``) dies of the SIGTERM at once while the trainer saves: the group keeps the
    time the notice left it (``kill_at``), never less than ``min_grace`` from the leader's exit."""
    return max(kill_at, leader_exited_at + min_grace)
