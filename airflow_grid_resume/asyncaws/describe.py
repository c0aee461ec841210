"""Batched DescribeInstances: the run triggers of one event loop share one call per interval.

EC2's Describe* budget is per account (100 burst, 20 per second); 500 triggers describing their
own instance every 30 s would spend it for nothing. Requests that arrive within ``window`` seconds
are answered by one DescribeInstances for all their ids (100 per call: parsing 500 instances at once
held the event loop for about 100 ms). Throttling, 5xx and lost answers are retried with backoff; a
batch that still fails answers ``Unknown`` to its watches only.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from airflow_grid_resume.hooks.base import a_call_with_retries


class Unknown:
    """DescribeInstances could not be answered this time (throttled, 5xx, no answer, after retries):
    no evidence either way. A watch waits for a real answer; it never reads this as "gone"."""

    def __init__(self, error: str) -> None:
        self.error = error

    def __repr__(self) -> str:
        return f"Unknown({self.error!r})"


InstanceView = dict | Unknown | None  # the instance; no answer; or not listed by EC2 (unknown id)


class DescribeBatcher:
    def __init__(self, window: float = 0.5, max_ids: int = 100) -> None:
        self.window = window
        self.max_ids = max_ids
        self._pending: dict[str, list[asyncio.Future]] = {}
        self._flush: asyncio.Task | None = None
        self.calls = 0

    async def state(self, client: Any, instance_id: str) -> InstanceView:
        """The instance as DescribeInstances shows it; None if EC2 does not list it; ``Unknown`` if EC2
        could not be asked (each batch's failure stays with that batch's answers, never an exception)."""
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending.setdefault(instance_id, []).append(future)
        if self._flush is None or self._flush.done():
            self._flush = asyncio.create_task(self._run(client))
        return await future

    async def _run(self, client: Any) -> None:
        # Requests that arrive while a call is in flight find this task not done and start none:
        # serve them in the next round, or a watch would wait for its answer until some other
        # trigger happened to ask (forever for the last one left).
        while self._pending:
            await asyncio.sleep(self.window)
            pending, self._pending = self._pending, {}
            await self._describe(client, pending)

    async def _describe(self, client: Any, pending: dict[str, list[asyncio.Future]]) -> None:
        ids = list(pending)
        for start in range(0, len(ids), self.max_ids):
            batch = ids[start : start + self.max_ids]
            answer: dict[str, InstanceView]
            try:
                # A filter, not InstanceIds: one id EC2 does not know yet (eventual consistency) would fail
                # the whole call; a filter leaves it out.
                filters = [{"Name": "instance-id", "Values": batch}]

                async def call(filters: list = filters) -> dict:
                    self.calls += 1
                    return await client.describe_instances(Filters=filters)

                response = await a_call_with_retries(call)
                found = {i["InstanceId"]: i for r in response["Reservations"] for i in r["Instances"]}
                answer = {i: found.get(i) for i in batch}
            except Exception as exc:  # this batch only: its watches learn nothing this round
                unknown = Unknown(f"{type(exc).__name__}: {exc}")
                answer = dict.fromkeys(batch, unknown)
            for instance_id in batch:
                for future in pending[instance_id]:
                    if not future.done():
                        future.set_result(answer[instance_id])


_BATCHERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, DescribeBatcher]] = (
    weakref.WeakKeyDictionary()
)


def describe_batcher(aws_conn_id: str | None, region: str | None) -> DescribeBatcher:
    batchers = _BATCHERS.setdefault(asyncio.get_running_loop(), {})
    return batchers.setdefault((aws_conn_id, region), DescribeBatcher())
