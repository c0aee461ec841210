"""Spot availability traces in the public format of the "Can't Be Late" traces, and what their past shows.

A trace is ``{"metadata": {"gap_seconds": G}, "data": [n0, n1, ...]}``: spot in the pool is available
during tick t when ``data[t] > 0``. The pool's name is the file name without ``.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from airflow_grid_resume.policy.view import LASTED_HOURS, PoolView

# What the policy is told about a pool's history: its last 12 hours (recent enough to see a flickering spell of
# capacity; a week hid it: docs/benchmarks.md).
HISTORY_HOURS = 12.0


class TraceError(ValueError):
    """A trace file or a set of traces that cannot be replayed; the message says what to fix."""


@dataclass(frozen=True)
class Trace:
    name: str
    gap_seconds: float
    data: tuple[int, ...]

    @property
    def tick_hours(self) -> float:
        return self.gap_seconds / 3600.0

    @cached_property
    def up(self) -> tuple[bool, ...]:
        return tuple(n > 0 for n in self.data)

    @cached_property
    def _counts(self) -> tuple[list[int], list[int]]:
        """Running counts (up ticks, spells begun) over data[0..i], for O(1) history questions."""
        ups, spells = [0], [0]
        previous = False
        for now in self.up:
            ups.append(ups[-1] + now)
            spells.append(spells[-1] + (now and not previous))
            previous = now
        return ups, spells

    @cached_property
    def _lasting(self) -> tuple[list[float], list[int]]:
        """Running (hours past ``LASTED_HOURS``, count) over the spells that lasted that long and ended by tick i
        (a spell ends at the first tick without spot: known at that tick)."""
        lasted = round(LASTED_HOURS / self.tick_hours)
        hours, count = [0.0], [0]
        run = 0
        for now in self.up:
            past, ended = hours[-1], count[-1]
            if not now and run >= lasted:
                past += (run - lasted) * self.tick_hours
                ended += 1
            run = run + 1 if now else 0
            hours.append(past)
            count.append(ended)
        return hours, count

    def pool_views(self, spot_price: float, window_ticks: int) -> list[PoolView]:
        """The view of this pool at every tick (cached: replays of many starts share them)."""
        cache = self.__dict__.setdefault("_views", {})
        key = (spot_price, window_ticks)
        if key not in cache:
            views = []
            run = 0
            for tick, now in enumerate(self.up):
                run = run + 1 if now else 0
                availability, mean_up = self.history(tick, window_ticks)
                up_ticks, begun = self._counts[0][tick + 1], self._counts[1][tick + 1]
                past, ended = self._lasting[0][tick + 1], self._lasting[1][tick + 1]
                views.append(
                    PoolView(
                        self.name,
                        now,
                        availability,
                        mean_up,
                        spot_price,
                        max(0, run - 1) * self.tick_hours,
                        up_ticks * self.tick_hours / begun if begun else None,
                        past / ended if ended else None,
                        ended,
                    )
                )
            cache[key] = views
        return cache[key]

    def history(self, tick: int, window_ticks: int) -> tuple[float | None, float | None]:
        """(availability, mean up-spell hours) over data[tick - window + 1 .. tick], known at ``tick``."""
        ups, spells = self._counts
        first = max(0, tick + 1 - window_ticks)
        seen = tick + 1 - first
        up = ups[tick + 1] - ups[first]
        begun = spells[tick + 1] - spells[first]
        if first > 0 and self.up[first] and self.up[first - 1]:
            begun += 1  # a spell that began before the window still counts once
        availability = up / seen if seen > 0 else None
        mean_up = up * self.tick_hours / begun if begun else None
        return availability, mean_up


def trace_from_json(name: str, document: object) -> Trace:
    if not isinstance(document, dict):
        raise TraceError(f"trace {name}: expected a JSON object with 'metadata' and 'data'")
    metadata, data = document.get("metadata"), document.get("data")
    gap = metadata.get("gap_seconds") if isinstance(metadata, dict) else None
    if not isinstance(gap, (int, float)) or isinstance(gap, bool) or gap <= 0:
        raise TraceError(f"trace {name}: metadata.gap_seconds must be a positive number of seconds")
    if not isinstance(data, list) or not data:
        raise TraceError(f"trace {name}: data must be a non-empty list of instance counts")
    for i, value in enumerate(data):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TraceError(f"trace {name}: data[{i}] is {value!r}, not a number")
    return Trace(name, float(gap), tuple(int(v > 0) for v in data))


def load_trace(path: str | Path) -> Trace:
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise TraceError(f"trace {path}: no such file") from None
    except (OSError, ValueError) as error:
        raise TraceError(f"trace {path}: cannot read it as JSON ({error})") from None
    return trace_from_json(path.name.removesuffix(".json"), document)


def check_aligned(traces: Sequence[Trace]) -> None:
    """Traces replayed together share their tick and their pool names are distinct."""
    if not traces:
        raise TraceError("give at least one trace")
    gaps = {t.gap_seconds for t in traces}
    if len(gaps) > 1:
        listing = ", ".join(f"{t.name}: {t.gap_seconds:g} s" for t in traces)
        raise TraceError(f"traces must share gap_seconds to be replayed together ({listing})")
    names = [t.name for t in traces]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise TraceError(f"two traces name the same pool: {', '.join(duplicates)}")
