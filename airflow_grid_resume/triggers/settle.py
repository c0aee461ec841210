"""Hold a trigger's event until its deferral has settled in the scheduler.

Seen with Airflow 3.3.2's scheduler and LocalExecutor: when a trigger fires before the executor has
reported the deferring workload's exit, the scheduler reads that late "success" event as a queued
task whose process died, marks the try up for retry (the user's ``retry_delay``, not ours) and kills
the resumed workload. The gap was up to about 5 s on a loaded 2-core machine (CI, 2026-11-25).
Upstream: apache/airflow#71580 (Airflow 3.3.0, open: "Deferred task marked as failed if triggerer
moves state to running", the executor's late success report of the deferring workload); the same
race in Airflow 2 was apache/airflow#20460.
Waiting longer than that only delays events that come within seconds of deferring (capacity that
returns at once, a session that ends at once), so the triggers here never fire sooner than
``SETTLE_SECONDS`` after the operator deferred (``deferred_at``; None, as in direct tests: no wait).
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
