"""Where to interrupt: seeded, reproducible points in the reference's work.

Points are chosen in *work* seconds (the reference's run time after its start-up), cumulative
over the run. Session k is interrupted ``start-up + (point[k] - work done so far)`` seconds after
its command starts: a script that resumes is then interrupted at the chosen point of its work, and
one that starts over is interrupted again and again before it can finish, so the final,
uninterrupted session shows what was kept.
"""

from __future__ import annotations

import math
import random

EARLY = (0.05, 0.2)  # the first point of several: early, where a first slow checkpoint write may be under way
LATER = (0.3, 0.9)  # the others: one in each equal slice of this range, so they never bunch up
SINGLE = (0.3, 0.7)  # a lone point: far enough in that a start-over is measurable
# After SIGTERM an interrupted session's command gets half the reference's work still left, at least
# FLOOR_SECONDS (and its start-up time) and at most what the notice allows: a script that ignores SIGTERM is then killed
# before it can finish, whatever its length, and one that saves on SIGTERM exits long before.
LEFT_SHARE = 0.5
FLOOR_SECONDS = 3.0
MIN_STEP_SHARE = 0.03  # with progress targets, each session does at least this share of the steps


def plan_points(seed: int, count: int, work_seconds: float) -> list[float]:
    """``count`` cumulative work points in (0, work_seconds), increasing; the same for the same seed."""
    if count <= 0 or work_seconds <= 0:
        return []
    rng = random.Random(seed)
    if count == 1:
        return [rng.uniform(*SINGLE) * work_seconds]
    fractions = [rng.uniform(*EARLY)]
    low, high = LATER
    width = (high - low) / (count - 1)
    fractions += [rng.uniform(low + i * width, low + (i + 1) * width) for i in range(count - 1)]
    return [f * work_seconds for f in fractions]


def next_offset(
    point: float, done: float, startup: float, min_work: float, work: float | None = None, latency: float = 0.0
) -> float:
    """Seconds after the next session's command starts at which to post its notice.

    ``done`` is the work actually done before the previous interruptions (their SIGTERMs land a
    little after the notice is posted), so the points stay where they were chosen; each session
    gets at least ``min_work`` seconds of work. With the whole ``work`` known, the notice is also
    posted early enough (``latency``: until the agent sees it) that a resuming script has not
    already finished its remaining work, so timing noise does not swallow a planned interruption."""
    wanted = point - done
    if work is not None:
        wanted = min(wanted, 0.9 * (work - done) - latency)
    return max(0.0, startup) + max(min_work, wanted)


STARTUP_SHARE = 0.75  # a first output line later than this share of the run says nothing about start-up


def startup_seconds(first_output_after: float | None, duration: float) -> float:
    """The reference's start-up: the time to its first line of output, unless that comes so late
    (past three quarters of the run: a script that prints only at the end) that it says nothing about
    start-up; then none is assumed. Small verify runs of torch scripts spend half their time importing."""
    if first_output_after is None or first_output_after < 0 or first_output_after > STARTUP_SHARE * duration:
        return 0.0
    return first_output_after


def allowed_after_sigterm(work_left: float, most: float, startup: float = 0.0) -> float:
    """Seconds the command gets after SIGTERM when about ``work_left`` seconds of work remain; ``most``
    is what the user's notice window leaves after the sync reserve. Never less than the script's own
    start-up: what took that long to set up (torch, a trainer, data-loader workers) takes a while to
    save and tear down too, more so on a loaded machine."""
    return min(most, max(FLOOR_SECONDS, startup, LEFT_SHARE * work_left))


def progress_span(reference: object) -> tuple[float, float] | None:
    """The reference's first and last progress numbers, when it printed enough of them to aim at."""
    values = list(getattr(reference, "progress_values", []) or [])
    if len(values) < 4 or max(values) <= values[0]:
        return None
    return values[0], max(values)


NOTICE_MARGIN_SECONDS = 1.5  # of the reference's work left after a progress target, when the run has that much


def progress_target(
    fraction: float, span: tuple[float, float], reached: float | None, margin_steps: float = 0.0
) -> float:
    """The progress number at which to post a notice: ``fraction`` of the way through the reference's
    progress, past what the previous sessions reached, and short of the end by ``margin_steps`` where
    the run allows it: the notice reaches the command a moment after the target step is printed (the
    agent polls its metadata service; a busy machine adds seconds), and a target close to the end of a
    short run would let the script finish first."""
    first, last = span
    target: float = round(first + fraction * (last - first))
    if reached is not None:
        target = max(target, reached + max(1, round(MIN_STEP_SHARE * (last - first))))
    target = min(target, last - math.ceil(margin_steps))
    return float(min(max(target, first + 1, (reached or first) + 1), last - 1))
