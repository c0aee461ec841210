"""Hold a trigger's event until its deferral has settled in the scheduler.

Seen with Airflow 3.3.2's scheduler and LocalExecutor: when a trigger fires before the executor has
reported the deferring workload's exit, the scheduler reads that late "success" event as a queued
task whose process died, marks the try up for retry (the user's ``retry_delay``, not ours) and kills
the resumed workload. The gap was up to about 5 s on a loaded 2-core machine (CI, 2026-11-25, SQLite);
on PostgreSQL 0.6-0.7 s, but 5.7 and 6.5 s for a run's first deferral (tests/system/test_real_airflow_ha.py
prints it). Waiting longer than that only delays events that come within seconds of deferring (capacity
that returns at once, a session that ends at once), so the triggers here never fire sooner than
``SETTLE_SECONDS`` after the operator deferred (``deferred_at``; None, as in direct tests: no wait).

Upstream, the stale defer-exit event race: apache/airflow#66374 and #67287 (the ``scheduled`` and ``queued``
states, fixed by #66431 and #68741), and #71580 and #72716 (the ``running`` state, open against 3.3.0 and 3.3.1;
PR #71579). Remove this hold once the scheduler ignores a defer-exit event for a task resumed since, in every
state. The same race in Airflow 2 was apache/airflow#20460.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from airflow.triggers.base import TriggerEvent

SETTLE_SECONDS = 8.0


def settle_delay(deferred_at: float | None, now: float, settle: float = SETTLE_SECONDS) -> float:
    """Seconds to wait before firing: none once ``settle`` seconds have passed since deferring."""
    if deferred_at is None:
        return 0.0
    return max(0.0, min(settle, deferred_at + settle - now))


async def settled(events: AsyncIterator[TriggerEvent], deferred_at: float | None) -> AsyncIterator[TriggerEvent]:
    """``events``, each held until the deferral that started the trigger has settled."""
    async for event in events:
        delay = settle_delay(deferred_at, time.time())
        if delay > 0:
            await asyncio.sleep(delay)
        yield event
