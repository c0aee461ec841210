"""Seeded synthetic spot traces, in the same format as the public ones, for tests and the benchmark.

Each pool alternates spells of availability and of none, with lengths drawn from exponential distributions
(a two-state Markov chain, the usual model of spot capacity); a pool may also have storms, stretches in
which its spells are much shorter (capacity crunches). ``POOL_SETS`` names the sets the benchmark uses.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from airflow_grid_resume.policy.traces import Trace

GAP_SECONDS = 600.0


@dataclass(frozen=True)
class PoolShape:
    name: str
    mean_up_hours: float
    mean_down_hours: float
    storm_share: float = 0.0
    """Share of the time spent in storms, when spells are ``storm_factor`` times shorter and gaps longer."""
    storm_factor: float = 5.0


def generate(shape: PoolShape, ticks: int, seed: int, gap_seconds: float = GAP_SECONDS) -> Trace:
    """A trace of ``ticks`` ticks for one pool; the same seed gives the same trace."""
    rng = random.Random(f"{seed}:{shape.name}")
    hours = gap_seconds / 3600.0
    data: list[int] = []
    up = rng.random() < shape.mean_up_hours / (shape.mean_up_hours + shape.mean_down_hours)
    storm_left = 0
    while len(data) < ticks:
        if storm_left <= 0 and shape.storm_share > 0 and rng.random() < shape.storm_share / 20:
            storm_left = int(rng.expovariate(1 / 12.0) / hours) + 1  # storms of about 12 h
        factor = shape.storm_factor if storm_left > 0 else 1.0
        mean = shape.mean_up_hours / factor if up else shape.mean_down_hours * factor
        spell = max(1, round(rng.expovariate(1 / mean) / hours))
        data.extend([1 if up else 0] * spell)
        storm_left -= spell
        up = not up
    return Trace(shape.name, gap_seconds, tuple(data[:ticks]))


def generate_set(shapes: tuple[PoolShape, ...], ticks: int, seed: int) -> list[Trace]:
    return [generate(shape, ticks, seed) for shape in shapes]


# Pool sets for the benchmark and the tests: names say what they stand for.
POOL_SETS: dict[str, tuple[PoolShape, ...]] = {
    # Spot is rare and its spells short: Uniform Progress pays more than on-demand here.
    "gen-rare": (PoolShape("rare-a", 0.5, 4.0),),
    # Spells about as long as a changeover or two.
    "gen-flicker": (PoolShape("flicker-a", 0.35, 0.5), PoolShape("flicker-b", 0.3, 0.6)),
    # Long calm periods and storms of short spells.
    "gen-bursty": (PoolShape("bursty-a", 3.0, 1.0, storm_share=0.3), PoolShape("bursty-b", 2.0, 2.0, storm_share=0.3)),
    # Four regions of differing quality, the first listed the worst.
    "gen-regions": (
        PoolShape("region-1", 0.4, 2.0),
        PoolShape("region-2", 1.0, 2.0),
        PoolShape("region-3", 3.0, 3.0),
        PoolShape("region-4", 6.0, 2.0, storm_share=0.2),
    ),
}
