"""The run watch's read schedule against simulated agents: reads per chunk and how late they come."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from airflow_grid_resume.watch.cadence import ChunkSchedule


def simulate(
    period: float,
    *,
    ticks: Callable[[int], bool] = lambda k: True,
    phase: float = 1.234,
    jitter: tuple[float, float] = (0.02, 0.12),
    seconds: float = 600.0,
    seed: int = 1,
    schedule: ChunkSchedule | None = None,
    shift: tuple[float, float] = (0.0, 0.0),
    lateness: float = 0.0,
    duration: float = 0.0,
) -> tuple[int, list[float]]:
    """An agent shipping on ticks ``phase + k * period`` (when ``ticks(k)``), each upload landing after
    ``jitter``; a watch reading on the schedule, woken up to ``lateness`` late (a busy event loop),
    each read taking ``duration``. Returns the reads made and each chunk's delay."""
    rng = random.Random(seed)
    landed = [phase + k * period + rng.uniform(*jitter) for k in range(int(seconds / period)) if ticks(k)]
    landed = [t + shift[1] if t >= shift[0] else t for t in landed]
    plan = schedule or ChunkSchedule(period=period, poll=2.0, started=0.0)
    return read_on_schedule(plan, landed, seconds, rng=rng, lateness=lateness, duration=duration)


def read_on_schedule(
    plan: ChunkSchedule,
    landed: list[float],
    seconds: float,
    *,
    rng: random.Random | None = None,
    lateness: float = 0.0,
    duration: float = 0.0,
) -> tuple[int, list[float]]:
    """A watch reading on ``plan`` chunks that land at the times ``landed``, until ``seconds``."""
    rng = rng or random.Random(0)
    reads, seen, delays, now = 0, 0, [], 0.0
    while True:
        next_read = plan.next_read()
        assert plan.last_read is None or next_read > plan.last_read, "the schedule must move forward"
        now = max(now, next_read) + rng.uniform(0.0, lateness)
        if now > seconds:
            return reads, delays
        reads += 1
        new = [t for t in landed[seen:] if t <= now + duration]
        if new:
            delays += [now + duration - t for t in new]
            seen += len(new)
            plan.hit(now + duration, started=now)
        else:
            plan.miss(now)


def p99(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.99)]


@pytest.mark.parametrize("period", [2.0, 3.0, 4.0])
def test_flowing_output_is_read_once_per_chunk_just_after_it_lands(period: float) -> None:
    reads, delays = simulate(period)
    chunks = len(delays)
    assert reads <= chunks * 1.12 + 3, f"{reads} reads for {chunks} chunks"
    assert p99(delays) < 0.8 and max(delays) < period


def test_a_busy_event_loop_and_slow_reads_do_not_break_the_lock() -> None:
    reads, delays = simulate(3.0, lateness=0.15, duration=0.08, seconds=900.0)
    assert reads <= len(delays) * 1.2 + 3, f"{reads} reads for {len(delays)} chunks"
    assert p99(delays) < 1.0


def test_sparse_output_costs_one_read_per_tick_and_stays_prompt() -> None:
    reads, delays = simulate(3.0, ticks=lambda k: k % 3 == 0)
    assert reads <= 600 / 3.0 * 1.5  # one per tick, one more look when output stops
    assert p99(delays) < 0.9


def test_a_quiet_run_is_read_every_quiet_poll_and_output_after_it_is_found_within_one() -> None:
    # 60 s of output, 240 s of silence, 60 s of output.
    reads, delays = simulate(3.0, ticks=lambda k: k < 20 or k >= 100, seconds=360.0)
    assert max(delays) <= 10.0 + 0.5
    silent_reads = reads - 20 - 40
    assert silent_reads <= 240 / 10.0 + 60 / 3.0 + 4, reads  # the first 60 s of silence are still read per tick


def test_a_phase_shift_is_relearned() -> None:
    """The agent's grid moves (a stall, a restarted shipper): chunks land 1.7 s earlier from then on."""
    _, delays = simulate(3.0, phase=0.4, ticks=lambda k: True, seconds=1200.0, shift=(120.0, -1.7))
    assert p99(delays[-100:]) < 0.8


def test_a_new_period_from_the_heartbeat_resets_the_phase() -> None:
    plan = ChunkSchedule(period=2.0, poll=2.0, started=0.0)
    simulate(2.0, seconds=60.0, schedule=plan)
    plan.set_period(3.0)
    assert plan.lo is None and plan.period == 3.0
    plan.set_period(3.0)
    assert plan.period == 3.0


def test_late_upload_is_caught_by_one_more_look() -> None:
    """Chunks usually land early in their tick; one lands half a second late. The one more look finds it."""
    late = {40}
    rng = random.Random(3)
    landed = [0.5 + k * 3.0 + (0.5 if k in late else rng.uniform(0.0, 0.05)) for k in range(80)]
    _, delays = read_on_schedule(ChunkSchedule(period=3.0, poll=2.0, started=0.0), landed, 240.0)
    assert max(delays[5:]) < 1.0, max(delays[5:])  # after the first few chunks (learning the phase)


def test_a_run_that_never_prints_is_read_every_quiet_poll_after_a_minute() -> None:
    reads, delays = simulate(3.0, ticks=lambda k: False, seconds=600.0)
    assert not delays
    assert reads <= 60 / 2.0 + 540 / 10.0 + 2
